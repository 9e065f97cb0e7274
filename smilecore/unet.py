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
