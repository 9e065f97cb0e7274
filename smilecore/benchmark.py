"""`smile benchmark`: GVS and the SMILE variants trained and evaluated on one fixed case split,
the downstream augmentation experiment, figures, repeats over seeds, one report.

What is compared (VARIANTS, data): every variant uses the same networks, data, step budget and
seed; GVS gets all of it in phase 1 (it has no other phase), so no method trains longer than
another. SMILE-sup+gated (the shipped default's design) starts from SMILE-sup's model of the same
seed (STARTS_FROM) and trains its gated G as many steps again in phase 1, S and R kept;
SMILE-sup+gated+2.5D does the same with a G that also sees the slices above and below (its
known-truth lesions are pasted as volumes; the centre slices, and so the figures of the 2D
variants, are the same). SMILE-sup+median and SMILE-sup+gated+median are SMILE-sup and
SMILE-sup+gated with every case scaled by its brain's median (`--normalisation median`) instead of
the paper's 99.5th percentile; they are evaluated on the same cases, lesions and slices scaled that
way, against a Spred trained on that scaling. The split is one case-level split (`split_seed`), the same for every variant and seed;
seeds change the initialisation, the data order and which cases lose their labels.

Metrics (see evaluate.py and metrics.py for every choice): identity and healthiness on the
abnormal slices of the test cases, against one Spred per split (trained once and cached); Dice
of S on the test cases; errors inside lesions of other cases (test and training) transplanted
into the test cases' normal slices (healthy truth known), next to leaving the lesion untouched
and filling it with the mean of the surrounding tissue; the ablation measures (change away from
the lesion, the healthy-brain test) as evaluate.py computes them.

Augmentation (the paper's Table 3): a plain segmentor (Spred's settings and step budget) is
trained on the real labelled training slices alone, then with pseudo-normal slices added
(G applied to every abnormal training slice; label: empty), with pseudo-abnormal slices added
(as many; R paints the lesion mask of an abnormal slice of another training case into G of a
normal training slice, at the same position, inside the brain; label: that mask), and with
both. The generator and reconstructor are those of `augment_from` trained with the same seed.
Dice on the test cases.

Figures: for each variant (first seed) rows of randomly chosen abnormal test slices (lesion of
at least `min_figure_lesion` pixels): abnormal | pseudo-normal | pseudo-abnormal, the last
painting the lesion of the next row's slice with R; and rows of transplanted test lesions:
input | pseudo-normal | healthy truth | mean fill.

Finished runs are reused when the benchmark is run again with the same settings (the run
folder holds its model), so an interrupted benchmark continues where it stopped.

The report (the figures summarised over seeds, benchmark.md) is written by benchmark_report.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .benchmark_report import markdown, summarise
from .cases import find_cases, split_cases
from .dataset import CachedCase, _boxes, cache_case
from .evaluate import (SpredSettings, evaluate, known_truth_figure, run_net, segmentation_dice, train_segmentor,
                       slices_for_G, train_spred, transplant_set)
from .files import write_text_atomic
from .modelfile import load_model
from .overview import grid_figure
from .train import MODEL_NAME, Trainer, TrainConfig

# name -> TrainConfig fields that make the variant (everything else is shared)
VARIANTS = {
    "GVS": {"variant": "gvs", "labeled_fraction": 1.0, "transplant_weight": 0.0},
    "SMILE-sup": {"labeled_fraction": 1.0, "transplant_weight": 0.0},
    "SMILE-75": {"labeled_fraction": 0.75, "transplant_weight": 0.0},
    "SMILE-50": {"labeled_fraction": 0.5, "transplant_weight": 0.0},
    # beyond the paper (issue 7's ablation): SMILE-sup plus the paired lesion-removal term
    "SMILE-sup+paired": {"labeled_fraction": 1.0, "transplant_weight": 1.0},
    # beyond the paper (issue 14's ablation, the shipped default's design): a gated G started from
    # the S of SMILE-sup (same seed) and trained in phase 1 against it, S and R kept as they are
    "SMILE-sup+gated": {"variant": "gvs", "generator": "gated", "freeze": "S", "gate_grow": 2, "gate_floor": 0.8,
                        "transplant_weight": 1.0, "transplant_lesion_weight": 1.0},
    # the same, G seeing the slices above and below (2.5D, --context-slices 1): measured on its own
    "SMILE-sup+gated+2.5D": {"variant": "gvs", "generator": "gated", "freeze": "S", "gate_grow": 2,
                             "gate_floor": 0.8, "transplant_weight": 1.0, "transplant_lesion_weight": 1.0,
                             "context_slices": 1},
}
# the normalisation that a tumour hardly moves (--normalisation median) against the paper's V99.5
# scaling: SMILE-sup and its gated G again, every case scaled by its brain's median
VARIANTS.update({f"{name}+median": {**VARIANTS[name], "normalisation": "median"}
                 for name in ("SMILE-sup", "SMILE-sup+gated")})
# variant -> the variant whose model (same seed) it starts from (TrainConfig.init_from)
STARTS_FROM = {"SMILE-sup+gated": "SMILE-sup", "SMILE-sup+gated+2.5D": "SMILE-sup",
               "SMILE-sup+gated+median": "SMILE-sup+median"}


@dataclass
class BenchmarkSettings:
    data_dir: str
    out_dir: str
    variants: tuple = ("GVS", "SMILE-sup", "SMILE-75", "SMILE-50", "SMILE-sup+gated", "SMILE-sup+gated+2.5D",
                       "SMILE-sup+median", "SMILE-sup+gated+median")
    seeds: tuple = (0, 1)
    split_seed: int = 0
    split: tuple = (0.7, 0.1, 0.2)
    val_cases: tuple = ()
    test_cases: tuple = ()
    modality: str = "t2"
    # shared training settings (TrainConfig fields)
    epochs: tuple = (2, 1, 1, 1)
    steps_per_epoch: int = 60
    batch_size: int = 8
    lr: float = 1e-3
    base: int = 8
    depth: int = 4
    norm: str = "batch"
    crop: int | None = 96
    device: str = "auto"
    # evaluation
    spred: SpredSettings = field(default_factory=SpredSettings)
    transplants: int = 32
    augment: bool = True
    augment_from: str = "SMILE-sup"
    figure_rows: int = 4
    min_figure_lesion: int = 100
    quiet: bool = False

    def check(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
        missing = [f"{v} starts from {STARTS_FROM[v]}" for v in self.variants
                   if v in STARTS_FROM and STARTS_FROM[v] not in self.variants]
        if missing:
            raise ValueError(f"{'; '.join(missing)}, which is not among the variants")
        if not self.seeds:
            raise ValueError("at least one seed")
        if self.augment and self.augment_from not in self.variants:
            raise ValueError(f"the augmentation experiment uses {self.augment_from}, which is not among the variants")
        return self


QUICK = dict(epochs=(1, 1, 1, 1), steps_per_epoch=4, batch_size=4, base=4, depth=2, crop=None,
             spred=SpredSettings(base=4, depth=2, steps=10, batch_size=4, crop=None), transplants=4,
             figure_rows=2, min_figure_lesion=10)


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "gpu": None}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def normalisation_of(variant: str) -> str:
    return VARIANTS[variant].get("normalisation", "clip-percentile")


@dataclass
class ScaledCases:
    """The split's cases as one normalisation scales them, with the Spred and the known-truth set
    on that scale (the same lesions and slices for every normalisation: a slice's brain, and so
    where a lesion is kept, does not depend on the scaling)."""
    test: list
    train: list
    transplants: object
    spred: object = None


class Benchmark:
    def __init__(self, settings: BenchmarkSettings, log=print):
        self.s = settings.check()
        self.out = Path(settings.out_dir)
        self.cache = self.out / "cache"
        self.log = log
        self.timings: dict[str, float] = {}

    def _bar(self, desc: str):
        """A progress callback (done, total) drawing a tqdm bar, or None when quiet."""
        from .events import progress_callback
        return None if self.s.quiet else progress_callback(desc)

    # ---- data ----------------------------------------------------------------------------
    def prepare(self):
        s = self.s
        cases = find_cases(s.data_dir, require=True)
        self.split = split_cases(cases, s.split_seed, s.split, 1.0, s.val_cases, s.test_cases)
        if not self.split.test:
            raise ValueError(f"data folder {s.data_dir}: the split leaves no test case")
        self.data = {}
        for norm in dict.fromkeys(normalisation_of(v) for v in s.variants):
            test = [cache_case(c, self.cache, s.modality, normalisation=norm) for c in self.split.test]
            train = [cache_case(c, self.cache, s.modality, normalisation=norm) for c in self.split.train if c.labeled]
            # lesions of other cases (test and training) pasted into the test cases' normal slices (as lesion
            # volumes: a 2.5D G sees them in the neighbouring slices too; a 2D G, the same centre slices)
            transplants = transplant_set(test, s.transplants, s.split_seed, min_lesion=min(50, s.min_figure_lesion),
                                         donors=test + train, pairing="other",
                                         context=max(VARIANTS[v].get("context_slices", 0) for v in s.variants)
                                         ) if s.transplants else None
            self.data[norm] = ScaledCases(test, train, transplants)

    def train_config(self, variant: str, seed: int) -> TrainConfig:
        s = self.s
        phases = 1 if VARIANTS[variant].get("variant") == "gvs" else 4
        epochs = (sum(s.epochs),) if phases == 1 else tuple(s.epochs)  # same step budget for GVS
        start = STARTS_FROM.get(variant)
        init_from = str(self._run_dir(start, seed).resolve() / MODEL_NAME) if start else None
        return TrainConfig(data_dir=s.data_dir, out_dir=str(self._run_dir(variant, seed)), init_from=init_from,
                           modality=s.modality, seed=seed, split=(1, 0, 0),
                           val_cases=tuple(c.case_id for c in self.split.val),
                           test_cases=tuple(c.case_id for c in self.split.test),
                           epochs=epochs, steps_per_epoch=s.steps_per_epoch, batch_size=s.batch_size,
                           lr=s.lr, base=s.base, depth=s.depth, norm=s.norm, crop=s.crop,
                           cache_dir=str(self.cache), device=s.device, **VARIANTS[variant])

    def _run_dir(self, variant: str, seed: int) -> Path:
        return self.out / "runs" / f"{variant}-seed{seed}"

    def train_variant(self, variant: str, seed: int) -> tuple[Path, float]:
        """Train (or reuse, or resume) one run; returns the model path and its training seconds
        (the sum of its epochs' wall times, so a resumed run counts each epoch once; a run that
        starts from another variant's model counts its own training only)."""
        from .events import EventLog, ProgressBar, read_events
        if variant in STARTS_FROM:
            start_model, _ = self.train_variant(STARTS_FROM[variant], seed)
        cfg = self.train_config(variant, seed)
        run = Path(cfg.out_dir)
        model, stamp = run / MODEL_NAME, run / "benchmark-config.json"
        wanted = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
        same = stamp.is_file() and _same_training(json.loads(stamp.read_text()), cfg)
        if variant in STARTS_FROM and model.is_file():   # the model it started from was trained again
            same = same and model.stat().st_mtime_ns >= start_model.stat().st_mtime_ns
        if not (model.is_file() and same):
            resume = same and (run / "checkpoint.pt").is_file()
            if not resume and run.exists():
                for f in run.glob("*"):
                    if f.is_file():
                        f.unlink()
            run.mkdir(parents=True, exist_ok=True)
            stamp.write_text(wanted)
            events = EventLog(run / "events.jsonl", None if self.s.quiet else ProgressBar())
            try:
                model = Trainer(cfg, events).run(resume=resume)
            finally:
                events.close()
        epochs = {(e["phase"], e["epoch"]): e["seconds"] for e in read_events(run / "events.jsonl")
                  if e["event"] == "epoch"}
        return model, float(sum(epochs.values()))

    # ---- augmentation ------------------------------------------------------------------------
    def augmentation_sets(self, model, seed: int) -> dict[str, CachedCase]:
        """Pseudo-normal and pseudo-abnormal training slices as in-memory 'cases'."""
        G, R = model.nets["G"].eval(), model.nets["R"].eval()
        rng = np.random.default_rng([seed, 3])
        train = self.data[model.normalisation].train
        abnormal = [(c, i) for c in train for i in np.nonzero(c.abnormal)[0]]
        normal = [(c, i) for c in train for i in np.nonzero(~c.abnormal)[0]]
        if not abnormal or not normal:
            raise ValueError("the augmentation experiment needs training slices with and without lesions")
        ab_images = np.stack([np.asarray(c.image[i], np.float32) for c, i in abnormal])
        pn = run_net(G, slices_for_G(G, abnormal))[:, 0]
        pn = np.where(ab_images > 0, np.clip(pn, 0, 1), 0)   # background stays background
        n_images, masks, picks = [], [], []
        for _ in range(50 * len(abnormal)):            # a painted lesion must land inside the brain
            if len(n_images) == len(abnormal):
                break
            c_n, i_n = normal[rng.integers(len(normal))]
            c_d, i_d = abnormal[rng.integers(len(abnormal))]
            if c_d.case_id == c_n.case_id and len(train) > 1:
                continue
            healthy = np.asarray(c_n.image[i_n], np.float32)
            mask = (np.asarray(c_d.mask[i_d]) > 0) & (healthy > 0)
            if mask.any():
                n_images.append(healthy)
                masks.append(mask)
                picks.append((c_n, i_n))
        if not n_images:
            raise ValueError("no lesion mask of a training case falls inside the brain of another's normal slice")
        n_images, masks = np.stack(n_images), np.stack(masks)
        pab = run_net(R, run_net(G, slices_for_G(G, picks))[:, 0], extra=masks)[:, 0]
        pab = np.where(n_images > 0, np.clip(pab, 0, 1), 0)
        return {"pseudo-normal": _memory_case("pseudo-normal", pn, np.zeros(pn.shape, np.uint8)),
                "pseudo-abnormal": _memory_case("pseudo-abnormal", pab, masks.astype(np.uint8))}

    def augmentation(self, model_path: Path, seed: int) -> dict[str, float]:
        """Dice on the test cases per training set; kept beside the model (keyed by the
        model file's time stamp and the segmentor settings), so a rerun reuses it."""
        s = self.s
        data = self.data[normalisation_of(s.augment_from)]
        saved = model_path.parent / "augmentation.json"
        key = json.dumps({"model_mtime_ns": model_path.stat().st_mtime_ns, "seed": seed,
                          "test": [c.case_id for c in data.test], **dataclasses.asdict(s.spred)}, sort_keys=True)
        if saved.is_file():
            cached = json.loads(saved.read_text())
            if cached.get("key") == key:
                return cached["dice"]
        extra = self.augmentation_sets(load_model(model_path), seed)
        sets = {"real": [], "real+pseudo-normal": ["pseudo-normal"], "real+pseudo-abnormal": ["pseudo-abnormal"],
                "real+both": ["pseudo-normal", "pseudo-abnormal"]}
        settings = dataclasses.replace(s.spred, seed=seed)
        out = {}
        for name, added in sets.items():
            bar = self._bar(f"segmentor on {name}")
            net = (train_spred(data.train, settings, self.cache, bar) if not added
                   else train_segmentor(data.train + [extra[a] for a in added], settings, bar))
            out[name] = segmentation_dice(net, data.test)[0]
        write_text_atomic(saved, json.dumps({"key": key, "dice": out}))
        return out

    # ---- figures ----------------------------------------------------------------------------
    def figures(self, variant: str, model_path: Path) -> dict[str, str]:
        s = self.s
        model = load_model(model_path)
        G, R = model.nets["G"].eval(), model.nets["R"].eval()
        data = self.data[model.normalisation]
        rng = np.random.default_rng(s.split_seed)
        cands = [(c, i) for c in data.test for i in np.nonzero(c.abnormal)[0]
                 if (np.asarray(c.mask[i]) > 0).sum() >= s.min_figure_lesion]
        written = {}
        if cands:
            rows = [cands[k] for k in sorted(rng.choice(len(cands), min(s.figure_rows, len(cands)), replace=False))]
            images = np.stack([np.asarray(c.image[i], np.float32) for c, i in rows])
            masks = np.stack([np.asarray(c.mask[i]) > 0 for c, i in rows])
            painted = np.roll(masks, 1, axis=0) & (images > 0)
            # as the product shows them: background stays background (synthesis.py)
            pn = np.where(images > 0, run_net(G, slices_for_G(G, rows))[:, 0], images)
            pab = np.where((images > 0) | painted, run_net(R, pn, extra=painted)[:, 0], images)
            labels = [f"{c.case_id} z{int(c.z[i])}" for c, i in rows]
            written["fig3"] = str(grid_figure(self.out / f"fig3-{variant}.png", [images, pn, pab],
                                        ["abnormal", "pseudo-normal", "pseudo-abnormal (next row's lesion)"], labels))
        if data.transplants is not None:
            written["known_truth"] = str(known_truth_figure(G, data.transplants, self.out / f"known-truth-{variant}.png",
                                                            s.figure_rows))
        return written

    # ---- the whole benchmark ---------------------------------------------------------------
    def run(self) -> dict:
        s = self.s
        t_all = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        self.prepare()
        t0 = time.time()
        for norm, data in self.data.items():  # one Spred per scaling, each judging the models of its scaling
            data.spred = train_spred(data.train, s.spred, self.cache, progress=self._bar(f"Spred ({norm})"))
        self.timings["spred_s"] = round(time.time() - t0, 1)
        results = {v: {} for v in s.variants}
        figures, augmentation = {}, {}
        todo = [(v, seed) for seed in s.seeds for v in s.variants]
        for k, (variant, seed) in enumerate(todo):
            self.log(f"benchmark [{k + 1}/{len(todo)}] {variant}, seed {seed}")
            model_path, seconds = self.train_variant(variant, seed)
            data = self.data[normalisation_of(variant)]
            report = evaluate(load_model(model_path), data.test, data.spred, data.transplants)
            report["train_seconds"] = round(seconds, 1)
            results[variant][seed] = report
            if seed == s.seeds[0]:
                figures[variant] = self.figures(variant, model_path)
            if s.augment and variant == s.augment_from:
                self.log(f"benchmark: augmentation experiment, seed {seed}")
                t0 = time.time()
                augmentation[seed] = self.augmentation(model_path, seed)
                self.timings[f"augmentation_seed{seed}_s"] = round(time.time() - t0, 1)
        self.timings["total_s"] = round(time.time() - t_all, 1)
        report = {"settings": _jsonable(dataclasses.asdict(s)), "hardware": hardware(),
                  "split": {"train": [c.case_id for c in self.split.train], "val": [c.case_id for c in self.split.val],
                            "test": [c.case_id for c in self.split.test]},
                  "timings": self.timings, "runs": {v: {str(k): r for k, r in rs.items()} for v, rs in results.items()},
                  "summary": summarise(results, augmentation, {v: normalisation_of(v) for v in results}),
                  "augmentation": {str(k): v for k, v in augmentation.items()},
                  "figures": figures,
                  "known_truth_source": next(iter(self.data.values())).transplants.source if s.transplants else []}
        write_text_atomic(self.out / "benchmark.json", json.dumps(report, indent=1))
        write_text_atomic(self.out / "benchmark.md", markdown(report))
        return report


# ---- helpers ---------------------------------------------------------------------------------
# settings that change how fast a run goes or where it writes, not what it learns
# (out_dir: the same run folder spelled relative or absolute must not count as another run)
# (init_from: a benchmark run starts from another run's model; train_variant checks that model's age)
NOT_RESULTS = {"device", "amp", "channels_last", "num_workers", "checkpoint_every", "cache_dir", "data_dir", "out_dir",
               "init_from"}


def _same_training(saved: dict, cfg: TrainConfig) -> bool:
    """Whether a run made with the `saved` settings is the one `cfg` asks for (a setting added to
    TrainConfig after the run counts with its default)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    wanted = json.loads(json.dumps(dataclasses.asdict(cfg)))
    return all(saved.get(k, defaults.get(k)) == v for k, v in wanted.items() if k not in NOT_RESULTS)


def _memory_case(name: str, images: np.ndarray, masks: np.ndarray) -> CachedCase:
    boxes = _boxes(masks > 0)
    return CachedCase(name, images.astype(np.float32), masks, np.arange(len(images)), _boxes(images > 0), boxes, 1.0)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
