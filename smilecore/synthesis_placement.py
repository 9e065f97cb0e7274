"""Where synthesis runs its networks, and what it does when a batch runs out of memory
(synthesis.py's module docstring, "Out of memory"): a batch is retried at half the size, down to
one slice; then, on an accelerator, on the CPU; the networks go back to their device afterwards."""
from __future__ import annotations

import numpy as np
import torch

from .modelfile import SmileModel


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError))


def _is_accelerator(device: torch.device) -> bool:
    return device.type != "cpu"


# Weights are moved or re-laid outside inference mode: re-made inside it they would become
# inference tensors, and the model could no longer be trained after a synthesis.
def _move(model: SmileModel, device: torch.device):
    with torch.inference_mode(False), torch.no_grad():
        model.to(device)


def _release(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


class Placement:
    """Where the networks run: their own device (`home`), or the CPU once one slice did not fit on
    an accelerator; `after_out_of_memory` picks the retry, `return_home` moves them back."""

    def __init__(self, model: SmileModel, tell, where: str):
        self.model, self.tell, self.where = model, tell, where
        self.device = self.home = next(model.nets["G"].parameters()).device
        self.moved = False

    def after_out_of_memory(self, batch: int, batch_size: int, failure: str, image: np.ndarray) -> int:
        """The batch size to retry with: half of `batch`, down to one slice, then (an accelerator
        only, once) `batch_size` on the CPU; a RuntimeError when even one slice fails on the CPU."""
        _release(self.device)
        if batch > 1:
            batch = max(1, batch // 2)
            self.tell(f"{self.where}: out of memory on {self.device} ({failure}); retrying with {batch} "
                      f"slice{'s' if batch > 1 else ''} per batch")
            return batch
        if _is_accelerator(self.device) and not self.moved:
            self.tell(f"{self.where}: out of memory on {self.device} even one slice at a time; continuing "
                      "on the CPU (slower)")
            self.device, self.moved = torch.device("cpu"), True
            _move(self.model, self.device)
            _release(self.home)
            return max(1, int(batch_size))
        raise RuntimeError(f"{self.where}: out of memory on {self.device} even for one slice of "
                           f"{image.shape[1]} x {image.shape[2]} pixels ({failure})")

    def return_home(self):
        """Back to `home` after a CPU fallback; wholly on the CPU if that runs out of memory (a
        partial move would leave the networks on two devices)."""
        if not self.moved:
            return
        back = None
        try:
            _move(self.model, self.home)
            back = True
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
        if not back:
            _move(self.model, torch.device("cpu"))
            _release(self.home)
            self.tell(f"the model stays on the CPU: moving it back to {self.home} ran out of memory")
