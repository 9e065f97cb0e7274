"""A fill network trained self-supervised, the way the strongest inpainting-challenge entries
train (issue 24): no labels are needed, every slice of every training case counts.

Training (`train_fillnet`): on each slice, a lesion-shaped hole is voided (set to 0) in healthy
brain: a real tumour mask of a training case (any slice, randomly rotated, scaled, flipped and
placed) or a random blob (smoothed noise, thresholded). The case's own tumour (grown by
TUMOUR_MARGIN) is never in a hole, since the healthy tissue under it is unknown. The network
sees (`net_input`) the voided slice, the hole, the other hemisphere (the voided slice mirrored
left-right about the centre of the case's brain, flair.mirror_sum, before any crop; the case's
own tumour zeroed in it, since it is no healthy donor) and the voided neighbouring slices above
and below (2.5D; their holes are the same
hole grown or shrunk by up to 2 pixels, as a 3D mask's sections change from slice to slice).
It adds a change to a start inside the hole; outside it the input is kept exactly (`FillNet`).
The start (STARTS) is lesionfill.smooth_fill, or lesionfill.mirror_fill: the smooth fill plus the
mirrored hemisphere's texture, so that a short training begins at a textured fill.
Loss: L1 inside the hole plus (1 - SSIM) over the hole and a ring of SSIM_RING pixels around
it: L1 alone, like MSE, is content with a blur; SSIM asks for the local contrast and structure.
Optionally (`texture` > 0) a texture term: how far the fill's local gradient energy (in-plane
gradient magnitude, blurred over TEXTURE_SIGMA px) is from the truth's inside the hole. It asks
for as much texture as the truth has where the truth has it, not for the truth's exact edges,
which a fill cannot know deep inside a large hole.

Inference (`fill_volume`): every axial slice that holds the mask, with its neighbours as they
are in the voided volume.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from .flair import mirror_sum, mirrored
from .lesionfill import MIRROR_ALPHA, grow, mirror_fill, smooth_fill
from .unet import UNet, box_around

IN_CH = 5            # voided slice, hole, the other hemisphere, voided slice below, above
STARTS = ("smooth", "mirror")
TUMOUR_MARGIN = 3    # pixels around a case's own tumour never voided in training
SSIM_RING = 5        # pixels around the hole where the SSIM loss also counts
TEXTURE_SIGMA = 2.0  # pixels: the scale over which the texture term compares gradient energy
MIN_HOLE = 50        # pixels: smaller holes are drawn again
BLOB_SHARE = 0.3     # share of holes that are random blobs rather than tumour shapes
CROP_MARGIN = 32     # pixels around the holes that fill_volume gives the network (the smooth start reaches 30)


class FillNet(nn.Module):
    """A U-Net that fills a hole; outside the hole its output is the voided input exactly.
    Inside, it adds a change to a start (`start`: the smooth fill, or the smooth fill plus the
    mirrored hemisphere's texture; also an input channel), the change starting from zero:
    training begins at the start's quality, not at a black hole."""

    def __init__(self, base: int = 16, depth: int = 3, start: str = "smooth", alpha: float = MIRROR_ALPHA):
        super().__init__()
        if start not in STARTS:
            raise ValueError(f"FillNet start {start!r}: not one of {', '.join(STARTS)}")
        self.unet = UNet(IN_CH + 1, 1, base, depth, norm="batch", upsample="bilinear")
        nn.init.zeros_(self.unet.head.weight)
        nn.init.zeros_(self.unet.head.bias)
        self.config = {"base": base, "depth": depth, "start": start, "alpha": alpha}

    def start(self, x: torch.Tensor) -> torch.Tensor:
        voided, hole, other = x[:, :1], x[:, 1:2], x[:, 2:3]
        if self.config["start"] == "mirror":
            return mirror_fill(voided, hole, other, self.config["alpha"])
        return smooth_fill(voided, hole)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        voided, hole, start = x[:, :1], x[:, 1:2], self.start(x)
        return torch.where(hole > 0, start + self.unet(torch.cat([x, start], 1)), voided)


def other_side(voided: np.ndarray, tumour: np.ndarray | None, total: int) -> np.ndarray:
    """The other hemisphere of (..., X, Y) slices: the voided slices with the case's own tumour
    zeroed (no healthy donor), mirrored left-right about total / 2 (flair.mirror_sum)."""
    return mirrored(voided if tumour is None else np.where(tumour, 0, voided), total)


def net_input(voided: torch.Tensor, hole: torch.Tensor, other: torch.Tensor, below: torch.Tensor,
              above: torch.Tensor) -> torch.Tensor:
    """The network's channels from N x 1 x X x Y slices (all voided already; `other`: other_side)."""
    return torch.cat([voided, hole, other, below, above], 1)


# ---- the loss --------------------------------------------------------------------------------
def _blur(x: torch.Tensor, sigma: float = 1.5, size: int = 11) -> torch.Tensor:
    t = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    x = F.pad(x, (size // 2,) * 4, mode="reflect")
    return F.conv2d(F.conv2d(x, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM of each pixel (N x 1 x H x W), Gaussian window 11 / sigma 1.5 as the challenge."""
    mu_a, mu_b = _blur(a), _blur(b)
    var_a = (_blur(a * a) - mu_a ** 2).clamp(min=0)
    var_b = (_blur(b * b) - mu_b ** 2).clamp(min=0)
    cov = _blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """In-plane gradient magnitude (central differences, as np.gradient and the protocol's measure)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    gy = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    return torch.sqrt(gx * gx + gy * gy + 1e-10)


def texture_gap(filled: torch.Tensor, truth: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Mean |local gradient energy of the fill - the truth's| inside the hole (0 for the truth)."""
    energy = lambda x: _blur(gradient_magnitude(x), TEXTURE_SIGMA, 4 * int(TEXTURE_SIGMA) + 1)  # noqa: E731
    return (energy(filled) - energy(truth)).abs()[hole > 0].mean()


def fill_loss(filled: torch.Tensor, truth: torch.Tensor, hole: torch.Tensor, texture: float = 0.0) -> torch.Tensor:
    """L1 inside the hole + (1 - SSIM) over the hole and a ring around it (+ texture x texture_gap)."""
    inside = hole > 0
    l1 = (filled - truth).abs()[inside].mean()
    near = grow(hole, SSIM_RING) > 0
    loss = l1 + 1 - ssim_map(filled, truth)[near].mean()
    return loss + texture * texture_gap(filled, truth, hole) if texture else loss


# ---- holes -----------------------------------------------------------------------------------
def tumour_shapes(cases, step: int = 2, min_area: int = 100) -> list[np.ndarray]:
    """Tumour masks (cut to their bounding box) of every `step`-th lesion slice of the cases."""
    shapes = []
    for c in cases:
        for i in np.nonzero(c.abnormal)[0][::step]:
            m = np.asarray(c.mask[i]) > 0
            if m.sum() >= min_area:
                xs, ys = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
                shapes.append(m[xs[0]:xs[-1] + 1, ys[0]:ys[-1] + 1])
    return shapes


def random_shape(shapes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A tumour shape randomly rotated, scaled and flipped, or a random blob."""
    if not shapes or rng.random() < BLOB_SHARE:
        size = int(rng.integers(16, 64))
        noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 6)
        blob = noise > np.quantile(noise, rng.uniform(0.4, 0.8))
        labels, n = ndimage.label(blob)
        return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:])) if n else blob
    m = shapes[int(rng.integers(len(shapes)))].astype(np.float32)
    m = ndimage.zoom(m, rng.uniform(0.6, 1.4), order=1)
    m = ndimage.rotate(m, rng.uniform(0, 360), order=1, reshape=True)
    return (m[::-1] if rng.random() < 0.5 else m) > 0.5


def place(shape: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`shape` centred on a random brain pixel of a slice (cut at the slice's border)."""
    hole = np.zeros(brain.shape, bool)
    xs, ys = np.nonzero(brain)
    k = int(rng.integers(len(xs)))
    x0, y0 = xs[k] - shape.shape[0] // 2, ys[k] - shape.shape[1] // 2
    sx, sy = slice(max(x0, 0), min(x0 + shape.shape[0], brain.shape[0])), slice(max(y0, 0), min(y0 + shape.shape[1], brain.shape[1]))
    hole[sx, sy] = shape[sx.start - x0:sx.stop - x0, sy.start - y0:sy.stop - y0]
    return hole


def _neighbour_hole(hole: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = int(rng.integers(-2, 3))
    if r > 0:
        return ndimage.binary_dilation(hole, iterations=r)
    return ndimage.binary_erosion(hole, iterations=-r) if r < 0 else hole


# ---- training --------------------------------------------------------------------------------
def mirror_total(case) -> int:
    """flair.mirror_sum of a cached case, from its slices' brain boxes (x0, x1 exclusive)."""
    boxes = case.brain_box[case.brain_box[:, 0] >= 0]
    return int(boxes[:, 0].min() + boxes[:, 1].max() - 1) if len(boxes) else case.image.shape[1] - 1


class HoleSamples:
    """Crops of the training cases' slices with a hole voided in healthy brain (module docstring)."""

    def __init__(self, cases, shapes: list[np.ndarray]):
        self.cases, self.shapes = cases, shapes
        self.index = [(ci, i) for ci, c in enumerate(cases) for i in range(len(c.z))
                      if (np.asarray(c.image[i]) > 0).sum() >= 500]
        self.totals = [mirror_total(c) for c in cases]

    def _slices(self, c, i: int) -> tuple[list[np.ndarray], np.ndarray]:
        """(the slice below, the slice, the one above: itself where none is adjacent; tumour there)."""
        rows = [j if 0 <= j < len(c.z) and abs(int(c.z[j]) - int(c.z[i])) == 1 else i for j in (i - 1, i + 1)]
        images = [np.asarray(c.image[j], np.float32) for j in (rows[0], i, rows[1])]
        tumour = np.zeros(images[1].shape, bool)
        if c.mask is not None:
            for j in (rows[0], i, rows[1]):
                tumour |= np.asarray(c.mask[j]) > 0
        return images, tumour

    def sample(self, crop: int, rng: np.random.Generator):
        """(net input C x crop x crop, truth 1 x crop x crop) of one random slice."""
        while True:
            ci, i = self.index[int(rng.integers(len(self.index)))]
            images, tumour = self._slices(self.cases[ci], i)
            brain = images[1] > 0
            allowed = brain & ~ndimage.binary_dilation(tumour, iterations=TUMOUR_MARGIN)
            hole = place(random_shape(self.shapes, rng), brain, rng) & allowed
            if hole.sum() >= MIN_HOLE:
                break
        holes = [_neighbour_hole(hole, rng) & allowed, hole, _neighbour_hole(hole, rng) & allowed]
        xs, ys = np.nonzero(hole)
        x0, y0 = (int(np.clip(int(np.median(v)) - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0,
                              max(n - crop, 0))) for v, n in ((xs, hole.shape[0]), (ys, hole.shape[1])))
        cut = lambda a: torch.from_numpy(np.ascontiguousarray(a[x0:x0 + crop, y0:y0 + crop], np.float32))[None]  # noqa: E731
        v = [cut(np.where(h, 0, im)) for h, im in zip(holes, images)]
        other = cut(other_side(np.where(hole, 0, images[1]), tumour, self.totals[ci]))   # before the crop
        x = net_input(v[1][None], cut(hole)[None], other[None], v[0][None], v[2][None])[0]
        return x, cut(images[1])


def train_fillnet(cases, steps: int = 2000, minutes: float | None = None, crop: int = 96, batch_size: int = 8,
                  base: int = 16, depth: int = 3, lr: float = 1e-3, seed: int = 0, start: str = "smooth",
                  alpha: float = MIRROR_ALPHA, texture: float = 0.0, log=print) -> tuple[FillNet, dict]:
    """Train a FillNet on the cached training `cases` for `steps` steps or `minutes` of wall
    time, whichever ends first (the learning rate follows a cosine over the nearer of the two);
    `texture`: the weight of the loss's texture term (0: L1 + SSIM alone).
    Returns (the network in eval mode, what was run)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = FillNet(base, depth, start, alpha)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    data = HoleSamples(cases, tumour_shapes(cases))
    t0, losses, step = time.time(), [], 0
    budget = None if minutes is None else 60 * minutes
    while step < steps and (budget is None or time.time() - t0 < budget):
        done = max(step / steps, 0 if budget is None else (time.time() - t0) / budget)
        for g in opt.param_groups:
            g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * min(done, 1.0)))
        x, truth = (torch.stack(v) for v in zip(*(data.sample(crop, rng) for _ in range(batch_size))))
        loss = fill_loss(net(x), truth, x[:, 1:2], texture)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            log(f"  step {step} loss {np.mean(losses[-50:]):.4f} ({time.time() - t0:.0f} s)")
    run = {"steps": step, "seconds": round(time.time() - t0), "final_loss": float(np.mean(losses[-50:])) if losses else None,
           "crop": crop, "batch_size": batch_size, "base": base, "depth": depth, "lr": lr, "seed": seed,
           "start": start, "alpha": net.config["alpha"] if start == "mirror" else None, "texture": texture,
           "tumour_shapes": len(data.shapes), "slices": len(data.index)}
    return net.eval(), run


# ---- inference -------------------------------------------------------------------------------
@torch.no_grad()
def fill_volume(net: FillNet, image: np.ndarray, mask: np.ndarray, tumour: np.ndarray | None = None,
                batch_size: int = 8) -> np.ndarray:
    """The voided volume `image` (X x Y x Z, 0 inside `mask`) with the mask filled by `net`,
    slice by axial slice, each batch on its holes' box and CROP_MARGIN px around it; outside the
    mask the image unchanged. `tumour`: lesions known elsewhere
    in the volume (X x Y x Z), kept out of the other hemisphere's channel."""
    axial = lambda a, t: np.ascontiguousarray(np.moveaxis(np.asarray(a, t), 2, 0))  # noqa: E731  Z x X x Y
    m = torch.from_numpy(axial(mask, bool)).float()[:, None]
    v = torch.from_numpy(axial(image, np.float32))[:, None] * (1 - m)   # voided, whatever was inside the mask
    total = mirror_sum((np.asarray(image) > 0) | np.asarray(mask, bool))
    other = torch.from_numpy(other_side(v[:, 0].numpy(), None if tumour is None else axial(tumour, bool), total))[:, None]
    out, device = v.clone(), next(net.parameters()).device
    zs = torch.nonzero(m.flatten(1).any(1))[:, 0].tolist()
    last = len(v) - 1
    for start in range(0, len(zs), batch_size):
        z = zs[start:start + batch_size]
        below, above = [max(k - 1, 0) for k in z], [min(k + 1, last) for k in z]
        box = (Ellipsis, *box_around(m[z], net.unet.multiple, CROP_MARGIN))   # the network works near the hole
        x = net_input(v[z][box], m[z][box], other[z][box], v[below][box], v[above][box]).to(device)
        filled = out[z]
        filled[box] = net(x).clamp(min=0).float().cpu()
        out[z] = filled
    return np.moveaxis(out[:, 0].numpy(), 0, 2)
