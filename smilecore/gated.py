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
- A below its floor (`GATE_FLOOR` unless set; the shipped default uses 0.8) counts as 0 in the
  forward pass (a straight-through estimate keeps its gradient), so wherever G does not decide
  to change, its output is the input exactly, and an untrained G (gate bias `GATE_BIAS`:
  sigmoid(-4) = 0.018) is exactly the identity; a bias much lower kept the gate shut through a
  short training (Adam moves a logit by about lr per step). `grow` widens the open gate by that
  many pixels (a maximum filter), so that it covers the lesion's rim.
- `from_segmentor` starts the gate as a trained S's lesion probability (a warm start).
- Coverage (issue 23): what S marks, the pseudo-normal removes. At synthesis the gate is held
  open over S's lesion mask and `COVER_RIM` px around it (`cover`), whatever the gate learned, so
  no training of the gate can narrow it below S's lesion; training itself runs without `cover`.
- The fill is lesionfill's normalised Gaussian convolution (`soft_fill`), weighted by the brain
  and (1 - A): where A is a binary mask it is exactly `smooth_fill` of that mask; it is
  differentiable in A, so the gate learns from how well the fill fits.
- c's head starts at zero, so an untrained C is the fill itself.
- `context` k (2.5D, `--context-slices`): G sees the k axial slices above and below as extra
  input channels (`neighbour_index` builds them: a neighbour the stack lacks is replaced by the
  nearest slice towards the centre), for detection; A, C and the output are the centre slice's.
  `widened` turns a 2D G into one whose neighbour channels have zero weight: it starts exactly
  where the 2D G is (a warm start that begins at the baseline).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .lesionfill import soft_fill
from .defaults import GATE_FLOOR  # noqa: F401  (importable from here)
from .unet import UNet

GATE_BIAS = -4.0
COVER_RIM = 2  # px around S's lesion held open at synthesis (the shipped default's `grow` too)


def gate(logits: torch.Tensor, floor: float = GATE_FLOOR) -> torch.Tensor:
    """sigmoid, with values below `floor` set to exactly 0 in the forward pass only."""
    a = torch.sigmoid(logits)
    return a + ((a * (a >= floor)) - a).detach()


def neighbour_index(z, k: int) -> np.ndarray:
    """For a stack of slices at increasing axial positions `z`, an N x (2k+1) array whose row i
    holds the stack indices of the slices at z[i]-k .. z[i]+k; a position the stack lacks (the
    volume's end, a slice dropped for having too little brain) takes the nearest slice towards
    the centre, so a slice at the edge sees itself repeated."""
    where = {int(v): i for i, v in enumerate(z)}
    index = np.empty((len(where), 2 * k + 1), np.int64)
    for i, zi in enumerate(int(v) for v in z):
        for j, d in enumerate(range(-k, k + 1)):
            while zi + d not in where:
                d -= int(np.sign(d))
            index[i, j] = where[zi + d]
    return index


def with_context(stack: np.ndarray, z, k: int) -> np.ndarray:
    """G's input for a stack of slices (N x H x W at axial positions `z`): N x (2k+1) x H x W."""
    return np.asarray(stack)[neighbour_index(z, k)]


def context_of(G: nn.Module) -> int:
    """How many slices above and below G sees (0: the paper's G, or a 2D gated G)."""
    return int(getattr(G, "context", 0))


class GatedGenerator(nn.Module):
    """G: abnormal slice -> pseudo-normal slice, G(I) = (1 - A) I + A C (see the module docstring).
    Its input is N x (2 context + 1) x H x W, the slice itself in the middle channel."""

    def __init__(self, base: int = 32, depth: int = 4, norm: str = "none", upsample: str = "transpose",
                 grow: int = 0, floor: float = GATE_FLOOR, context: int = 0):
        super().__init__()
        self.grow, self.floor, self.context = int(grow), float(floor), int(context)
        self.unet = UNet(2 * self.context + 1, 2, base, depth, norm, upsample)
        nn.init.zeros_(self.unet.head.weight)
        with torch.no_grad():
            self.unet.head.bias.copy_(torch.tensor([GATE_BIAS, 0.0]))

    @classmethod
    def from_segmentor(cls, S: nn.Module, context: int = 0, **gate) -> "GatedGenerator":
        """A gated G whose gate starts as segmentor S's lesion probability and whose C starts as
        the fill (a warm start: G begins where S's mask filled by `soft_fill` is). S's U-Net has
        the same shape; its two logits (background, lesion) give the gate logit as their
        difference, since softmax over two classes is the sigmoid of that difference."""
        c = S.unet.config
        G = cls(c["base"], c["depth"], c["norm"], c["upsample"], **gate)
        weights = dict(S.unet.state_dict())
        w, b = weights["head.weight"], weights["head.bias"]
        weights["head.weight"] = torch.cat([w[1:2] - w[:1], torch.zeros_like(w[:1])])
        weights["head.bias"] = torch.stack([b[1] - b[0], torch.zeros_like(b[0])])
        G.unet.load_state_dict(weights)
        return G.widened(context) if context else G

    def widened(self, context: int) -> "GatedGenerator":
        """This G seeing `context` slices above and below: the neighbours' input weights are zero,
        so its output is this G's, exactly, until training gives them weight."""
        if context < self.context:
            raise ValueError(f"a G seeing {self.context} neighbouring slices cannot be narrowed to {context}")
        c = self.unet.config
        G = GatedGenerator(c["base"], c["depth"], c["norm"], c["upsample"], self.grow, self.floor, context)
        weights = dict(self.unet.state_dict())
        first = next(name for name in weights if name.endswith("weight") and weights[name].dim() == 4)
        w = weights[first]
        wide = torch.zeros(w.shape[0], 2 * context + 1, *w.shape[2:], dtype=w.dtype)
        shift = context - self.context
        wide[:, shift:shift + w.shape[1]] = w
        weights[first] = wide
        G.unet.load_state_dict(weights)
        return G

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """The slice itself (N x 1 x H x W) out of G's input with its neighbours."""
        return x[:, self.context:self.context + 1]

    def parts(self, x: torch.Tensor, cover: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate logits, A, C) for a batch of slices with their neighbours (N x (2 context + 1) x H x W).
        `cover` (N x 1 x H x W, 0 or 1): a lesion mask over which, with its COVER_RIM px rim, A is 1."""
        out = self.unet(x)
        image = self.centre(x)
        logits = out[:, :1]
        A = gate(logits, self.floor)
        if self.grow:  # the gate's largest value within `grow` pixels: it covers the lesion's rim
            A = F.max_pool2d(A, 2 * self.grow + 1, stride=1, padding=self.grow)
        if cover is not None:
            A = torch.maximum(A, F.max_pool2d(cover.to(A.dtype), 2 * COVER_RIM + 1, stride=1, padding=COVER_RIM))
        C = soft_fill(image, 1 - A) + out[:, 1:]
        return logits, A, C

    @staticmethod
    def compose(image: torch.Tensor, A: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        return (1 - A) * image + A * C

    def forward(self, x: torch.Tensor, cover: torch.Tensor | None = None) -> torch.Tensor:
        _, A, C = self.parts(x, cover)
        return self.compose(self.centre(x), A, C)
