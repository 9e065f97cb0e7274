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
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

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
PAPER_TABLE2 = {"GVS": (0.997, 0.792), "SMILE-50": (0.978, 0.653), "SMILE-75": (0.987, 0.810),
                "SMILE-sup": (1.000, 0.822)}
PAPER_TABLE3 = {"real": 0.72, "real+pseudo-normal": 0.76, "real+pseudo-abnormal": 0.77, "real+both": 0.82}
AUG_CONDITIONS = tuple(PAPER_TABLE3)


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
                  "summary": summarise(results, augmentation), "augmentation": {str(k): v for k, v in augmentation.items()},
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


def _mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v == v]
    if not values:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


# evaluate.evaluate's known-truth entries: the model's, and the references (same for every run)
KNOWN_TRUTH_MODEL_ROWS = ("model", "model_mask_given", "model_mask_given_no_fill", "model_S_mask_fill")
KNOWN_TRUTH_BASELINES = ("untouched", "mean_fill", "smooth_fill", "best_constant")


def summarise(results: dict, augmentation: dict) -> dict:
    out = {"variants": {}, "known_truth_baselines": {}, "augmentation": {}}
    for variant, by_seed in results.items():
        reps = list(by_seed.values())
        row = {k: _mean_sd([r[k] for r in reps]) for k in ("identity", "healthiness", "dice_S", "train_seconds")}
        for k in ("pseudo_normal_lesion", "input_lesion", "input_healthy"):
            row[f"dz_{k}"] = _mean_sd([r["through_plane_change"][k] for r in reps if "through_plane_change" in r])
        for k in ("model", "model_mask_given", "truth", "input", "mean_fill"):
            row[f"kt_dz_{k}"] = _mean_sd([r["known_truth_through_plane"][k] for r in reps
                                          if k in r.get("known_truth_through_plane", {})])
        row["outside_changed"] = _mean_sd([r["outside_lesion_changed"]["pooled"] for r in reps
                                           if "outside_lesion_changed" in r])
        healthy = [r["healthy_brain"]["pooled"] for r in reps if r.get("healthy_brain", {}).get("pooled")]
        for k in ("lesion_share_worst", "changed_share"):
            row[f"healthy_{k}"] = _mean_sd([h[k] for h in healthy])
        row["kt_dz_ratio"] = _mean_sd([r["known_truth_through_plane"]["model"] / r["known_truth_through_plane"]["truth"]
                                       for r in reps if r.get("known_truth_through_plane", {}).get("truth")])
        for k in ("identity", "healthiness"):
            row[f"S_mask_fill_{k}"] = _mean_sd([r["S_mask_fill"][k] for r in reps if "S_mask_fill" in r])
        for name in KNOWN_TRUTH_MODEL_ROWS:
            for m in ("psnr", "ssim", "mae"):
                row[f"kt_{name}_{m}"] = _mean_sd([r["known_truth"][name][m] for r in reps
                                                  if name in r.get("known_truth", {})])
        # PSNR depends on the scaling: each row keeps the mean fill on its own
        row["kt_mean_fill_psnr"] = _mean_sd([r["known_truth"]["mean_fill"]["psnr"] for r in reps if "known_truth" in r])
        out["variants"][variant] = row
        if reps and "known_truth" in reps[0] and not out["known_truth_baselines"] and \
                normalisation_of(variant) == "clip-percentile":   # the references on the paper's scaling
            out["known_truth_baselines"] = {b: reps[0]["known_truth"][b] for b in KNOWN_TRUTH_BASELINES
                                            if b in reps[0]["known_truth"]}
    for cond in AUG_CONDITIONS:
        out["augmentation"][cond] = _mean_sd([a[cond] for a in augmentation.values()])
    return out


def _fmt(d: dict, digits: int = 3) -> str:
    if d["n"] == 0:
        return "–"
    return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}" if d["n"] > 1 else f"{d['mean']:.{digits}f}"


