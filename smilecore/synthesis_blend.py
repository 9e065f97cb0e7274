"""Synthesis outputs in the input's scale: the networks' change put back onto the untouched input.

The networks' outputs come back to the input's grid (`back_on_input`: where the slices were
resampled, the *change* is resampled back, so tissue the generator leaves alone keeps its exact
input values), and `compose_outputs` adds them to the input's raw intensities as the synthesis
module docstring describes: outside the lesion G's change is added to the input, inside it G's
image replaces the input, and R's change fades out over FILL_GROW px around the lesion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .lesionfill import FILL_GROW
from .synthesis_grid import NetGrid, NetOutputs, resample_slices
from .volume import CanonicalVolume


@dataclass
class OnInput:
    """The networks' outputs on the input's grid (canonical order, normalised units)."""
    G: np.ndarray         # G(I)
    R: np.ndarray         # R(G(I), M)
    G_change: np.ndarray  # G(I) - I, zero outside the crop that was synthesised
    R_change: np.ndarray  # R(G(I), M) - I, likewise
    prob: np.ndarray      # S's lesion probability
    lesion: np.ndarray    # the mask R painted (p > threshold, or the caller's)
    box: tuple            # (x, y, z) slices of the volume that hold every change


def back_on_input(grid: NetGrid, outs: NetOutputs, vol: CanonicalVolume, threshold: float) -> OnInput:
    """`outs` on the input's grid: as they are, or resampled back in-plane when `grid` was
    resampled (G's and R's change resampled, not their images, so the input's detail stays; the
    lesion mask is the resampled probability above `threshold`)."""
    bx, by, zs = grid.bx, grid.by, grid.zs
    if grid.resampled:
        full = vol.image.shape[:2]
        synthesised = np.zeros(grid.image.shape, np.float32)
        synthesised[bx, by] = 1.0
        G_change = resample_slices((outs.G - grid.image) * synthesised, full)
        R_change = resample_slices((outs.R - grid.image) * synthesised, full)
        prob = resample_slices(outs.prob, full)
        on = OnInput(resample_slices(outs.G, full), resample_slices(outs.R, full), G_change, R_change, prob,
                     prob > threshold, (slice(0, full[0]), slice(0, full[1])))
    else:
        on = OnInput(outs.G, outs.R, outs.G - grid.image, outs.R - grid.image, outs.prob, outs.lesion, (bx, by))
    on.box = (*on.box, slice(int(zs[0]), int(zs[-1]) + 1))
    return on


def compose_outputs(vol: CanonicalVolume, on: OnInput, user_mask: np.ndarray | None) -> dict[str, np.ndarray]:
    """The five outputs (synthesis.OUTPUT_NAMES) in the input's raw scale, canonical order.
    Every change is confined to `on.box` (outside it the networks changed nothing)."""
    brain = vol.brain
    prob = on.prob
    prob *= brain
    if user_mask is None:
        lesion = on.lesion
        lesion &= brain
    else:
        lesion = user_mask.astype(bool)
    box = on.box
    replaced = brain[box] & lesion[box]
    change = _pseudo_normal_change(vol, on, replaced, user_mask is not None)
    pseudo_normal = vol.raw.copy()
    pseudo_normal[box] += change
    difference = np.zeros(vol.raw.shape, np.float32)
    difference[box] = -change
    pseudo_abnormal = vol.raw.copy()
    pseudo_abnormal[box] += _painted_change(vol, on, replaced, lesion[box])
    return {"pseudo_normal": pseudo_normal, "lesion_probability": prob, "lesion_mask": lesion.astype(np.uint8),
            "pseudo_abnormal": pseudo_abnormal, "difference": difference}


def _pseudo_normal_change(vol: CanonicalVolume, on: OnInput, replaced: np.ndarray, mask_given: bool) -> np.ndarray:
    """pseudo_normal - input inside the box, in the input's scale. Inside the lesion (`replaced`)
    the network's image replaces the input: input + scale * (net - I) would carry over whatever
    the input had above the clipping percentile (a bright cyst kept its excess as a blob in the
    pseudo-normal). Elsewhere the change is added to the exact input: inside the brain without a
    mask, nowhere when the caller gave one (the input outside the mask)."""
    box, norm = on.box, vol.norm
    raw = vol.raw[box]
    change = on.G_change[box] * norm.scale
    change[replaced] = norm.invert(on.G[box][replaced]) - raw[replaced]
    change[~replaced if mask_given else ~vol.brain[box]] = 0.0
    return change


def _painted_change(vol: CanonicalVolume, on: OnInput, replaced: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """pseudo_abnormal - input inside the box, in the input's scale. R paints a lesion at M
    (`lesion`, the box's part): its change fades out over FILL_GROW px around M (in-plane
    distance) and beyond that the pseudo-abnormal is the input exactly, not R's faint rewrite of
    the whole slice (its up-sampling checkerboard); the fade avoids a step at the rim's edge."""
    box, norm = on.box, vol.norm
    raw = vol.raw[box]
    painted = on.R_change[box] * norm.scale
    painted[replaced] = norm.invert(on.R[box][replaced]) - raw[replaced]
    if lesion.any():
        distance = ndimage.distance_transform_edt(~lesion, sampling=(1.0, 1.0, 1e6))
        painted *= np.clip(1.0 - distance / (FILL_GROW + 1), 0.0, 1.0)
    else:
        painted[...] = 0.0
    painted[~(vol.brain[box] | lesion)] = 0.0
    return painted
