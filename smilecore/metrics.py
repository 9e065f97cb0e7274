"""Image and segmentation metrics of the paper, with every choice that moves them written down.

All images are 2D slices (N x H x W tensors, or arrays) in normalised intensities, data range
1 (the [0, V99.5] clipping of volume.py).

- SSIM (Wang et al. 2004): Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, "valid" filtering
  (no padding), mean of the SSIM map. With a mask, the mean is taken over the map pixels whose
  window centre lies in the mask (the map is computed on the whole image, so the lesion's
  surroundings enter through the window, as a reader would see them).
- MS-SSIM (Wang et al. 2003): the same SSIM on 5 scales with the standard weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling between scales, contrast-
  structure term on the first 4 scales and luminance on the last; negative values clamped to
  0 before the power, as pytorch-msssim does. An image too small for 5 scales (side
  <= 10 * 2**4 = 160 pixels) uses as many scales as fit, with the weights renormalised.
- identity iD = MS-SSIM((1-M)*G(I), (1-M)*I), per abnormal slice, then averaged over slices.
- healthiness h = 1 - E[N(Spred(G(I)))] / E[N(Spred(I))], N = pixels Spred labels lesion
  (argmax), pooled: both expectations are means over the same set of slices, so h is one
  ratio for the set, not a mean of per-slice ratios (those are undefined where Spred finds
  nothing in I).
- Dice = 2|P & T| / (|P| + |T|), pooled over all voxels of a case or set; 1.0 when both are empty.
- Through-plane change (striping): slice-wise synthesis can make neighbouring axial slices
  disagree, which shows as stripes in sagittal and coronal views. Measured as the mean
  |V(z+1) - V(z)| over the voxel pairs of neighbouring slices that both lie in a region; a
  pseudo-normal's value inside the lesion is compared with the input's value in healthy tissue
  (brain more than 5 pixels from any lesion, in both slices) of the same volume.
- Known truth (a lesion pasted into a healthy slice): MAE, PSNR (peak = data range 1) and
  SSIM (map averaged over lesion pixels) of the pseudo-normal against the healthy slice,
  inside the lesion mask only.
- Normal anatomy called lesion (issue 23), the two failures a Dice hides:
  - bright tissue: brain voxels above the BRIGHT_PERCENTILE-th percentile of the case's
    non-tumour brain and at least BRIGHT_MARGIN voxels from the expert tumour (on T2: CSF, the
    ventricles and sulci); the share of them S marks;
  - healthy-ised brain: each tumour voxel replaced by the voxel mirrored left-right
    (`healthy_ised`); the share of its brain S marks, voxels whose mirror is tumour too (and
    HEALTHY_ISED_MARGIN voxels around them) left out.
  Both are pooled over a case's voxels; scripts/cv_segmentor.py defines them the same way.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

BRIGHT_PERCENTILE = 95    # bright tissue: above this percentile of the non-tumour brain ...
BRIGHT_MARGIN = 5         # ... and at least this many voxels from the expert tumour
HEALTHY_ISED_MARGIN = 2   # voxels around unreplaceable tumour (mirror also tumour) left out
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def _as_batch(x) -> torch.Tensor:
    """H x W, N x H x W or N x 1 x H x W -> float64 N x 1 x H x W."""
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)
    if t.dim() == 2:
        t = t[None]
    return t[:, None] if t.dim() == 3 else t


def _gaussian_filter(x: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(WIN, dtype=x.dtype) - WIN // 2
    g = torch.exp(-coords ** 2 / (2 * SIGMA ** 2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _ssim_maps(a: torch.Tensor, b: torch.Tensor, data_range: float):
    """(SSIM map, contrast-structure map), both "valid" size."""
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _gaussian_filter(a), _gaussian_filter(b)
    var_a = _gaussian_filter(a * a) - mu_a ** 2
    var_b = _gaussian_filter(b * b) - mu_b ** 2
    cov = _gaussian_filter(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
    return luminance * cs, cs


def ssim(a, b, data_range: float = 1.0, mask=None) -> torch.Tensor:
    """Mean SSIM per image (N,), over the whole image or over the pixels of `mask`."""
    a, b = _as_batch(a), _as_batch(b)
    smap, _ = _ssim_maps(a, b, data_range)
    if mask is None:
        return smap.flatten(1).mean(1)
    m = _as_batch(mask)[..., WIN // 2: -(WIN // 2), WIN // 2: -(WIN // 2)] > 0
    m = m.expand_as(smap)
    total = (smap * m).flatten(1).sum(1)
    count = m.flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def ms_ssim(a, b, data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM per image (N,)."""
    a, b = _as_batch(a), _as_batch(b)
    levels = len(MS_SSIM_WEIGHTS)
    while levels > 1 and min(a.shape[-2:]) <= (WIN - 1) * 2 ** (levels - 1):
        levels -= 1
    if min(a.shape[-2:]) < WIN:
        raise ValueError(f"image of size {tuple(a.shape[-2:])} is smaller than the SSIM window {WIN}")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=a.dtype)
    weights = weights / weights.sum()
    values = []
    for level in range(levels):
        smap, cs = _ssim_maps(a, b, data_range)
        if level < levels - 1:
            values.append(cs.flatten(1).mean(1))
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        else:
            values.append(smap.flatten(1).mean(1))
    stack = torch.relu(torch.stack(values, dim=0))
    return torch.prod(stack ** weights.view(-1, 1), dim=0)


