"""The fill network in synthesis (issue 24): what fills the lesion of the pseudo-normal.

A model file may carry a fill network (networks.FILL_NET, fillnet.FillNet; added to a model by
scripts/add_fill_network.py). Then, once G, S and R have run over the networks' grid, G's image
inside the lesion mask M (S's mask, or the user's in review mode) is replaced by the fill
network's fill of the slice voided there, given the other hemisphere and the neighbouring slices
as in its training. Everything else is G's as before: outside M the input with G's change (with
a gated G, its change on M's rim; gated.COVER_RIM), and R's pseudo-abnormal, painted on G(I).

Why: on the BraTS inpainting challenge's protocol, cross-validated over the 12 shared cases
(docs/fill-cv.md), the fill network (400 steps on the 2-core CPU) fills real tissue better than
G's own fill does in review mode and than a ring-mean fill. Files without it fill with G.
"""
from __future__ import annotations

from .fillnet import fill_volume
from .networks import FILL_NET
from .synthesis_grid import NetOutputs


def fill_with_network(model, outs: NetOutputs) -> bool:
    """G's image inside `outs.lesion` replaced by the model's fill network's fill, in place; False
    (nothing changed) when the model has none or there is no lesion."""
    net = model.nets.get(FILL_NET)
    if net is None or not outs.lesion.any():
        return False
    filled = fill_volume(net, outs.I, outs.lesion)
    outs.G[outs.lesion] = filled[outs.lesion]
    return True
