"""Checkpoints of a training run (train.Trainer): everything needed to continue it exactly,
written atomically to ``<out>/checkpoint.pt`` and read with ``torch.load(weights_only=True)``.

Each function takes the trainer (`t`) whose state it saves or restores; Trainer has them as methods.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from . import distributed as D
from .modelfile import atomic_torch_save
from .phases import new_confidence_record

CHECKPOINT_FORMAT = "smile-checkpoint"
CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_state(t) -> dict:
    return {"format": CHECKPOINT_FORMAT, "format_version": 1,
            "config": json.dumps(dataclasses.asdict(t.cfg)),
            "nets": {n: net.state_dict() for n, net in t.nets.items()},
            "opts": {n: opt.state_dict() for n, opt in t.opts.items()},
            "position": dict(t.position), "eps": t.eps, "acc": dict(t.acc),
            "loss_sums": dict(t.loss_sums),
            "history": json.dumps(t.history)}


def save_checkpoint(t):
    """Called by every process at the same step: the state is made common (BatchNorm
    statistics averaged, confidence statistics summed), then process 0 writes it."""
    for net in t.nets.values():
        D.average_buffers(net)
    acc = D.sum_values(t.acc, t.device)
    if t.rank == 0:
        state = t.checkpoint_state()
        state["acc"] = acc
        atomic_torch_save(state, t.out / CHECKPOINT_NAME)
        t.events.emit("checkpoint", path=str(t.out / CHECKPOINT_NAME), **t._where())


def load_checkpoint(t, path: str | Path):
    state = torch.load(path, map_location=t.device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a SMILE training checkpoint")
    for n, net in t.nets.items():
        net.load_state_dict(state["nets"][n])
        if n in t.opts:
            t.opts[n].load_state_dict(state["opts"][n])
    t.position = {k: int(v) for k, v in state["position"].items()}
    t.eps = float(state["eps"])
    t.acc = {k: (float(v) if k == "conf_sum" else int(v)) for k, v in state["acc"].items()}
    if t.rank != 0:   # the saved sums cover all processes; process 0 carries them on
        t.acc = new_confidence_record()
    t.history = json.loads(state["history"])
    t.loss_sums = {k: float(v) for k, v in state.get("loss_sums", {}).items()}