def identity(G_I, I, M) -> torch.Tensor:
    """iD per slice: MS-SSIM((1-M)*G(I), (1-M)*I)."""
    keep = 1 - _as_batch(M)
    return ms_ssim(keep * _as_batch(G_I), keep * _as_batch(I))


def healthiness(lesion_pixels_pn: float, lesion_pixels_input: float) -> float:
    """h = 1 - E[N(Spred(G(I)))] / E[N(Spred(I))], from the totals over the same slices."""
    if lesion_pixels_input <= 0:
        return float("nan")
    return 1.0 - lesion_pixels_pn / lesion_pixels_input


def dice(pred, truth) -> float:
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, truth).sum() / total)


def known_truth_errors(pseudo_normal, truth, lesion, data_range: float = 1.0) -> dict[str, float]:
    """MAE, PSNR and SSIM of `pseudo_normal` against the healthy `truth`, inside `lesion`,
    pooled over all given slices."""
    pn, tr = np.asarray(pseudo_normal, np.float64), np.asarray(truth, np.float64)
    m = np.asarray(lesion) > 0
    if not m.any():
        raise ValueError("known-truth errors need a non-empty lesion mask")
    err = pn[m] - tr[m]
    mse = float(np.mean(err ** 2))
    slices = [x.reshape((-1,) + x.shape[-2:]) for x in (pn, tr, m)]
    per_slice = ssim(*slices[:2], data_range, mask=slices[2]).numpy()
    counted = slices[2][:, WIN // 2: -(WIN // 2), WIN // 2: -(WIN // 2)].sum(axis=(1, 2))  # pixels ssim() averages
    return {"mae": float(np.mean(np.abs(err))),
            "psnr": float("inf") if mse == 0 else 10 * math.log10(data_range ** 2 / mse),
            "ssim": float(np.average(per_slice[counted > 0], weights=counted[counted > 0]))
            if counted.any() else float("nan")}


def through_plane_change(stack, region, neighbours=None) -> tuple[float, int]:
    """(mean |V[k+1] - V[k]| over pixels in `region` in both slices, number of such pixels) for a
    stack of axial slices (Z x H x W). `neighbours[k]` says whether slices k and k+1 are adjacent
    in the volume (default: all are)."""
    v, r = np.asarray(stack, np.float64), np.asarray(region) > 0
    both = r[1:] & r[:-1]
    if neighbours is not None:
        both &= np.asarray(neighbours, bool)[:, None, None]
    n = int(both.sum())
    return (float(np.abs(v[1:] - v[:-1])[both].mean()) if n else float("nan")), n


def bright_tissue(image, brain, truth, sampling=None) -> np.ndarray:
    """Bright non-tumour tissue of a case (stack or volume): brain above the BRIGHT_PERCENTILE-th
    percentile of the non-tumour brain, at least BRIGHT_MARGIN voxels (`sampling`: the voxel
    size along each axis, in voxels of the in-plane grid) from the tumour `truth`."""
    from scipy import ndimage
    image, brain, truth = np.asarray(image, np.float32), np.asarray(brain) > 0, np.asarray(truth) > 0
    healthy = brain & ~truth
    if not healthy.any():
        return np.zeros_like(brain)
    far = (ndimage.distance_transform_edt(~truth, sampling=sampling) >= BRIGHT_MARGIN) if truth.any() \
        else np.ones_like(brain)  # no tumour: every voxel is far from it
    return brain & far & (image > np.percentile(image[healthy], BRIGHT_PERCENTILE))


def healthy_ised(image, truth, axis: int = -2, mirror_at: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image with each tumour voxel replaced by its left-right mirror, voxels left unknown: tumour
    whose mirror is tumour too or lies outside the array). `axis`: the left-right axis of
    `image` (-2 for N x X x Y slices); `mirror_at`: twice the mid-sagittal coordinate, voxel x
    mirrors to mirror_at - x (default: the array's centre, a plain flip)."""
    image, truth = np.asarray(image), np.asarray(truth) > 0
    n = image.shape[axis]
    src = (n - 1 if mirror_at is None else int(round(mirror_at))) - np.arange(n)
    inside = (src >= 0) & (src < n)
    src = np.clip(src, 0, n - 1)
    shape = [1] * image.ndim
    shape[axis] = n
    inside = inside.reshape(shape)
    mirror_img = np.take(image, src, axis=axis)
    mirror_truth = np.take(truth, src, axis=axis) | ~inside
    return np.where(truth, mirror_img, image), truth & mirror_truth


def share_marked(pred, region) -> float:
    """The share of `region`'s voxels that `pred` marks; NaN for an empty region."""
    pred, region = np.asarray(pred) > 0, np.asarray(region) > 0
    n = int(region.sum())
    return float((pred & region).sum() / n) if n else float("nan")


def healthy_ised_counted(healthy_image, unknown) -> np.ndarray:
    """The voxels the healthy-ised share counts: brain (> 0) away from unknown ones."""
    from scipy import ndimage
    unknown = np.asarray(unknown) > 0
    near = ndimage.binary_dilation(unknown, iterations=HEALTHY_ISED_MARGIN) if unknown.any() else unknown
    return (np.asarray(healthy_image) > 0) & ~near


def normal_anatomy_called_lesion(cases: dict, preds: dict, segment, mirror_at=None) -> dict:
    """The two shares of normal anatomy a segmentor marks, per case, with their mean and worst
    case. `cases`: id -> (stack N x X x Y, expert tumour); `preds`: id -> the segmentor's mask of
    the stack; `segment(slices)`: its mask of other slices (run on the healthy-ised tumour slices
    only: the others are their own healthy-ised slice); `mirror_at(brain)`: twice the
    mid-sagittal coordinate (None: the array's centre)."""
    per_case = {}
    for case_id, (image, truth) in cases.items():
        brain, pred = image > 0, np.asarray(preds[case_id], bool)
        healed, unknown = healthy_ised(image, truth, axis=1, mirror_at=mirror_at(brain) if mirror_at else None)
        pred_healed = pred.copy()
        rows = truth.any(axis=(1, 2))
        if rows.any():
            pred_healed[rows] = segment(healed[rows])
        per_case[case_id] = {"bright_tissue": share_marked(pred, bright_tissue(image, brain, truth)),
                             "healthy_ised": share_marked(pred_healed, healthy_ised_counted(healed, unknown))}
    out = {"per_case": per_case}
    for key in ("bright_tissue", "healthy_ised"):
        values = [e[key] for e in per_case.values() if e[key] == e[key]]  # NaN: nothing to count
        out[key] = {"mean": float(np.mean(values)) if values else float("nan"),
                    "worst": float(np.max(values)) if values else float("nan")}
    return out
