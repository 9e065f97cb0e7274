"""The registry of SMILE's networks: which class makes each role (G, S, R) of each kind.

G, S and R are U-Nets (unet.py); G may instead be the gated G (gated.py, built on unet.UNet).
This module sits above both, so that neither imports the other to build networks.
`build_networks` makes all three from the sizes a model file or a training run records, and the
optional recipe segmentors (`FLAIR_NET`, "S_flair"; `T2_NET`, "S_t2") where the sizes hold them.

S_flair is S for a user who has a FLAIR too (issue 23, item 3): a U-Net over several input
channels (T2, FLAIR, and with the recipe's mirroring both mirrored left-right; flair.py builds
them), giving the same two logits as S. Its sizes carry `in_ch`, so that the network is built
from the sizes alone; the model file's "flair_segmentor" recipe says what the channels are.
S_t2 is the same kind of network on the T2 alone (issue 23, item 2): the T2 and its left-right
mirror, median scaling, trained with flips (scripts/cv_segmentor.py recipe "mirror"); where a model
has it, synthesis without a FLAIR uses it instead of S (its recipe: "t2_segmentor").
"""
from __future__ import annotations

import torch
from torch import nn

from .fillnet import FillNet
from .gated import GatedGenerator
from .unet import Generator, Reconstructor, Segmentor, UNet

FLAIR_NET = "S_flair"
T2_NET = "S_t2"
RECIPE_SEGMENTORS = (FLAIR_NET, T2_NET)   # segmentors whose input channels a recipe in the model file names
FILL_NET = "Fill"   # fillnet.FillNet: what fills the lesion in the pseudo-normal (synthesis_fill.py)


class RecipeSegmentor(nn.Module):
    """S_flair or S_t2: `in_ch` channels (flair.py's segmentor input) -> logits of (background, lesion)."""

    def __init__(self, in_ch: int, base: int = 16, depth: int = 4, norm: str = "batch",
                 upsample: str = "transpose"):
        super().__init__()
        self.unet = UNet(in_ch, 2, base, depth, norm, upsample)

    def forward(self, channels: torch.Tensor) -> torch.Tensor:
        return self.unet(channels)


# role -> {kind: class}; "unet" is every role's default (model files from before "kind" existed)
KINDS = {"G": {"unet": Generator, "gated": GatedGenerator},
         "S": {"unet": Segmentor},
         "R": {"unet": Reconstructor}}
# roles a model file may leave out
OPTIONAL = {FLAIR_NET: {"unet": RecipeSegmentor}, T2_NET: {"unet": RecipeSegmentor}, FILL_NET: {"unet": FillNet}}
GENERATORS = tuple(KINDS["G"])  # ("unet", "gated"): G's designs, `smile train --generator`


def build_networks(sizes: dict) -> dict[str, nn.Module]:
    """sizes: {"G": {"base": 32, "depth": 4, "norm": "batch", "upsample": "bilinear", "kind": "gated"},
    "S": {...}, "R": {...}} ("upsample" may be absent: model files from before it existed use
    "transpose"; G's "kind" likewise, "unet": the paper's residual G; "gated": gated.GatedGenerator),
    and optionally "S_flair": {"in_ch": 4, "base": 16, ...}, "S_t2": {"in_ch": 2, ...}, "Fill": {...}."""
    nets = {}
    roles = {**KINDS, **{name: kinds for name, kinds in OPTIONAL.items() if name in sizes}}
    for name, kinds in roles.items():
        settings = dict(sizes[name])
        kind = settings.pop("kind", "unet")
        if kind not in kinds:
            raise ValueError(f"unknown {name} kind {kind!r}; G is one of {GENERATORS}")
        nets[name] = kinds[kind](**settings)
    return nets
