"""Data-parallel training over several processes (`torchrun --nproc_per_node N smile-train ...`).

Semantics: the same training as one process. Every optimisation step takes the same global
batch of `batch_size` slices (the same seeded order and crops); process r of N gets every N-th
slice of it, so together the processes see exactly the slices one process would. After each
backward the gradients of the networks being updated are averaged over processes (one
all-reduce of a flat buffer per network), so the update is the one-process update of the mean
loss, up to floating-point summation order and to BatchNorm, which normalises each process's
share of the batch with its own statistics (running statistics are averaged at every epoch end
and before a checkpoint). The confidence enhancer's epoch statistics are summed over processes,
so eps is the same everywhere. Process 0 alone writes checkpoints, events and the model.

Why not torch's DistributedDataParallel wrapper: a SMILE step runs G twice (with the paired
term), uses S frozen inside G's loss and updates S, G and R by separate optimisers; DDP's reducer
expects one forward per backward with every parameter receiving a gradient. Averaging the
gradients explicitly is the same arithmetic for this case.

Backend: NCCL on CUDA, gloo on CPU (the CPU path is what the tests run).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched() -> bool:
    """True in a process started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> None:
    if launched() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def local_device(device: torch.device) -> torch.device:
    """One GPU per process: cuda:LOCAL_RANK when launched on CUDA."""
    if launched() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard(items: list, batch_size: int) -> list:
    """This process's items: every N-th of each consecutive global batch."""
    n, r = world_size(), rank()
    if n == 1:
        return items
    return [it for k in range(0, len(items), batch_size) for it in items[k:k + batch_size][r::n]]


def broadcast_parameters(net: torch.nn.Module) -> None:
    if world_size() > 1:
        for t in net.state_dict().values():
            dist.broadcast(t, src=0)


def average_gradients(net: torch.nn.Module) -> None:
    if world_size() == 1:
        return
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def average_buffers(net: torch.nn.Module) -> None:
    """BatchNorm running statistics: the mean over processes."""
    if world_size() == 1:
        return
    for name, buf in net.named_buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= world_size()


def sum_values(values: dict, device: torch.device) -> dict:
    """Numbers summed over processes (types kept)."""
    if world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: type(values[k])(v) for k, v in zip(keys, t.tolist())}


def all_true(flag: bool, device: torch.device) -> bool:
    """True when `flag` holds in every process (so all stop together, none waits forever)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
