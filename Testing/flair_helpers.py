"""What the FLAIR tests share (test_flair_input.py, test_slicer_flair.py): a small model file with an
S_flair whose output can be predicted, and a small synthetic case with a FLAIR.

S_flair's weights pass one chosen input channel straight to the lesion logit (20 x channel - 14:
lesion where the channel is above 0.7), so the lesion mask says which channel S_flair saw and where.
The FLAIR has a bright blob (1.0 after the median scaling, tissue 0.4) away from the T2's lesion, so a
mask on the blob is S_flair's and not S's.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from smilecore.modelfile import segmentor_recipe, model_config, save_model
from smilecore.networks import FLAIR_NET, build_networks
from smilecore.synthetic import LPS, make_case

SHAPE = (48, 48, 24)
SIZES = {n: {"base": 4, "depth": 3, "norm": "batch"} for n in "GSR"}


def reading_segmentor(net: nn.Module, channel: int) -> nn.Module:
    """S_flair's U-Net made to pass input `channel` to the lesion logit (20 x it - 14) and nothing else:
    one path through the first down block, the skip connection and the last up block."""
    u = net.unet
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):   # eval mode: the identity (but for its eps)
                m.weight.fill_(1.0)
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
        u.down[0][0].weight[0, channel, 1, 1] = 1.0
        u.down[0][3].weight[0, 0, 1, 1] = 1.0
        width = u.down[0][0].out_channels
        u.up[-1][0].weight[0, width, 1, 1] = 1.0    # the skip's channel 0 (after the up-sampled ones)
        u.up[-1][3].weight[0, 0, 1, 1] = 1.0
        u.head.weight[1, 0] = 20.0
        u.head.bias[1] = -14.0
    return net


def flair_model(path, channel: int = 1, generator: str = "unet"):
    """A model file whose S_flair reads input `channel` (1: the FLAIR; 3: the FLAIR mirrored)."""
    torch.manual_seed(0)
    sizes = {**SIZES, "G": {**SIZES["G"], "kind": generator}, FLAIR_NET: {"in_ch": 4, "base": 4, "depth": 2}}
    nets = build_networks(sizes)
    reading_segmentor(nets[FLAIR_NET], channel)
    config = {**model_config(sizes, "t2"), "flair_segmentor": segmentor_recipe()}
    return save_model(path, nets, config)


def blob_of(shape=SHAPE) -> np.ndarray:
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (x - 16) ** 2 + (y - 30) ** 2 + (z - 12) ** 2 <= 16   # left of centre, posterior


def flair_case(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(T2, FLAIR on its grid, brain, blob): arrays on the LPS grid of smilecore.synthetic; the FLAIR is
    100 in the brain (median scaled to 0.4) and 250 in the blob (1.0 after clipping), 0 outside."""
    t2, _, label = make_case(np.random.default_rng(seed), SHAPE, n_lesions=1)
    t2 = t2.astype(np.float32)
    brain = t2 > 0
    blob = blob_of() & brain
    assert not (blob & (label > 0)).any() and blob.sum() > 100
    flair = np.where(brain, 100.0, 0.0).astype(np.float32)
    flair[blob] = 250.0
    return t2, flair, brain, blob


def coarse_flair(flair: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FLAIR on a 2 mm grid in another voxel order (every other voxel, left-right reversed), with
    the affine that puts it where the 1 mm LPS one is: (array, affine)."""
    coarse = flair[::2, ::2, ::2][::-1].copy()
    affine = LPS @ np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:, 0] *= -1
    affine[:3, 3] = LPS[:3, :3] @ np.array([2.0 * (coarse.shape[0] - 1), 0, 0])
    return coarse, affine


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
