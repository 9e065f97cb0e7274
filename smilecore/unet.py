"""The three networks of SMILE, all U-Nets.

`UNet(in_ch, out_ch, base, depth)`: `depth` 2x2 down-samplings, channel width doubling each
level from `base`. Any slice size works: the input is zero-padded to a multiple of 2**depth
(zero is background in a skull-stripped image) and the output cropped back.

Normalisation (`norm`): "batch" (BatchNorm) or "none". Models are trained on crops (on a
CPU) and applied to whole slices, so at inference every pixel's output must depend only on the
pixels around it: true without normalisation and with BatchNorm in eval mode (fixed running
statistics), false for GroupNorm/InstanceNorm, which normalise over the field of view: an S
with GroupNorm trained on 128-pixel crops of BraTS T2 scored Dice 0.74 on lesion-centred crops
of validation slices and 0.06 on the same slices whole. Without normalisation the nets train
markedly slower (long all-background plateaus of S). Convolutions get He initialisation for
the leaky ReLU.

G predicts a change to its input (G(I) = I + U(I), U's last layer initialised to zero) so
that returning a healthy slice unchanged is where training starts; R likewise paints onto the
pseudo-normal image it is given.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


SLOPE = 0.1  # leaky ReLU


def _conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    nn.init.kaiming_normal_(conv.weight, a=SLOPE, nonlinearity="leaky_relu")
    nn.init.zeros_(conv.bias)
    return conv


NORMS = ("none", "batch")
UPSAMPLINGS = ("transpose", "bilinear")


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str = "none"):
        layers = []
        for a, b in ((cin, cout), (cout, cout)):
            layers.append(_conv(a, b))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.LeakyReLU(SLOPE, inplace=True))
        super().__init__(*layers)


def aligned_span(first: int, last: int, size: int, multiple: int, margin: int) -> slice:
    """Indices `first`..`last` widened by `margin` and put on a U-Net's down-sampling grid
    (multiples of `multiple` from 0), within 0..`size`: a U-Net is not shift-invariant off that grid."""
    return slice(max(0, first - margin) // multiple * multiple, min(size, -(-(last + 1 + margin) // multiple) * multiple))


def box_around(mask: torch.Tensor, multiple: int, margin: int) -> tuple[slice, slice] | None:
    """The in-plane box (aligned_span) of what a stack of masks (N x 1 x H x W) marks; None when
    nothing is marked."""
    flat = mask.flatten(0, 1) > 0
    box = []
    for hit, size in ((flat.any(2).any(0), flat.shape[1]), (flat.any(1).any(0), flat.shape[2])):
        idx = torch.nonzero(hit)[:, 0]
        if len(idx) == 0:
            return None
        box.append(aligned_span(int(idx[0]), int(idx[-1]), size, multiple, margin))
    return tuple(box)


def folded(net: nn.Module) -> nn.Module:
    """A copy of `net` for inference, each BatchNorm folded into the convolution before it (same
    function up to rounding, one pass over the feature maps less: 6-10 % less CPU time for a
    width-16 U-Net on the 2-core CPU). `net` itself unchanged; a net whose BatchNorm is in
    training mode (it uses the batch's statistics) is returned as it is."""
    if any(m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        return net
    net = copy.deepcopy(net)
    for block in net.modules():
        if isinstance(block, ConvBlock):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    return net


def _upsampler(cin: int, cout: int, kind: str) -> nn.Module:
    """2x up-sampling from `cin` to `cout` channels. "transpose": a 2x2 transposed convolution,
    stride 2 (the original U-Net; its kernel pattern tends to leave a checkerboard in residual
    outputs such as G's); "bilinear": bilinear interpolation, then a 1x1 convolution (smooth)."""
    if kind == "transpose":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(cin, cout, 1))


class UNet(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, base: int = 32, depth: int = 4, norm: str = "none",
                 upsample: str = "transpose"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown normalisation {norm!r}; choose from {NORMS}")
        if upsample not in UPSAMPLINGS:
            raise ValueError(f"unknown up-sampling {upsample!r}; choose from {UPSAMPLINGS}")
        self.config = {"in_ch": in_ch, "out_ch": out_ch, "base": base, "depth": depth, "norm": norm,
                       "upsample": upsample}
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([ConvBlock(in_ch, widths[0], norm)] +
                                  [ConvBlock(widths[i], widths[i + 1], norm) for i in range(depth)])
        self.upsample = nn.ModuleList([_upsampler(widths[i + 1], widths[i], upsample)
                                       for i in reversed(range(depth))])
        self.up = nn.ModuleList([ConvBlock(2 * widths[i], widths[i], norm) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], out_ch, 1)
        self.multiple = 2 ** depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for upsample, block in zip(self.upsample, self.up):
            x = block(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)[..., :h, :w]


def _zero_head(unet: UNet) -> UNet:
    """A residual network starting as the identity: training begins from "change nothing"."""
    nn.init.zeros_(unet.head.weight)
    nn.init.zeros_(unet.head.bias)
    return unet


class Generator(nn.Module):
    """G: abnormal slice -> pseudo-normal slice (1 -> 1 channel)."""

    def __init__(self, base: int = 32, depth: int = 4, norm: str = "none", upsample: str = "transpose"):
        super().__init__()
        self.unet = _zero_head(UNet(1, 1, base, depth, norm, upsample))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image + self.unet(image)


class Segmentor(nn.Module):
    """S: slice -> logits of (background, lesion)."""

    def __init__(self, base: int = 32, depth: int = 4, norm: str = "none", upsample: str = "transpose"):
        super().__init__()
        self.unet = UNet(1, 2, base, depth, norm, upsample)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.unet(image)


class Reconstructor(nn.Module):
    """R: (pseudo-normal slice, lesion mask) -> pseudo-abnormal slice with a lesion at the mask."""

    def __init__(self, base: int = 32, depth: int = 4, norm: str = "none", upsample: str = "transpose"):
        super().__init__()
        self.unet = _zero_head(UNet(2, 1, base, depth, norm, upsample))

    def forward(self, pseudo_normal: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pseudo_normal + self.unet(torch.cat([pseudo_normal, mask], dim=1))