def _pct(d: dict) -> str:
    """A share as percent, mean ± sd over seeds."""
    return _fmt({k: 100 * v if k != "n" else v for k, v in d.items()}, 1) + (" %" if d["n"] else "")


def markdown(report: dict) -> str:
    s, hw, summ = report["settings"], report["hardware"], report["summary"]
    n_seeds = len(s["seeds"])
    lines = ["# SMILE benchmark", "",
             f"Data: `{s['data_dir']}` ({s['modality']}); split (seed {s['split_seed']}): "
             f"train {len(report['split']['train'])} cases, val {', '.join(report['split']['val']) or '–'}, "
             f"test {', '.join(report['split']['test'])}.",
             f"Networks: U-Nets width {s['base']}, depth {s['depth']}, {s['norm']} norm; epochs per phase "
             f"{s['epochs']} x {s['steps_per_epoch']} steps, batch {s['batch_size']}, lr {s['lr']}, crop {s['crop']}; "
             f"GVS gets the same steps in phase 1. Seeds {s['seeds']}: mean ± sd over {n_seeds} seed(s).",
             f"Hardware: {hw['cpu']} ({hw['cpu_cores']} cores, {hw['torch_threads']} torch threads), "
             f"GPU: {hw['gpu'] or 'none'}; torch {hw['torch']}. Wall time: {report['timings']['total_s']:.0f} s "
             "(finished runs reused from an earlier invocation count with their own training time below).", "",
             "## Table 2 analogue: identity, healthiness, Dice of S, error inside lesions with known truth", "",
             "Errors are on each model's own intensity scaling; the baselines below are on the paper's (the +median "
             "rows' mean fill is in the ablation table).", "",
             "| method | iD | h | Dice S | known-truth PSNR (dB) | SSIM | MAE | train s | paper iD / h |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v, row in summ["variants"].items():
        paper = PAPER_TABLE2.get(v)
        lines.append(f"| {v} | {_fmt(row['identity'])} | {_fmt(row['healthiness'])} | {_fmt(row['dice_S'])} | "
                     f"{_fmt(row['kt_model_psnr'], 2)} | {_fmt(row['kt_model_ssim'])} | {_fmt(row['kt_model_mae'], 4)} | "
                     f"{_fmt(row['train_seconds'], 0)} | {f'{paper[0]:.3f} / {paper[1]:.3f}' if paper else '–'} |")
    for b, kt in summ["known_truth_baselines"].items():
        lines.append(f"| baseline: {b.replace('_', ' ')} | – | – | – | {kt['psnr']:.2f} | {kt['ssim']:.3f} | "
                     f"{kt['mae']:.4f} | – | – |")
    lines += ["", "Through-plane change (striping; mean |V(z+1) - V(z)| between neighbouring axial slices, "
              "metrics.py): the pseudo-normal inside the expert's lesion, next to the input there and to "
              "healthy tissue of the same test volumes:", "",
              "| method | pseudo-normal in lesion | input in lesion | input, healthy tissue |", "|---|---|---|---|"]
    for v, row in summ["variants"].items():
        lines.append(f"| {v} | {_fmt(row['dz_pseudo_normal_lesion'], 4)} | {_fmt(row['dz_input_lesion'], 4)} | "
                     f"{_fmt(row['dz_input_healthy'], 4)} |")
    lines += ["", "Through-plane change against known truth: lesion volumes (8 adjacent slices) transplanted into "
              "8 adjacent normal slices of the test cases (evaluate.transplant_slabs), inside the lesion:", "",
              "| method | no mask | mask given, lesion fill | truth | input | mean fill |", "|---|---|---|---|---|---|"]
    for v, row in summ["variants"].items():
        lines.append(f"| {v} | " + " | ".join(_fmt(row[f'kt_dz_{k}'], 4) for k in
                                               ("model", "model_mask_given", "truth", "input", "mean_fill")) + " |")
    lines += ["", "## Known truth: each addition and the references", "",
              "Error inside the transplanted lesions (PSNR dB / SSIM). *No mask*: G as trained. *Mask given, "
              "published*: review mode as the paper would do it (input outside the mask, G(I) inside). *Mask "
              "given, lesion fill* (shipped review mode): G gets the input with the mask filled from the tissue "
              "around it (smilecore/lesionfill.py). *S-mask fill* (tried, not shipped): the same fill with S's "
              "own mask, no mask given; its iD and h on the real abnormal test slices are in the last columns.", "",
              "| method | no mask | mask given, published | mask given, lesion fill | S-mask fill | "
              "S-mask fill iD / h |", "|---|---|---|---|---|---|"]
    kt = lambda row, name: f"{_fmt(row[f'kt_{name}_psnr'], 2)} / {_fmt(row[f'kt_{name}_ssim'])}"  # noqa: E731
    for v, row in summ["variants"].items():
        lines.append(f"| {v} | {kt(row, 'model')} | {kt(row, 'model_mask_given_no_fill')} | "
                     f"{kt(row, 'model_mask_given')} | {kt(row, 'model_S_mask_fill')} | "
                     f"{_fmt(row['S_mask_fill_identity'])} / {_fmt(row['S_mask_fill_healthiness'])} |")
    names = {"untouched": "untouched (identity)", "mean_fill": "mean-of-surroundings fill",
             "smooth_fill": "smooth fill (lesionfill.py, no G)", "best_constant": "ceiling: best constant (uses the truth)"}
    for b, ref in summ["known_truth_baselines"].items():
        lines.append(f"| {names[b]} | {ref['psnr']:.2f} / {ref['ssim']:.3f} | | | | |")
    lines += ["", "## Ablation: what G changes, where it should and where it should not", "",
              "Paper's G (the SMILE rows) against the gated G started from SMILE-sup's S, 2D and 2.5D, and both with every "
              "case scaled by its brain's median instead of the paper's 99.5th percentile (the +median rows; their "
              "PSNR is on that scale, next to the mean fill on the same scale) (issue 14): error inside "
              "the transplanted lesions without a mask; share of brain more than 4 px from the expert lesion that "
              "G changes by more than 0.01; each test case with its tumour replaced by mirrored healthy tissue "
              "(evaluate.healthy_brain): the worst case's share called lesion by S and the share G changes; "
              "through-plane change inside transplanted 8-slice lesion volumes over the truth's.", "",
              "| method | PSNR no mask | mean fill | SSIM | changed > 4 px from lesion | healthy brain: called lesion "
              "(worst) | healthy brain: changed | iD | Dice S | through-plane / truth |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for v, row in summ["variants"].items():
        lines.append(f"| {v} | {_fmt(row['kt_model_psnr'], 2)} | {_fmt(row['kt_mean_fill_psnr'], 2)} | "
                     f"{_fmt(row['kt_model_ssim'])} | "
                     f"{_pct(row['outside_changed'])} | {_pct(row['healthy_lesion_share_worst'])} | "
                     f"{_pct(row['healthy_changed_share'])} | {_fmt(row['identity'])} | {_fmt(row['dice_S'])} | "
                     f"{_fmt(row['kt_dz_ratio'], 2)} |")
    if any(d["n"] for d in summ["augmentation"].values()):
        lines += ["", f"## Table 3 analogue: a segmentor trained with augmentation from {s['augment_from']}", "",
                  "| training data | Dice (test) | paper |", "|---|---|---|"]
        for cond, d in summ["augmentation"].items():
            lines.append(f"| {cond} | {_fmt(d)} | {PAPER_TABLE3[cond]:.2f} |")
    lines += ["", "## Figures", ""]
    for v, figs in report["figures"].items():
        for kind, path in figs.items():
            lines.append(f"- {v}, {'abnormal | pseudo-normal | pseudo-abnormal' if kind == 'fig3' else 'known truth'}: "
                         f"![{v} {kind}]({Path(path).name})")
    lines += ["", "How each number is computed: smilecore/metrics.py, smilecore/evaluate.py and "
              "smilecore/benchmark.py docstrings; every number is in benchmark.json.", ""]
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
