"""Modality from the image, not from its name: a T1 or T1ce (or FLAIR) given where a T2 is
expected is refused because of what the image shows (issue 23 item 5).

On T2 the cerebrospinal fluid is the brightest normal tissue; on T1, T1ce and FLAIR it is darker
than white matter. The ventricles are the largest body of CSF and lie deep in the brain, so the
measure looks only at the deep brain (more than DEEP_MM from the brain's surface: the surface's
partial-volume voxels and the sulci are left out) and asks which side of its histogram is
stretched: (p95 - p50) / (p50 - p5) of the deep brain's intensities. Bright ventricles (and a
tumour's bright oedema) stretch the upper side on T2; dark ventricles (and a dark tumour) the lower
side on T1. The ratio is unchanged by any positive scaling and offset, so a z-scored T2 gives the
same value as the raw one.

Measured on the 12 cases of ../shared/data/brats and the BraTS 2023 case of
../shared/data/brats2023_unlabeled (docs/BAD_INPUTS.md says how): T2 2.58-5.84, T1 0.40-1.19,
T1ce 0.32-1.02, FLAIR 0.74-3.76 (so a FLAIR is often, not always, refused too). T2_MIN sits
between the T1s' largest value and the T2s' smallest, a factor of about 1.5 from each.
"""
from __future__ import annotations

import numpy as np

from .inputchecks import VolumeError

DEEP_MM = 15.0        # the deep brain: further than this from the brain's surface
MIN_DEEP_ML = 20.0    # less deep brain than this (a small test volume, a thin slab): no verdict
T2_MIN = 1.7          # a T2's deep brain has its upper side stretched at least this much
SAMPLE_MM = 3.0       # voxels are taken about this far apart (the measure needs no more; keeps it < 0.2 s)
CHECKED = ("t2",)     # the modalities whose images are checked


class ImageModalityError(VolumeError):
    """The image does not look like the modality the model expects."""


def csf_brightness(raw: np.ndarray, brain: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float | None:
    """(p95 - p50) / (p50 - p5) of the deep brain's intensities: above T2_MIN where CSF is bright
    (T2), below 1 where it is dark (T1, T1ce). None when the deep brain is too small to tell."""
    from scipy import ndimage

    brain = np.asarray(brain, bool)
    if not brain.any():
        return None
    # the brain's box and one voxel around it (where the array has one: a slab's cut faces are no surface)
    box = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    step = [max(1, int(SAMPLE_MM // s)) for s in spacing]
    view = tuple(slice(max(b[0] - 1, 0), b[-1] + 2, k) for b, k in zip(box, step))
    sampled = brain[view]
    sampled_mm = [s * k for s, k in zip(spacing, step)]
    deep = ndimage.distance_transform_edt(sampled, sampling=sampled_mm) > DEEP_MM
    if deep.sum() * np.prod(sampled_mm) / 1000.0 < MIN_DEEP_ML:
        return None
    values = np.asarray(raw)[view][deep].astype(np.float64)
    # exact zeros inside the brain are no tissue: the inpainting challenge's voided lesion (review
    # mode) would otherwise read as dark CSF. A scanner's tissue is never exactly 0 over a region.
    values = values[values != 0]
    if values.size * np.prod(sampled_mm) / 1000.0 < MIN_DEEP_ML:
        return None
    lo, mid, hi = np.percentile(values, [5, 50, 95])
    if not mid > lo:
        return None  # a flat lower half: no histogram to read
    return float((hi - mid) / (mid - lo))


def check_image_modality(vol, expected: str | None, where: str) -> float | None:
    """Refuse `vol` (a CanonicalVolume) when `expected` is T2 and its CSF is not bright; returns
    the measure (None: not checked)."""
    if expected is None or expected.lower() not in CHECKED:
        return None
    value = csf_brightness(vol.raw, vol.brain, vol.spacing)
    if value is not None and value < T2_MIN:
        raise ImageModalityError(
            f"{where}: does not look like a T2 image: its CSF (the ventricles, deep in the brain) is dark, as on "
            f"T1, T1ce or FLAIR, where on T2 it is the brightest tissue (bright-side stretch of the deep brain "
            f"{value:.2f}; a T2 gives at least {T2_MIN}); give the T2 image, whatever the file is named")
    return value
