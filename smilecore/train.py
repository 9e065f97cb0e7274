"""The phased semi-supervised trainer (DESIGN.md section 1).

Phases, each `epochs` epochs:
  1. G and S adversarially   2. R alone (G, S frozen)   3. R and S adversarially
  4. G, S and R together.
Variants: SMILE-sup (labelled fraction 1), SMILE-F (a labelled fraction F < 1: the labels of
a seeded (1-F) share of training cases are removed and the confidence enhancer labels those
slices), GVS (phase 1 alone, all labels).

Each phase is one function of phases.py, written beside the equations it implements
(phase1_generator_vs_segmentor ... phase4_joint_finetune; the segmentor step and the
confidence enhancer are functions there too); this module holds the configuration and
the orchestration around them: data, optimisers, checkpoints, events, the loop.

Fine-tuning: `init_from` starts the networks from a model file (a gated G from the file's S) and
`freeze` keeps S and/or R as the file has them (the default model's third stage).

Randomness (data order, crops) is a pure function of (seed, phase, epoch), and checkpoints
store the position inside the epoch, so `resume` on CPU continues exactly as an
uninterrupted run would.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import distributed as D
from . import checkpoints, runchecks
from . import phases as P
from .checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_NAME  # noqa: F401  (importable from here)
from .cases import find_cases, split_cases
from .dataset import collate, EpochSampler, SliceSet, cache_case
from .events import PHASE_NAMES, EventLog
from .modelfile import model_config, save_model
from .phases import frozen  # noqa: F401  (importable from here, as before)
from .provenance import file_record, folder_name, provenance
from .gated import GatedGenerator, context_of
from .networks import build_networks
from .train_config import LR_SCHEDULES, VARIANTS, TrainConfig  # noqa: F401  (importable from here, as before)

MODEL_NAME = "smile-model.pt"


def lr_at(lr: float, schedule: str, step: int, total: int) -> float:
    """The learning rate of global step `step` (0-based) of `total`: constant, or a cosine from
    `lr` to 0 over the run. Why the decay: the weights of a constant-rate run end as one draw of
    Adam's walk around the optimum; two seeds of the default's last stage ended 0.8 dB apart in
    known-truth PSNR. A function of the step alone, so `resume` continues it exactly."""
    if schedule == "cosine":
        return 0.5 * lr * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    return lr


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but no CUDA GPU is available to torch")
    return torch.device(name)


class Trainer:
    def __init__(self, cfg: TrainConfig, events: EventLog | None = None):
        self.cfg = cfg.check()
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = D.local_device(resolve_device(cfg.device))
        if self.device.type == "cuda" and D.launched():
            torch.cuda.set_device(self.device)
        D.init(self.device)
        self.rank, self.world = D.rank(), D.world_size()
        if cfg.batch_size % self.world:
            raise ValueError(f"batch size {cfg.batch_size} does not divide among {self.world} processes")
        # process 0 alone writes events (and checkpoints and the model)
        self.events = (events or EventLog(self.out / "events.jsonl")) if self.rank == 0 else EventLog(None)
        self.amp = cfg.amp and self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        sizes = {n: {"base": cfg.base, "depth": cfg.depth, "norm": cfg.norm, "upsample": cfg.upsample} for n in "GSR"}
        if cfg.generator != "unet":
            sizes["G"]["kind"] = cfg.generator
        if cfg.generator == "gated":
            sizes["G"].update(grow=cfg.gate_grow, floor=cfg.gate_floor)
            if cfg.context_slices:
                sizes["G"]["context"] = cfg.context_slices
        self.nets = self._initial_networks(sizes) if cfg.init_from else build_networks(sizes)
        self.sizes = sizes
        self.memory_format = (torch.channels_last if cfg.channels_last and self.device.type == "cuda"
                              else torch.contiguous_format)
        for net in self.nets.values():
            net.to(self.device, memory_format=self.memory_format)
            D.broadcast_parameters(net)
        self.opts = {n: torch.optim.Adam(net.parameters(), lr=cfg.lr) for n, net in self.nets.items()
                     if n not in cfg.freeze}
        self.eps = cfg.eps0
        self.position = {"phase_index": 0, "epoch": 0, "step": 0, "global_step": 0}
        self.acc = P.new_confidence_record()
        self.loss_sums: dict[str, float] = {}   # per loss term, over the current epoch
        self.history: list[dict] = []
        self.origin = {"init_from": file_record(cfg.init_from), "provenance": provenance()}  # for the model file

    def _initial_networks(self, sizes: dict) -> dict:
        """The networks of model file `init_from` (their sizes replace the configured ones); a
        gated G asked for where the file's G is the paper's starts from the file's S. Only G, S and R:
        the file's optional networks (S_flair, the fill network) are trained by their own scripts,
        and their configuration entries are not carried over, so the new file has none."""
        from .modelfile import load_model
        start = load_model(self.cfg.init_from)
        nets = {name: start.nets[name] for name in "GSR"}
        for name in nets:
            sizes[name] = dict(start.config["networks"][name])
        if sizes["G"].get("kind", "unet") != self.cfg.generator:
            if self.cfg.generator != "gated":
                raise ValueError(f"init_from {self.cfg.init_from}: its G is "
                                 f"{sizes['G'].get('kind')!r}, not {self.cfg.generator!r}")
            gate = {"grow": self.cfg.gate_grow, "floor": self.cfg.gate_floor}
            nets["G"] = GatedGenerator.from_segmentor(nets["S"], **gate)
            sizes["G"] = {**sizes["S"], "kind": "gated", **gate}
        if self.cfg.context_slices != context_of(nets["G"]):  # a 2D G starts a 2.5D one exactly
            nets["G"] = nets["G"].widened(self.cfg.context_slices)
            sizes["G"]["context"] = self.cfg.context_slices
        return nets

    # ---- data -------------------------------------------------------------------------
    def prepare_data(self):
        """Find, split and cache the cases (process 0 first, so that processes never build the
        same cache entry at once)."""
        if self.rank != 0:
            D.barrier()
        try:
            self._prepare_data()
        finally:
            if self.rank == 0:
                D.barrier()

    def _prepare_data(self):
        cfg = self.cfg
        cases = find_cases(cfg.data_dir, require=True)  # NoCasesFound says where and how deep it looked
        missing = [c.case_id for c in cases if cfg.modality not in c.images]
        if missing:
            raise FileNotFoundError(f"data folder {cfg.data_dir}: cases without a {cfg.modality} image: "
                                    + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        self.split = split_cases(cases, cfg.seed, cfg.split, cfg.labeled_fraction,
                                 cfg.val_cases, cfg.test_cases)
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.out / "cache"
        unlabeled = set(self.split.unlabeled_train_ids)
        todo = [(c, c.case_id not in unlabeled) for c in self.split.train] + [(c, True) for c in self.split.val]
        cached = []
        for k, (case, use_label) in enumerate(todo):
            cached.append(cache_case(case, cache_dir, cfg.modality, use_label, cfg.min_brain_fraction,
                                     normalisation=cfg.normalisation))
            self.events.emit("prepare", done=k + 1, total=len(todo), case=case.case_id)
        n_train = len(self.split.train)
        # The model file records the training voxel size; synthesis resamples slices to it. Cases
        # are not resampled here: a set of mixed in-plane sizes trains on their median.
        self.spacing = tuple(float(v) for v in np.median([c.spacing for c in cached[:n_train]], axis=0))
        self.train_set = SliceSet(cached[:n_train], cfg.crop, cfg.context_slices)
        self.val_set = SliceSet(cached[n_train:], None, cfg.context_slices)
        if len(self.train_set) == 0:
            raise ValueError(f"data folder {cfg.data_dir}: no training slice with brain")

    def steps_per_epoch(self) -> int:
        return self.cfg.steps_per_epoch or max(1, math.ceil(len(self.train_set) / self.cfg.batch_size))

    def _loader(self, phase: int, epoch: int, start_step: int):
        cfg = self.cfg
        n_steps = self.steps_per_epoch()
        sampler = EpochSampler(self.train_set, cfg.seed, phase, epoch, start_step * cfg.batch_size,
                               n_steps * cfg.batch_size)
        items = D.shard(sampler.items, cfg.batch_size)  # this process's share of each global batch
        workers = cfg.num_workers if cfg.num_workers is not None else (2 if self.device.type == "cuda" else 0)
        return torch.utils.data.DataLoader(self.train_set, batch_size=cfg.batch_size // self.world, sampler=items,
                                           collate_fn=collate, num_workers=workers,
                                           pin_memory=self.device.type == "cuda", drop_last=False)

    # ---- one optimisation step ----------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _update(self, names: str, terms: dict[str, torch.Tensor]):
        loss = sum(terms.values())
        if not D.all_true(bool(torch.isfinite(loss)), self.device):
            raise runchecks.non_finite_loss(self, names, terms)
        for n in names:
            self.opts[n].zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.lr_schedule != "constant":  # (a constant rate is the optimisers' own)
            lr = lr_at(self.cfg.lr, self.cfg.lr_schedule, self.position["global_step"], self.total_steps())
            for n in names:
                for group in self.opts[n].param_groups:
                    group["lr"] = lr
        for n in names:
            D.average_gradients(self.nets[n])
            self.opts[n].step()

    def train_step(self, phase: int, batch: dict) -> dict[str, float]:
        """One step of `phase` (phases.PHASES) on `batch`; returns its loss terms."""
        k = self.cfg.context_slices
        X = batch["image"].to(self.device, non_blocking=True)  # the slices with their neighbours: G's input
        I = X[:, k:k + 1].contiguous(memory_format=self.memory_format)   # the slices themselves
        X = X.contiguous(memory_format=self.memory_format)
        M_true = batch["mask"].to(self.device, non_blocking=True)
        MX = batch["masks"].to(self.device) if "masks" in batch else M_true[:, None]
        step = P.Step(self.nets["G"], self.nets["S"], self.nets["R"], self.cfg, X, I, M_true, MX,
                      batch["labeled"].to(self.device), self.eps, self.acc, self._autocast, self._update)
        return {k: float(v.detach()) for k, v in P.PHASES[phase](step).items()}

    def _set_modes(self, phase: int):
        """Networks a phase does not train run in eval mode: fixed BatchNorm statistics, as at
        inference (a frozen G feeding R in phase 2 must not drift)."""
        for name, net in self.nets.items():
            net.train(name in self.cfg.TRAINS[phase] and name not in self.cfg.freeze)

    # ---- checkpoints (checkpoints.py) ---------------------------------------------------
    checkpoint_state = checkpoints.checkpoint_state
    save_checkpoint = checkpoints.save_checkpoint
    load_checkpoint = checkpoints.load_checkpoint

    def _where(self) -> dict:
        p = self.position
        phase = self.cfg.phases[min(p["phase_index"], len(self.cfg.phases) - 1)]
        return {"phase": phase, "phase_name": PHASE_NAMES[phase], "epoch": p["epoch"],
                "epochs": self.cfg.epochs_of(phase), "step": p["step"], "steps_per_epoch": self.steps_per_epoch(),
                "global_step": p["global_step"], "total_steps": self.total_steps()}

    def total_steps(self) -> int:
        return sum(self.cfg.epochs_of(p) for p in self.cfg.phases) * self.steps_per_epoch()

    # ---- the loop ----------------------------------------------------------------------
    def run(self, resume: bool = False) -> Path:
        cfg = self.cfg
        self.prepare_data()
        ckpt = self.out / CHECKPOINT_NAME
        if resume:
            if not ckpt.is_file():
                raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
            self.load_checkpoint(ckpt)
        (self.out / "split.json").write_text(json.dumps(self.split.summary(), indent=1))
        self.events.emit("start", config=dataclasses.asdict(cfg), split=self.split.summary(),
                         device=str(self.device), amp=self.amp, resumed=resume,
                         train_slices=len(self.train_set), val_slices=len(self.val_set), **self._where())
        t0, start_global = time.time(), self.position["global_step"]
        n_steps = self.steps_per_epoch()
        while self.position["phase_index"] < len(cfg.phases):
            phase = self._phase = cfg.phases[self.position["phase_index"]]
            self._set_modes(phase)
            while self.position["epoch"] < cfg.epochs_of(phase):
                epoch = self.position["epoch"]
                t_epoch = time.time()
                for batch in self._loader(phase, epoch, self.position["step"]):
                    t_step = time.time()
                    try:
                        terms = self.train_step(phase, batch)
                    except torch.cuda.OutOfMemoryError:
                        terms = None
                    if terms is None:  # outside the except block, so the failed step's memory is freed
                        raise runchecks.out_of_memory(self, phase, batch)
                    self.position["step"] += 1
                    self.position["global_step"] += 1
                    self.acc["slices"] += len(batch["image"])
                    for k, v in terms.items():
                        self.loss_sums[k] = self.loss_sums.get(k, 0.0) + v
                    done = self.position["global_step"] - start_global
                    rate = done / (time.time() - t0)
                    self.events.emit("step", losses=terms, eps=self.eps,
                                     pseudo_label_share=P.pseudo_label_share(self.acc),
                                     slices_per_s=len(batch["image"]) / max(time.time() - t_step, 1e-9),
                                     eta_s=(self.total_steps() - self.position["global_step"]) / max(rate, 1e-9),
                                     **self._where())
                    if self.position["step"] % cfg.checkpoint_every == 0 and self.position["step"] < n_steps:
                        self.save_checkpoint()
                self.acc = D.sum_values(self.acc, self.device)   # over processes: one eps for all
                for net in self.nets.values():
                    D.average_buffers(net)
                share = P.pseudo_label_share(self.acc)
                eps_used = self.eps
                self.eps = P.next_eps(self.eps, self.acc)
                val = runchecks.validate(self, phase) if self.rank == 0 else {}
                record = {"phase": phase, "epoch": epoch, "eps_used": eps_used, "eps": self.eps,
                          "pseudo_label_share": share, "val": val,
                          "losses": {k: v / max(self.position["step"], 1) for k, v in self.loss_sums.items()},
                          "seconds": round(time.time() - t_epoch, 2)}
                record["slices"] = self.acc["slices"]
                record["slices_per_s"] = round(self.acc["slices"] / max(record["seconds"], 1e-9), 2)
                self.history.append(record)
                self.position.update(epoch=epoch + 1, step=0)
                self.acc = P.new_confidence_record()
                self.loss_sums = {}
                self.events.emit("epoch", **{**self._where(), **record, "epoch": epoch})
                self.save_checkpoint()
            self.position.update(phase_index=self.position["phase_index"] + 1, epoch=0, step=0)
            self.save_checkpoint()
        model_path = self.save_model() if self.rank == 0 else self.out / MODEL_NAME
        D.barrier()
        self.events.emit("done", model=str(model_path), seconds=round(time.time() - t0, 2), **self._where())
        return model_path

    def save_model(self) -> Path:
        cfg = self.cfg
        training = {"variant": cfg.variant, "labeled_fraction": cfg.labeled_fraction,
                    "phases": cfg.phases, "epochs_per_phase": [cfg.epochs_of(p) for p in cfg.phases],
                    "transplant_weight": cfg.transplant_weight,
                    "transplant_lesion_weight": cfg.transplant_lesion_weight,
                    "frozen": cfg.freeze, "gate_weight": cfg.gate_weight, "gate_dice_weight": cfg.gate_dice_weight,
                    "context_slices": cfg.context_slices,
                    "steps_per_epoch": self.steps_per_epoch(), "batch_size": cfg.batch_size,
                    "lr": cfg.lr, "lr_schedule": cfg.lr_schedule, "crop": cfg.crop, "seed": cfg.seed, "split": self.split.summary(),
                    "final_eps": self.eps, "last_val": self.history[-1]["val"] if self.history else {},
                    "data_dir": folder_name(cfg.data_dir), **self.origin}
        config = model_config(self.sizes, cfg.modality, training, spacing_mm=self.spacing,
                              normalisation=cfg.normalisation)
        return save_model(self.out / MODEL_NAME, self.nets, config, half=cfg.save_half)
