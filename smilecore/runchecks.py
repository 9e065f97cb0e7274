"""What a training run checks besides its steps (train.Trainer): validation after every epoch,
and the errors that stop a run with a way out (a non-finite loss, a GPU out of memory).

Each function takes the trainer (`t`) whose run it checks.
"""
from __future__ import annotations

import numpy as np
import torch

from .checkpoints import CHECKPOINT_NAME
from .dataset import collate
from .events import PHASE_NAMES


@torch.no_grad()
def validate(t, phase: int) -> dict[str, float]:
    """Cheap checks on validation slices: Dice of S (pooled over abnormal slices), G's
    change to normal slices (mean squared), and R's reconstruction error after phase 1."""
    if len(t.val_set) == 0:
        return {}
    G, S, R = (t.nets[n].eval() for n in "GSR")
    n = len(t.val_set)
    idx = np.unique(np.linspace(0, n - 1, min(n, t.cfg.max_val_slices)).astype(int))
    inter = total = 0.0
    normal_err, recons_err, n_normal = 0.0, 0.0, 0
    for chunk in np.array_split(idx, max(1, len(idx) // t.cfg.batch_size)):
        b = collate([t.val_set[(int(i), 0, 0)] for i in chunk])
        X, M = b["image"].to(t.device), b["mask"].to(t.device)
        I = X[:, t.cfg.context_slices:t.cfg.context_slices + 1]
        with t._autocast():
            G_I = G(X).float()
            pred = S(I).argmax(1)
            Pab = R(G_I, M[:, None].float()).float() if phase >= 2 else None
        inter += float((pred * M).sum())
        total += float(pred.sum() + M.sum())
        normal = M.flatten(1).sum(1) == 0
        if normal.any():
            normal_err += float(((G_I - I)[normal] ** 2).mean()) * int(normal.sum())
            n_normal += int(normal.sum())
        if Pab is not None:
            recons_err += float(((Pab - I) ** 2).mean()) * len(chunk)
    t._set_modes(phase)
    out = {"dice_S": 2 * inter / total if total > 0 else float("nan")}
    if n_normal:
        out["normal_mse_G"] = normal_err / n_normal
    if phase >= 2:
        out["recons_mse"] = recons_err / len(idx)
    return out


def non_finite_loss(t, names: str, terms: dict[str, torch.Tensor]) -> FloatingPointError:
    """The error for an update of the networks `names` whose loss is not finite: which terms,
    where in the run, and which checkpoint is kept."""
    bad = [f"{k} = {float(v.detach())}" for k, v in terms.items() if not torch.isfinite(v)] or \
        ["(in another training process)"]
    ckpt = t.out / CHECKPOINT_NAME
    try:  # the step of the checkpoint on disk (weights_only, memory-mapped: cheap)
        kept = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["position"]
        kept = f"the last good checkpoint, {ckpt} (global step {kept['global_step']}), is kept"
    except Exception:
        kept = (f"the last checkpoint, {ckpt}, is kept" if ckpt.is_file()
                else f"no checkpoint had been written yet in {t.out}")
    return FloatingPointError(
        f"loss term(s) {', '.join(bad)} in the update of {'/'.join(names)} at phase {t._phase} "
        f"({PHASE_NAMES[t._phase]}), epoch {t.position['epoch'] + 1}, step "
        f"{t.position['step'] + 1} (global step {t.position['global_step'] + 1}); training "
        f"stopped and {kept}. Start a new run with a lower --lr"
        + (" or with --no-amp" if t.amp else "") + " (--resume would repeat the same steps)")


def out_of_memory(t, phase: int, batch: dict) -> torch.cuda.OutOfMemoryError:
    """The error for a training step that ran out of GPU memory, with the largest batch size
    (a power-of-two share of the current one) that fits, found by trying two steps of it on
    the same slices in the hungriest phase of the run (phase 4 trains all three networks;
    the second step runs with every optimizer state allocated). The checkpoint on disk is
    untouched; in-memory weights no longer matter."""
    size, shape = len(batch["image"]), tuple(batch["image"].shape[-2:])
    fits, k = None, size // 2
    while k >= 1 and fits is None:
        if t.device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            for _ in range(2):
                t.train_step(max(t.cfg.phases), {key: v[:k] for key, v in batch.items()})
            fits = k
        except torch.cuda.OutOfMemoryError:
            k //= 2
    where = (f"phase {phase}, epoch {t.position['epoch'] + 1}, step {t.position['step'] + 1}, with "
             f"batch size {size} of {shape[0]} x {shape[1]} slices on {t.device}")
    if fits:
        advice = (f"batch size {fits} fits a trial of the largest phase: start the run again with "
                  f"--batch-size {fits} (halve it if memory still runs out; --resume keeps the run's "
                  "own batch size)")
    else:
        advice = ("even one slice does not fit: train on crops (--crop 128) or smaller networks "
                  "(--base), or use --device cpu")
    return torch.cuda.OutOfMemoryError(f"out of GPU memory in training at {where}; {advice}")
