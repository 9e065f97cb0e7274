"""Synthesis outputs in the input's scale: the networks' change put back onto the untouched input.

The networks' outputs come back to the input's grid (`back_on_input`: where the slices were
resampled, the *change* is resampled back, so tissue the generator leaves alone keeps its exact
input values), and `compose_outputs` adds them to the input's raw intensities as the synthesis
module docstring describes: outside the lesion G's change is added to the input, inside it G's
image replaces the input, and R's change fades out over FILL_GROW px around the lesion.
Without a mask, G's change is then kept only within a reach of S's lesion (`kept_near_lesion`):
G's gate may open anywhere, and where it opened far from every lesion S marks it erased normal
anatomy (the lateral ventricles of a training case, 57 mm from the lesion), so the lesion mask
bounds every change a reader sees. Then one pass through the plane (`through_plane_pass`): G
fills each axial slice on its own, so each slice's patch had its own brightness, seen as
horizontal stripes in coronal and sagittal views; the pseudo-normal inside the replaced region
is averaged along z over that region's voxels only (the input outside it stays exact).

Memory: every step here is per axial slice (resampling is in-plane, the fade's distance is
in-plane), so the outputs are composed a few slices at a time (`CHUNK_SLICES`), written straight
into the five output arrays; nothing else of the volume's size is made (a 512 x 512 x 300
volume is 300 MB per float32 array).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lesionfill import FILL_GROW
from .synthesis_grid import NetGrid, NetOutputs, resample_slices
from .volume import CanonicalVolume

CHUNK_SLICES = 16  # axial slices composed at a time: bounds the temporaries, not the result
Z_SIGMA = 1.5      # slices: the through-plane pass's Gaussian for a model that names none (0: no pass)
REACH_MM = 8.0     # mm from S's lesion beyond which the pseudo-normal is the input exactly (no mask given)
REACH_FADE_MM = 3.0  # mm over which G's change fades out before the reach (no step at its edge)
REACH_P = 1.0      # S's probability above which a voxel anchors the reach beside the mask (1: the mask alone)


def pass_sigma(config: dict) -> float:
    """The through-plane pass's sigma for a model's configuration: its "through_plane_sigma", else
    Z_SIGMA. Chosen per fill: G's fill is striped without the pass, a fill network that sees the
    neighbouring slices is not, and the pass would smooth it more than the anatomy (docs/fill-cv.md)."""
    return float(config.get("through_plane_sigma", Z_SIGMA))


def change_reach(config: dict) -> tuple[float, float]:
    """(mm, p): G may change the input (no mask given) within mm of S's lesion mask and of every
    voxel where S's probability is above p; the model's "change_reach_mm" and "change_reach_p",
    else REACH_MM and REACH_P. mm 0: no limit (G's change kept wherever its gate opened)."""
    return float(config.get("change_reach_mm", REACH_MM)), float(config.get("change_reach_p", REACH_P))


def reach_seed(lesion: np.ndarray, probability: np.ndarray, p: float) -> np.ndarray:
    """What the reach is measured from: the lesion mask and S's probability above p."""
    return lesion | (probability > p) if p < 1 else lesion


def kept_near_lesion(pseudo_normal: np.ndarray, raw: np.ndarray, lesion: np.ndarray, spacing,
                     reach_mm: float) -> None:
    """In place: `pseudo_normal` becomes `raw` farther than `reach_mm` (3D, `spacing` mm a voxel)
    from `lesion`, and its change fades to 0 over the last REACH_FADE_MM before that; the lesion
    and what lies well within the reach are untouched. No lesion: the input everywhere; reach 0
    does nothing. Only the lesion's box widened by the reach is copied (memory: a whole volume
    can be hundreds of MB)."""
    if reach_mm <= 0:
        return
    if not lesion.any():
        pseudo_normal[...] = raw
        return
    from scipy import ndimage
    box = []
    for k in range(3):   # the lesion's box widened by the reach: beyond it every voxel is farther
        idx = np.nonzero(lesion.any(axis=tuple(a for a in range(3) if a != k)))[0]
        pad = int(np.ceil(reach_mm / spacing[k]))
        box.append(slice(max(0, int(idx[0]) - pad), min(lesion.shape[k], int(idx[-1]) + 1 + pad)))
    box = tuple(box)
    near = pseudo_normal[box].copy()
    pseudo_normal[...] = raw
    fade = np.clip((reach_mm - ndimage.distance_transform_edt(~lesion[box], sampling=spacing)) / REACH_FADE_MM, 0, 1)
    pseudo_normal[box] = (raw[box] + fade * (near - raw[box])).astype(pseudo_normal.dtype)


@dataclass
class OnInput:
    """The networks' outputs on the input's grid (canonical order, normalised units), for the
    voxels of `box` only (a few axial slices of the volume that hold every change)."""
    G: np.ndarray         # G(I)
    R: np.ndarray         # R(G(I), M)
    G_change: np.ndarray  # G(I) - I, zero outside the crop that was synthesised
    R_change: np.ndarray  # R(G(I), M) - I, likewise
    prob: np.ndarray      # S's lesion probability
    lesion: np.ndarray    # the mask R painted (p > threshold, or the caller's)
    box: tuple            # (x, y, z) slices of the volume


def back_on_input(grid: NetGrid, outs: NetOutputs, vol: CanonicalVolume, threshold: float,
                  z: slice) -> OnInput:
    """`outs` on the input's grid for the axial slices `z` (within the crop's range): as they are,
    or resampled back in-plane when `grid` was resampled (G's and R's change resampled, not their
    images, so the input's detail stays; the lesion mask is the resampled probability above
    `threshold` where the resampled mask of the networks' grid is not zero: the same as the
    probability alone, bilinear and area weights being positive, unless components were removed
    from that mask, synthesis_segmentor.main_components)."""
    bx, by = grid.bx, grid.by
    k = slice(z.start - outs.z0, z.stop - outs.z0)
    I, G, R = outs.I[:, :, k], outs.G[:, :, k], outs.R[:, :, k]
    if not grid.resampled:
        return OnInput(G, R, G - I, R - I, outs.prob[:, :, k], outs.lesion[:, :, k], (bx, by, z))
    full, net = vol.raw.shape[:2], grid.shape[:2]

    def whole(crop):   # the crop's slices on the networks' whole in-plane grid, zero outside it
        out = np.zeros((*net, crop.shape[2]), np.float32)
        out[bx, by] = crop
        return out
    prob = resample_slices(whole(outs.prob[:, :, k]), full)
    kept = resample_slices(whole(outs.lesion[:, :, k]), full) > 0
    return OnInput(resample_slices(whole(G), full), resample_slices(whole(R), full),
                   resample_slices(whole(G - I), full), resample_slices(whole(R - I), full), prob,
                   (prob > threshold) & kept, (slice(0, full[0]), slice(0, full[1]), z))


def compose_outputs(vol: CanonicalVolume, grid: NetGrid, outs: NetOutputs, threshold: float,
                    user_mask: np.ndarray | None, z_sigma: float = Z_SIGMA,
                    reach: tuple[float, float] = (REACH_MM, REACH_P)) -> dict[str, np.ndarray]:
    """The five outputs (synthesis.OUTPUT_NAMES) in the input's raw scale, canonical order, with
    the raw input's memory layout. Every change lies in the crop's axial range (outside it the
    networks changed nothing); it is composed CHUNK_SLICES slices at a time. `z_sigma`: the
    through-plane pass's (`pass_sigma`); `reach`: (mm, p), how far from S's lesion G's change is
    kept when no mask is given (`change_reach`)."""
    brain, raw = vol.brain, vol.raw
    pseudo_normal, pseudo_abnormal = np.array(raw, order="K"), np.array(raw, order="K")
    difference, prob = np.zeros_like(raw, np.float32), np.zeros_like(raw, np.float32)
    lesion = np.zeros(raw.shape, bool) if user_mask is None else np.array(user_mask, bool)
    z0, z1 = outs.z0, outs.z0 + outs.G.shape[2]
    for a in range(z0, z1, CHUNK_SLICES):
        on = back_on_input(grid, outs, vol, threshold, slice(a, min(a + CHUNK_SLICES, z1)))
        box = on.box
        prob[box] = on.prob * brain[box]
        if user_mask is None:
            lesion[box] = on.lesion & brain[box]
        replaced = brain[box] & lesion[box]
        change = _pseudo_normal_change(vol, on, replaced, user_mask is not None)
        pseudo_normal[box] += change
        difference[box] = -change
        pseudo_abnormal[box] += _painted_change(vol, on, replaced, lesion[box])
    # after the loop: the reach and the pass need the slices of every chunk
    if user_mask is None and reach[0] > 0:
        kept_near_lesion(pseudo_normal, raw, reach_seed(lesion, prob, reach[1]), vol.spacing, reach[0])
        np.subtract(raw, pseudo_normal, out=difference)
    replaced = brain & lesion
    if through_plane_pass(pseudo_normal, replaced, z_sigma) is not None:
        # where the pass changed the pseudo-normal, the difference follows it (the lesion's voxels only)
        difference[replaced] = raw[replaced] - pseudo_normal[replaced]
    return {"pseudo_normal": pseudo_normal, "lesion_probability": prob, "lesion_mask": lesion.view(np.uint8),
            "pseudo_abnormal": pseudo_abnormal, "difference": difference}


def through_plane_pass(volume: np.ndarray, region: np.ndarray, sigma: float = Z_SIGMA) -> tuple | None:
    """Average `volume` (X x Y x Z, in place) along z inside `region`, over the region's voxels
    only: a Gaussian of `sigma` slices, normalised by the region's own weight (normalised
    convolution), so tissue outside the region never leaks in and voxels outside it are
    untouched. Returns the region's bounding box (None: empty region or sigma 0). The average is
    along z alone, so the box is done CHUNK_SLICES rows of x at a time (memory)."""
    if sigma <= 0 or not region.any():
        return None
    from scipy import ndimage
    box = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in
                (np.nonzero(region.any(axis=tuple(a for a in range(3) if a != k)))[0] for k in range(3)))
    smooth = lambda v: ndimage.gaussian_filter1d(v, sigma, axis=2, mode="constant")  # noqa: E731
    for a in range(box[0].start, box[0].stop, CHUNK_SLICES):
        part = (slice(a, min(a + CHUNK_SLICES, box[0].stop)), box[1], box[2])
        inside, values = region[part], volume[part]
        mean = smooth(np.where(inside, values, 0.0)) / np.maximum(smooth(inside.astype(np.float64)), 1e-12)
        volume[part] = np.where(inside, mean, values).astype(volume.dtype)
    return box


