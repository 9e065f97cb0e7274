"""The gated generator: a G that changes only where it decides the lesion is.

    A = sigmoid(a(I))                 where to change, in [0, 1]
    C = fill(I; weight (1 - A)) + c(I)  what to put there: a smooth fill of the tissue G keeps,
                                        plus a learned residual
    G(I) = (1 - A) * I + A * C

a and c are the two output channels of one U-Net (the paper's G is a U-Net too). Why (DESIGN.md,
the second measurement): the paper's residual G rewrites healthy tissue everywhere (a
checkerboard over every brain, 90 % of a nearly healthy brain's voxels changed by more than 1 %)
and restores the tissue under a lesion worse than a plain fill. Here the identity outside the
lesion holds by construction, and inside it G starts at the quality of lesionfill.smooth_fill.

Choices:
- A below `GATE_FLOOR` counts as 0 in the forward pass (a straight-through estimate keeps its
  gradient), so wherever G does not decide to change, its output is the input exactly, and an
  untrained G (gate bias `GATE_BIAS`: sigmoid(-4) = 0.018) is exactly the identity; a bias much
  lower kept the gate shut through a short training (Adam moves a logit by about lr per step).
- The fill is lesionfill's normalised Gaussian convolution (same sigma), weighted by the brain
  and (1 - A): where A is a binary mask it is exactly `smooth_fill` of that mask; it is
  differentiable in A, so the gate learns from how well the fill fits.
- c's head starts at zero, so an untrained C is the fill itself.
"""
from __future__ import annotations

import torch
from torch import nn

from .lesionfill import FILL_SIGMA, gaussian_blur
from .unet import UNet

GATE_BIAS = -4.0
GATE_FLOOR = 0.02


def soft_fill(image: torch.Tensor, weight: torch.Tensor, sigma: float = FILL_SIGMA) -> torch.Tensor:
    """Normalised convolution of the brain tissue (image > 0) weighted by `weight` (N x 1 x H x W,
    in [0, 1]); where no weighted tissue is within reach, the slice's weighted mean."""
    known = (image > 0).to(image.dtype) * weight
    num = gaussian_blur(image * known, sigma)
    den = gaussian_blur(known, sigma)
    slice_mean = (image * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1e-6)
    return torch.where(den > 1e-3, num / den.clamp(min=1e-3), slice_mean)


def gate(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid, with values below GATE_FLOOR set to exactly 0 in the forward pass only."""
    a = torch.sigmoid(logits)
    return a + ((a * (a >= GATE_FLOOR)) - a).detach()


class GatedGenerator(nn.Module):
    """G: abnormal slice -> pseudo-normal slice, G(I) = (1 - A) I + A C (see the module docstring)."""

    def __init__(self, base: int = 32, depth: int = 4, norm: str = "none", upsample: str = "transpose"):
        super().__init__()
        self.unet = UNet(1, 2, base, depth, norm, upsample)
        nn.init.zeros_(self.unet.head.weight)
        with torch.no_grad():
            self.unet.head.bias.copy_(torch.tensor([GATE_BIAS, 0.0]))

    def parts(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate logits, A, C) for a batch of slices (N x 1 x H x W)."""
        out = self.unet(image)
        logits = out[:, :1]
        A = gate(logits)
        C = soft_fill(image, 1 - A) + out[:, 1:]
        return logits, A, C

    @staticmethod
    def compose(image: torch.Tensor, A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        return (1 - A) * image + A * C

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        _, A, C = self.parts(image)
        return self.compose(image, A, C)
