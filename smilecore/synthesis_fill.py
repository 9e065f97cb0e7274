"""The fill network in synthesis (issue 24): what fills the lesion of the pseudo-normal.

A model file may carry a fill network (networks.FILL_NET, fillnet.FillNet; added to a model by
scripts/add_fill_network.py). Then, once G, S and R have run over the networks' grid, G's image
inside the lesion mask M (S's mask, or the user's in review mode) is replaced by the fill
network's fill of the slice voided there, given the other hemisphere and the neighbouring slices
as in its training. Everything else is G's as before: outside M the input with G's change (with
a gated G, its change on M's rim; gated.COVER_RIM), and R's pseudo-abnormal, painted on G(I).

Why: on the BraTS inpainting challenge's protocol, cross-validated over the 12 shared cases
(docs/fill-cv.md), the fill network (4000 steps on the 2-core CPU) fills real tissue better than
G's own fill does in review mode and than a ring-mean fill. Files without it fill with G.
"""
from __future__ import annotations

from scipy import ndimage

import numpy as np

from .fillnet import fill_volume
from .gated import COVER_RIM
from .known_truth import ring_mean_fill
from .networks import FILL_NET
from .synthesis_grid import NetOutputs
from .unet import folded

# ring_matched on S's lesion too: +0.16 dB PSNR on pasted tumours in every fold, but S then finds
# more of the brighter fill again (h lower in every case measured; docs/pasted-truth.md): off
RING_MATCH_WITHOUT_MASK = False


def open_rim(model) -> int:
    """Pixels around S's lesion where G replaces the input with its own fill: a gated G is held
    open over the lesion and COVER_RIM px around it, and its gate is widened by `grow` more."""
    G = model.config["networks"]["G"]
    return COVER_RIM + (int(G.get("grow", 0)) if G.get("kind") == "gated" else 0)


def fill_with_network(model, outs: NetOutputs, user_mask: bool, threshold: float) -> bool:
    """G's image replaced by the model's fill network's fill, in place, inside the lesion mask
    (`user_mask`: the user's, in review mode, where the output keeps the input outside it) or inside
    S's lesion and those pixels of its rim (`open_rim`, in-plane) that G changed: else G's darker
    fill shows as a dark contour around the network's, and a rim filled whole would change tissue
    that G leaves exactly as it is (a gated G's output is the input wherever its gate is shut).
    In review mode each part of the fill is then given the ring's mean (`ring_matched`). False
    (nothing changed) when the model has no fill network or there is no lesion.

    The network sees the other hemisphere with the lesions known there zeroed, as in its training
    (the case's own tumour); here that is what S finds (p above `threshold`): with a tumour left in
    that channel, a network trained 4000 steps copied it into the fill (docs/fill-cv.md)."""
    net = model.nets.get(FILL_NET)
    if net is None or not outs.lesion.any():
        return False
    hole = outs.lesion
    if not user_mask:
        r = open_rim(model)
        hole = hole | (ndimage.maximum_filter(hole, size=(2 * r + 1, 2 * r + 1, 1)) & (outs.G != outs.I))
    filled = fill_volume(folded(net), outs.I, hole, tumour=outs.prob > threshold)   # BatchNorm folded (unet.folded)
    if user_mask or RING_MATCH_WITHOUT_MASK:
        filled = ring_matched(filled, outs.I, hole)
    outs.G[hole] = filled[hole]
    return True


def ring_matched(filled: np.ndarray, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """`filled` with each 3D part of `hole` shifted so that its mean is the ring-mean fill's there
    (each axial slice's part given the mean of a 5 px ring of brain around it). The network fills
    darker than the tissue it replaces (0.93 of the truth's mean); the ring's mean is within 3 %
    of it (docs/fill-cv.md). Review mode only (RING_MATCH_WITHOUT_MASK): around S's mask the ring
    holds the tumour's bright edge, and the brighter fill is lesion to S again."""
    ring = ring_mean_fill(image, hole)
    labels, n = ndimage.label(hole)
    index = np.arange(1, n + 1)
    shift = np.asarray(ndimage.mean(ring, labels, index)) - np.asarray(ndimage.mean(filled, labels, index))
    out = np.array(filled, np.float32, copy=True)
    out[hole] = np.maximum(out[hole] + shift[labels[hole] - 1], 0)
    return out