def _pseudo_normal_change(vol: CanonicalVolume, on: OnInput, replaced: np.ndarray, mask_given: bool) -> np.ndarray:
    """pseudo_normal - input inside the box, in the input's scale. Inside the lesion (`replaced`)
    the network's image replaces the input: input + scale * (net - I) would carry over whatever
    the input had above the clipping percentile (a bright cyst kept its excess as a blob in the
    pseudo-normal). Elsewhere the change is added to the exact input: inside the brain without a
    mask, nowhere when the caller gave one (the input outside the mask)."""
    box, norm = on.box, vol.norm
    raw = vol.raw[box]
    change = on.G_change * norm.scale
    change[replaced] = norm.invert(on.G[replaced]) - raw[replaced]
    change[~replaced if mask_given else ~vol.brain[box]] = 0.0
    return change


def _painted_change(vol: CanonicalVolume, on: OnInput, replaced: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """pseudo_abnormal - input inside the box, in the input's scale. R paints a lesion at M
    (`lesion`, the box's part): its change fades out over FILL_GROW px around M (in-plane
    distance) and beyond that the pseudo-abnormal is the input exactly, not R's faint rewrite of
    the whole slice (its up-sampling checkerboard); the fade avoids a step at the rim's edge."""
    box, norm = on.box, vol.norm
    raw = vol.raw[box]
    painted = on.R_change * norm.scale
    painted[replaced] = norm.invert(on.R[replaced]) - raw[replaced]
    near = _near(lesion, FILL_GROW + 1)
    if near is not None:   # in-plane distance (the through-plane sampling puts other slices far away)
        from scipy import ndimage
        distance = ndimage.distance_transform_edt(~lesion[near], sampling=(1.0, 1.0, 1e6))
        fade = np.zeros(painted.shape)
        fade[near] = np.clip(1.0 - distance / (FILL_GROW + 1), 0.0, 1.0)
        painted *= fade
    else:
        painted[...] = 0.0
    painted[~(vol.brain[box] | lesion)] = 0.0
    return painted


def _near(lesion: np.ndarray, reach: int) -> tuple | None:
    """The in-plane box of `lesion` widened by `reach` pixels (all its slices), or None without
    lesion. Beyond `reach` the fade is 0, and the distance inside the box is the same as over the
    whole slice (the nearest lesion pixel of any pixel in it lies in it), so the distance
    transform runs on this box only."""
    if not lesion.any():
        return None
    box = []
    for axis, size in ((0, lesion.shape[0]), (1, lesion.shape[1])):
        idx = np.nonzero(lesion.any(axis=(1 - axis, 2)))[0]
        box.append(slice(max(0, int(idx[0]) - reach), min(size, int(idx[-1]) + 1 + reach)))
    return box[0], box[1], slice(None)
