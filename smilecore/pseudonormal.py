"""The pseudo-normal as synthesis composes it, on stacks of cached, normalised slices: G's input
(with neighbouring slices for a 2.5D G), G inside the brain and the input outside, review mode
(the mask filled), and a gated G held open over S's lesion mask (gated.py, coverage). Used by
evaluate.py and benchmark.py, which judge these stacks against known truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .dataset import CachedCase
from .gated import GatedGenerator, context_of, neighbour_index, with_context
from .known_truth import TransplantSet, mean_fill
from .lesionfill import FILL_GROW, fill_lesion_array


@torch.no_grad()
def run_net(net, images: np.ndarray, batch: int = 16, extra=None) -> np.ndarray:
    """`net` on a stack of slices, N x H x W (or N x C x H x W: several input channels), in batches."""
    outs = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch], dtype=np.float32))
        x = x[:, None] if x.dim() == 3 else x
        out = net(x) if extra is None else net(x, torch.from_numpy(extra[i:i + batch].astype(np.float32))[:, None])
        outs.append(out.numpy())
    return np.concatenate(outs)



def G_input(G, images: np.ndarray, z=None) -> np.ndarray:
    """G's input for a stack of slices (N x H x W): N x (2k+1) x H x W for a G that sees k
    neighbouring slices, taken from the stack at axial positions `z` (None: the slices are
    unrelated, each its own neighbour); the stack itself for a 2D G."""
    k = context_of(G)
    if k == 0:
        return images
    return with_context(images, np.arange(len(images)) * 2 if z is None else z, k)


def slices_for_G(G, picks: list[tuple[CachedCase, int]]) -> np.ndarray:
    """G's input for kept slices of cached cases, (case, index) each: N x H x W, or with each
    slice's neighbours N x (2k+1) x H x W for a G that sees k neighbouring slices."""
    k = context_of(G)
    rows = [c.image[neighbour_index(c.z, k)[i]] if k else c.image[i] for c, i in picks]
    return np.stack([np.asarray(r, np.float32) for r in rows])


def _centre(X: np.ndarray) -> np.ndarray:
    """The slices themselves out of G's input (N x H x W, or N x C x H x W with neighbours)."""
    return X if X.ndim == 3 else X[:, X.shape[1] // 2]


def _fill_each(X: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """fill_lesion_array on every slice of G's input, neighbours included, each with its own mask."""
    return fill_lesion_array(X.reshape(-1, *X.shape[-2:]), masks.reshape(-1, *X.shape[-2:]),
                             FILL_GROW).reshape(X.shape)


def pseudo_normal(G, X: np.ndarray, batch: int = 16, S=None) -> np.ndarray:
    """G's output inside the brain, the input outside (as synthesis writes it); N x H x W.
    X: the slices (N x H x W) or G's input with neighbours (`G_input`). With `S`, a gated G is
    held open over S's lesion mask and its rim, as synthesis holds it (gated.COVER_RIM)."""
    images = _centre(X)
    return np.where(images > 0, run_net(G, X, batch, covered_by(G, S, images, batch))[:, 0], images)


def covered_by(G, S, images: np.ndarray, batch: int = 16) -> np.ndarray | None:
    """S's lesion mask (p > 0.5) on `images` (N x H x W) when G is gated and S given, else None."""
    if S is None or not isinstance(G, GatedGenerator):
        return None
    return run_net(S, images, batch).argmax(1) > 0


def pseudo_normal_mask_given(G, X: np.ndarray, masks: np.ndarray, batch: int = 16) -> np.ndarray:
    """Review mode as synthesis runs it (lesion_fill "smooth"): the input outside the mask and,
    inside it, G on the input with the mask filled (in the neighbouring slices too, each with
    its own mask: `masks` has X's shape)."""
    return np.where(_centre(masks), run_net(G, _fill_each(X, masks), batch)[:, 0], _centre(X))


def pseudo_normal_S_mask_fill(G, S, X: np.ndarray, batch: int = 16) -> np.ndarray:
    """The tried, unshipped addition: G on the input with S's own lesion mask filled (G's whole
    output, as `identity` is computed for G alone)."""
    flat = X.reshape(-1, *X.shape[-2:])
    masks = (run_net(S, flat, batch).argmax(1) > 0).reshape(X.shape)
    return run_net(G, _fill_each(X, masks), batch)[:, 0]


def known_truth_figure(G, transplants: TransplantSet, path: str | Path, rows: int = 6, S=None) -> Path:
    """The first `rows` transplanted lesions: lesion | pseudo-normal | with the mask given
    (review mode) | healthy truth | mean fill, as PNG (`S`: as `pseudo_normal`)."""
    from .overview import grid_figure
    k = slice(0, rows)
    image, lesion = transplants.image[k], transplants.lesion[k]
    X, MX = (a[k] for a in transplants.G_input(context_of(G)))
    pn, given = pseudo_normal(G, X, S=S), pseudo_normal_mask_given(G, X, MX)
    labels = [f"{r} z{rz} <- {d} z{dz}" for r, rz, d, dz in transplants.source[k]]
    return grid_figure(Path(path), [image, pn, given, transplants.truth[k], mean_fill(image, lesion)],
                       ["transplanted lesion", "pseudo-normal", "mask given", "healthy truth", "mean fill"], labels)
