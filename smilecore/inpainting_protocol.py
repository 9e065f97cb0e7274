"""The BraTS inpainting challenge's protocol ("Local Synthesis of Healthy Brain Tissue via
Inpainting", 2023-2025), as SMILE measures a fill with it (issue 24).

- Voiding (`place_mask`, `voided`): healthy tissue of a held-out case is set to 0 inside a
  lesion mask taken from another case, placed where it lies in healthy brain (no voxel within
  TUMOUR_MARGIN voxels of the case's own tumour, at least MIN_INSIDE of it inside the brain,
  then cut to the brain). All BraTS cases are co-registered, so a donor's tumour mask is tried
  where it is, mirrored left-right, and shifted.
- Scoring (`challenge_metrics`): as the challenge's package `inpainting` (0.0.12,
  `generate_metrics`) defines it, written here anew and checked against it in
  Testing/test_inpainting_protocol.py: prediction and truth are multiplied by the mask, clipped
  to the 0.5 / 99.5 percentiles of the whole voided volume (background included, the lower one
  at least 0) and scaled to [0, 1]; SSIM (Gaussian window 11, sigma 1.5, reflected borders, 2D
  over the planes of the array's last two axes, data range the larger value span of the two)
  averaged over the mask's voxels; MSE and PSNR over the mask's voxels (PSNR's range: the
  truth's minimum to maximum there, both clamped to it). The package takes arrays as BraTS
  stores them (240 x 240 x 155); SMILE's canonical LPS order is that order for BraTS files.
- Structure (`structure_measures`): what the challenge's scores miss, a flat patch: the mean
  in-plane gradient magnitude and the mean intensity inside the mask, and the through-plane
  change (metrics.through_plane_change), each as a ratio to the truth's. Stripes
  (`stripe_measures`): a fill made slice by slice can be flat in-plane and jump between slices,
  which the through-plane ratio passes (its jumps are smaller than the truth's texture). Three
  measures fail it: the jump of the fill's per-slice bias (`slice_bias_jump`, over the truth's
  SD in the mask; 0 when each slice's brightness tracks the truth's), the fill's own
  slice-to-slice brightness steps over the truth's (`slice_step_ratio`; 1 as the truth) and
  the share of the fill's change that is through the plane, over the truth's (`z_share_ratio`;
  1 as the truth, up to 1 / the truth's share for a fill that changes only between slices).
- Baselines: `ring_mean_fill` (each axial slice's mask filled with the mean of a ring of brain
  around it) and `review_fill` (smile synthesize with the mask on the voided image: today's
  review mode, run through the engine on the mask's slab of slices).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .known_truth import ring_mean_fill
from .metrics import through_plane_change

P_LOW, P_HIGH = 0.5, 99.5     # the challenge's percentile scaling
SSIM_SIGMA, SSIM_SIZE = 1.5, 11
K1, K2 = 0.01, 0.03
TUMOUR_MARGIN = 3             # voxels between a placed mask and the case's own tumour
MIN_INSIDE = 0.9              # share of a placed mask that must lie in the brain
MIN_VOXELS = 1000             # a placed mask smaller than this (1 mL at 1 mm) is not used
SHIFTS = 6                    # random shifts tried per donor mask and side
SLAB_MARGIN = 2               # slices around the mask given to the engine (review_fill)


# ---- scoring ---------------------------------------------------------------------------------
def challenge_scale(x: np.ndarray, voided: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """x inside the mask (0 elsewhere) scaled to [0, 1] by the voided volume's percentiles."""
    lo, hi = np.percentile(np.asarray(voided, np.float32), [P_LOW, P_HIGH])
    lo = max(float(lo), 0.0)
    x = np.where(mask, np.asarray(x, np.float32), np.float32(0))
    return ((np.clip(x, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _window(x: torch.Tensor) -> torch.Tensor:
    """The Gaussian window's weighted mean, separably (N x 1 x H x W, borders already padded)."""
    t = torch.arange(SSIM_SIZE, dtype=torch.float32) - (SSIM_SIZE - 1) / 2
    g = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    g = g / g.sum()
    return F.conv2d(F.conv2d(x, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """SSIM of every voxel of two volumes, each plane of the last two axes a 2D image."""
    pad = SSIM_SIZE // 2
    x = torch.from_numpy(np.stack([a, b])).float().reshape(2 * len(a), 1, *a.shape[1:])
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    p, t = x[:len(a)], x[len(a):]
    mu_p, mu_t, pp, tt, pt = (_window(v) for v in (p, t, p * p, t * t, p * t))
    var_p = (pp - mu_p ** 2).clamp(min=0)
    var_t = (tt - mu_t ** 2).clamp(min=0)
    cov = pt - mu_p * mu_t
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = (2 * mu_p * mu_t + c1) * (2 * cov + c2) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
    return s[:, 0].numpy()


def challenge_metrics(prediction: np.ndarray, truth: np.ndarray, voided: np.ndarray,
                      mask: np.ndarray) -> dict:
    """SSIM, PSNR (dB) and MSE of `prediction` against `truth` inside `mask`, as the challenge
    scores them (module docstring); `voided` is the image the fill was given."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("the mask is empty: nothing to score")
    p, t = (challenge_scale(v, voided, mask) for v in (prediction, truth))
    data_range = max(float(p.max() - p.min()), float(t.max() - t.min()))
    planes = np.nonzero(mask.any(axis=(1, 2)))[0]   # SSIM is per plane: only those the mask is in
    ssim = float(ssim_map(p[planes], t[planes], data_range)[mask[planes]].astype(np.float64).mean())
    pm, tm = p[mask].astype(np.float64), t[mask].astype(np.float64)
    mse = float(np.mean((pm - tm) ** 2))
    lo, hi = tm.min(), tm.max()
    clamped = float(np.mean((np.clip(pm, lo, hi) - tm) ** 2))
    psnr = float(10 * np.log10((hi - lo) ** 2 / clamped)) if clamped > 0 else float("inf")
    return {"ssim": ssim, "psnr": psnr, "mse": mse}


def _gradient(volume: np.ndarray) -> np.ndarray:
    """In-plane gradient magnitude of each axial slice (X x Y x Z)."""
    gx, gy = np.gradient(np.asarray(volume, np.float64), axis=(0, 1))
    return np.hypot(gx, gy)


def structure_measures(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """Ratios to the truth's inside the mask: mean in-plane gradient magnitude, mean intensity,
    through-plane change between adjacent axial slices (1 is the truth's; a flat patch has a
    gradient ratio near 0, stripes a through-plane ratio above 1)."""
    mask = np.asarray(mask, bool)
    inner = mask & ndimage.binary_erosion(mask, np.ones((3, 3, 1), bool))  # gradients within the fill
    inner = inner if inner.any() else mask
    grad = float(_gradient(prediction)[inner].mean() / max(_gradient(truth)[inner].mean(), 1e-12))
    mean = float(np.mean(prediction[mask]) / max(float(np.mean(truth[mask])), 1e-12))
    axial = lambda v: np.moveaxis(np.asarray(v), 2, 0)  # noqa: E731  (Z x X x Y)
    tp_pred, _ = through_plane_change(axial(prediction), axial(mask))
    tp_true, _ = through_plane_change(axial(truth), axial(mask))
    return {"gradient_ratio": grad, "intensity_ratio": mean, "through_plane_ratio": tp_pred / max(tp_true, 1e-12)}


def slice_bias_jump(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean |b(z+1) - b(z)| over adjacent axial slices that both hold the mask, each pair weighted
    by the smaller slice's voxel count (a slice of a few voxels has a noisy mean), where b(z) is
    the mean of prediction - truth over the mask's voxels in slice z; over the truth's SD in the
    mask. What one sees as stripes: each slice's patch a different brightness from the truth's."""
    mask = np.asarray(mask, bool)
    n = mask.sum(axis=(0, 1)).astype(np.float64)
    err = np.where(mask, np.asarray(prediction, np.float64) - np.asarray(truth, np.float64), 0.0)
    b = err.sum(axis=(0, 1)) / np.maximum(n, 1)
    pair = np.minimum(n[1:], n[:-1])
    if not pair.any():
        return float("nan")
    jump = float(np.sum(np.abs(np.diff(b)) * pair) / pair.sum())
    return jump / max(float(np.std(np.asarray(truth, np.float64)[mask])), 1e-12)


def _changes(volume: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean |change| between voxels adjacent in-plane, along x and y together; the same through
    the plane), over neighbour pairs that both lie in the mask."""
    v = np.asarray(volume, np.float64)
    part = lambda a, s: tuple(s if k == a else slice(None) for k in range(3))  # noqa: E731
    sums, counts = np.zeros(3), np.zeros(3)
    for a in range(3):
        both = mask[part(a, slice(1, None))] & mask[part(a, slice(None, -1))]
        sums[a], counts[a] = np.abs(np.diff(v, axis=a))[both].sum(), both.sum()
    return float(sums[:2].sum() / max(counts[:2].sum(), 1)), float(sums[2] / max(counts[2], 1))


def _slice_steps(volume: np.ndarray, mask: np.ndarray) -> float:
    """Mean over adjacent axial slices of |the mean of V(z+1) - V(z) over the voxels in the mask
    in both|, each pair of slices weighted by that voxel count: how much a region's brightness
    steps from slice to slice (texture's ups and downs cancel in the mean; a stripe does not)."""
    both = mask[:, :, 1:] & mask[:, :, :-1]
    n = both.sum(axis=(0, 1)).astype(np.float64)
    if not n.any():
        return float("nan")
    step = np.where(both, np.diff(np.asarray(volume, np.float64), axis=2), 0.0).sum(axis=(0, 1))
    return float(np.abs(step).sum() / n.sum())   # sum |n * mean step| / sum n


def stripe_measures(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """The stripe measures (module docstring): `slice_bias_jump`; `slice_step_ratio`, the fill's
    slice-to-slice brightness steps over the truth's (_slice_steps); `z_share_ratio`, the
    through-plane share of the change between neighbouring voxels, tz / (tz + txy), of the fill
    over the truth's."""
    mask = np.asarray(mask, bool)
    shares = []
    for v in (prediction, truth):
        txy, tz = _changes(v, mask)
        shares.append(tz / max(tz + txy, 1e-12))
    return {"slice_bias_jump": slice_bias_jump(prediction, truth, mask),
            "slice_step_ratio": _slice_steps(prediction, mask) / max(_slice_steps(truth, mask), 1e-12),
            "z_share_ratio": shares[0] / max(shares[1], 1e-12)}


def score(prediction: np.ndarray, truth: np.ndarray, voided: np.ndarray, mask: np.ndarray) -> dict:
    return {**challenge_metrics(prediction, truth, voided, mask), **structure_measures(prediction, truth, mask),
            **stripe_measures(prediction, truth, mask)}


# ---- voiding ---------------------------------------------------------------------------------
def _shifted(mask: np.ndarray, dx: int, dy: int, dz: int) -> np.ndarray:
    out = np.zeros_like(mask)
    src = tuple(slice(max(-d, 0), n - max(d, 0)) for d, n in zip((dx, dy, dz), mask.shape))
    dst = tuple(slice(max(d, 0), n - max(-d, 0)) for d, n in zip((dx, dy, dz), mask.shape))
    out[dst] = mask[src]
    return out


def place_mask(brain: np.ndarray, tumour: np.ndarray, donors: list[np.ndarray], seed: int = 0,
               max_shift: int = 20) -> tuple[np.ndarray, dict]:
    """A donor's tumour mask placed in the healthy brain of a case (module docstring): donors
    are tried in a seeded order, each as it is, mirrored left-right (axis 0), then shifted at
    random by up to `max_shift` voxels. Returns (mask cut to the brain, how it was placed)."""
    rng = np.random.default_rng(seed)
    brain = np.asarray(brain, bool)
    forbidden = ndimage.binary_dilation(np.asarray(tumour, bool), iterations=TUMOUR_MARGIN)
    for d in rng.permutation(len(donors)):
        donor = np.asarray(donors[d], bool)
        for mirrored in (False, True):
            base = donor[::-1] if mirrored else donor
            for k in range(SHIFTS + 1):
                shift = (0, 0, 0) if k == 0 else tuple(int(s) for s in rng.integers(-max_shift, max_shift + 1, 3))
                m = _shifted(base, *shift)
                n = int(m.sum())
                if n < MIN_VOXELS or (m & forbidden).any() or (m & brain).sum() < MIN_INSIDE * n:
                    continue
                return m & brain, {"donor": int(d), "mirrored": mirrored, "shift": list(shift)}
    raise ValueError("no donor mask fits the healthy brain of this case")


def voided(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The challenge's input: the image with 0 inside the mask."""
    return np.where(mask, np.float32(0), np.asarray(image, np.float32))


# ---- baselines -------------------------------------------------------------------------------
def mask_slab(mask: np.ndarray, margin: int = SLAB_MARGIN) -> slice:
    zs = np.nonzero(np.asarray(mask).any(axis=(0, 1)))[0]
    return slice(max(int(zs[0]) - margin, 0), min(int(zs[-1]) + 1 + margin, mask.shape[2]))


def review_fill(image: np.ndarray, mask: np.ndarray, model, spacing=(1.0, 1.0, 1.0),
                z_sigma: float | None = None) -> np.ndarray:
    """Today's review mode on the voided image (smile synthesize --mask through the engine), run
    on the slab of axial slices that holds the mask (SLAB_MARGIN more on each side) to keep the
    CPU time down; the pseudo-normal inside the mask, the image elsewhere. `image`: X x Y x Z in
    the canonical LPS order (given an LPS affine). `z_sigma`: the through-plane pass's sigma for
    the run, 0 to leave it out (None: the model's, synthesis_blend.pass_sigma)."""
    from .synthesis import synthesize
    from .synthesis_inputs import voided_brain

    z = mask_slab(mask)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel axes
    slab, slab_mask = np.ascontiguousarray(image[:, :, z]), np.ascontiguousarray(mask[:, :, z]).astype(np.uint8)
    # The voided voxels hold the ring mean: review mode replaces everything under the mask before
    # G (lesionfill.fill_lesion), so G's input is the same; the image's T2 check
    # (modalitycheck) would read the zeros of a large void as dark CSF.
    slab = ring_mean_fill(slab, slab_mask > 0)
    # the brain as synthesis finds it for a voided image (synthesis_inputs.voided_brain)
    brain = voided_brain(slab, affine, slab_mask, "voided image")
    if z_sigma is not None:   # the same networks with another sigma in their configuration
        model = dataclasses.replace(model, config={**model.config, "through_plane_sigma": z_sigma})
    result = synthesize(slab, affine, model, mask=slab_mask, notify=lambda _: None, brain=brain)
    out = np.array(image, np.float32, copy=True)
    out[:, :, z] = np.where(mask[:, :, z], result.pseudo_normal, image[:, :, z])
    return out
