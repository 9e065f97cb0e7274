"""The registry of SMILE's networks: which class makes each role (G, S, R) of each kind.

G, S and R are U-Nets (unet.py); G may instead be the gated G (gated.py, built on unet.UNet).
This module sits above both, so that neither imports the other to build networks.
`build_networks` makes all three from the sizes a model file or a training run records.
"""
from __future__ import annotations

from torch import nn

from .gated import GatedGenerator
from .unet import Generator, Reconstructor, Segmentor

# role -> {kind: class}; "unet" is every role's default (model files from before "kind" existed)
KINDS = {"G": {"unet": Generator, "gated": GatedGenerator},
         "S": {"unet": Segmentor},
         "R": {"unet": Reconstructor}}
GENERATORS = tuple(KINDS["G"])  # ("unet", "gated"): G's designs, `smile train --generator`


def build_networks(sizes: dict) -> dict[str, nn.Module]:
    """sizes: {"G": {"base": 32, "depth": 4, "norm": "batch", "upsample": "bilinear", "kind": "gated"},
    "S": {...}, "R": {...}} ("upsample" may be absent: model files from before it existed use
    "transpose"; G's "kind" likewise, "unet": the paper's residual G; "gated": gated.GatedGenerator)."""
    nets = {}
    for name, kinds in KINDS.items():
        settings = dict(sizes[name])
        kind = settings.pop("kind", "unet")
        if kind not in kinds:
            raise ValueError(f"unknown {name} kind {kind!r}; G is one of {GENERATORS}")
        nets[name] = kinds[kind](**settings)
    return nets
