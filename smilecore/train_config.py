"""smile train's settings (TrainConfig) and the defaults its parser shows, in a module that does
not import torch, so that `smile --help` and the trainer's option list stay fast; train.py holds
the trainer itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from .cases import PAPER_FRACTIONS, canonical_modality
from .defaults import DEFAULT_MIN_BRAIN_FRACTION, GATE_FLOOR
from .volume import NORMALISATIONS

VARIANTS = ("smile", "gvs")


@dataclass
class TrainConfig:
    data_dir: str
    out_dir: str
    modality: str = "t2"
    variant: str = "smile"              # "smile": phases 1-4; "gvs": phase 1 alone, all labels
    labeled_fraction: float = 1.0
    seed: int = 0
    split: tuple = PAPER_FRACTIONS      # train/val/test proportions of the labelled cases
    val_cases: tuple = ()
    test_cases: tuple = ()
    epochs: int | tuple = 10            # per phase: one number, or one per phase (e.g. (4, 1, 1, 2))
    steps_per_epoch: int | None = None  # None: one pass over the training slices
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "constant"       # "cosine": lr decays to 0 over the run (lr_at)
    base: int = 32                      # U-Net width (same for G, S, R)
    depth: int = 4
    norm: str = "batch"                 # U-Net normalisation: "batch" or "none" (see unet.py)
    upsample: str = "transpose"         # U-Net up-sampling: "transpose" (the paper's U-Net) or "bilinear"
    generator: str = "unet"             # "unet": the paper's residual G; "gated": gated.GatedGenerator
    crop: int | None = None             # train on random crops of this size (full resolution)
    eps0: float = 0.9
    min_brain_fraction: float = DEFAULT_MIN_BRAIN_FRACTION
    cache_dir: str | None = None        # default: <out_dir>/cache
    device: str = "auto"
    amp: bool = True                    # bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = True          # NHWC tensors on CUDA (faster bf16 convolutions); ignored on CPU
    num_workers: int | None = None      # None: 2 on CUDA, 0 on CPU
    checkpoint_every: int = 100         # steps, besides the end of every epoch
    max_val_slices: int = 64
    transplant_weight: float = 0.0      # beyond the paper: paired lesion-removal term (see below)
    transplant_lesion_weight: float = 0.0  # the same term's error inside the pasted lesion alone
    init_from: str | None = None        # a model file the networks start from (a gated G from its S)
    freeze: str = ""                    # networks kept as they start ("S", "R", "SR"): needs init_from
    gate_grow: int = 0                  # gated G only: pixels its gate is grown by (gated.py)
    gate_floor: float = GATE_FLOOR      # gated G only: gate values below it are exactly 0
    gate_weight: float = 1.0            # gated G only: its gate against the masks of the batch (L_gate)
    gate_dice_weight: float = 0.0       # gated G only: soft Dice of its gate on each pasted lesion
    context_slices: int | None = None   # gated G only: neighbouring slices G sees on each side (2.5D);
                                        # None: init_from's G's, else 0
    normalisation: str | None = None    # volume.NORMALISATIONS: the paper's V99.5 scaling, or "median";
                                        # None: init_from's, else "clip-percentile"
    save_half: bool = False             # model file weights in float16

    TRAINS = {1: "GS", 2: "R", 3: "SR", 4: "GSR"}   # the networks each phase trains

    @property
    def phases(self) -> list[int]:
        return [1] if self.variant == "gvs" else [1, 2, 3, 4]

    def epochs_of(self, phase: int) -> int:
        if isinstance(self.epochs, tuple):
            return self.epochs[self.phases.index(phase)]
        return int(self.epochs)

    def check(self):
        self.modality = canonical_modality(self.modality)
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose from {VARIANTS}")
        if self.init_from and (self.normalisation is None or self.context_slices is None):
            from .gated import context_of        # torch: only when a model file is read
            from .modelfile import load_model
            start = load_model(self.init_from)
            self.normalisation = self.normalisation or start.normalisation
            self.context_slices = context_of(start.nets["G"]) if self.context_slices is None else self.context_slices
        self.normalisation = self.normalisation or "clip-percentile"
        self.context_slices = int(self.context_slices or 0)
        if self.context_slices < 0 or (self.context_slices > 0 and self.generator != "gated"):
            raise ValueError("neighbouring slices (--context-slices) need --generator gated, and are >= 0")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {self.normalisation!r}; choose from {NORMALISATIONS}")
        from .networks import GENERATORS
        if self.generator not in GENERATORS:
            raise ValueError(f"unknown generator {self.generator!r}; choose from {GENERATORS}")
        if self.variant == "gvs" and self.labeled_fraction != 1.0:
            raise ValueError("the GVS comparison uses all labels (labeled fraction 1)")
        for name in ("batch_size", "base", "depth", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if isinstance(self.epochs, (list, tuple)):
            self.epochs = tuple(int(e) for e in self.epochs)
            if len(self.epochs) == 1:
                self.epochs = self.epochs[0]
            elif len(self.epochs) != len(self.phases):
                raise ValueError(f"{len(self.epochs)} epoch counts given for {len(self.phases)} phases")
        if min(self.epochs_of(p) for p in self.phases) < 1:
            raise ValueError("epochs must be at least 1")
        if set(self.freeze) - set("SR") or (self.freeze and not self.init_from):
            raise ValueError("freeze names S and/or R, and needs a model to start from (init_from)")
        idle = [p for p in self.phases if not set(self.TRAINS[p]) - set(self.freeze)]
        if idle:
            raise ValueError(f"phase {idle[0]} trains nothing when {'/'.join(self.freeze)} is frozen")
        if self.transplant_weight < 0 or self.transplant_lesion_weight < 0:
            raise ValueError("transplant weights must be >= 0")
        if self.transplant_lesion_weight > 0 and self.transplant_weight <= 0:
            raise ValueError("the lesion part of the transplant term needs --transplant-weight > 0")
        if self.gate_dice_weight < 0 or (self.gate_dice_weight > 0 and (self.transplant_weight <= 0
                                                                         or self.generator != "gated")):
            raise ValueError("the gate's Dice term needs --generator gated and --transplant-weight > 0, weight >= 0")
        if self.crop is not None and self.crop < 2 ** self.depth:
            raise ValueError(f"crop {self.crop} is smaller than the network's multiple {2 ** self.depth}")
        if not self.lr > 0:
            raise ValueError("learning rate must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; choose from {LR_SCHEDULES}")
        return self


LR_SCHEDULES = ("constant", "cosine")
