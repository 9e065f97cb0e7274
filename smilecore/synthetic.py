"""A small procedural brain-like cohort with lesions, written as real BraTS-named NIfTI files.

Used by the tests and by quick runs, so that a fresh clone needs no downloaded data. Each
case is an ellipsoidal "brain" (grey rim, white matter, bright ventricles as on T2, smooth
texture) with lesions: an oedema shell brighter than any tissue (label 2) around a core (labels 1
and 4), large enough for a tiny segmentor to learn within seconds. The
healthy image before the lesion was added is written too (``<case>_t2healthy.nii.gz``, a
suffix the case finder ignores), so the truth under each lesion is known.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS = np.eye(4)


def _smooth_noise(rng, shape, scale=4):
    coarse = rng.standard_normal(tuple(max(2, s // scale) for s in shape))
    # separable linear upsampling to the full shape
    out = coarse
    for axis, size in enumerate(shape):
        src = np.linspace(0, out.shape[axis] - 1, size)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, out.shape[axis] - 1)
        w = (src - lo).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        out = np.take(out, lo, axis=axis) * (1 - w) + np.take(out, hi, axis=axis) * w
    return out


def make_case(rng: np.random.Generator, shape=(48, 48, 24), n_lesions: int | None = None,
              intensity_scale: float = 1000.0):
    """(image, healthy, label) arrays in LPS voxel order."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    a, b, c = rng.uniform(0.75, 0.9), rng.uniform(0.8, 0.95), rng.uniform(0.8, 0.95)
    r = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    brain = r < 1
    healthy = np.where(brain, 0.55, 0.0)
    healthy = np.where(brain & (r > 0.8), 0.75, healthy)                       # grey matter rim
    vent = (((x - 0.15) / 0.12) ** 2 + (y / 0.35) ** 2 + (z / 0.4) ** 2 < 1) | \
           (((x + 0.15) / 0.12) ** 2 + (y / 0.35) ** 2 + (z / 0.4) ** 2 < 1)
    healthy = np.where(brain & vent, 0.8, healthy)                              # CSF bright on T2
    healthy = healthy + brain * 0.05 * _smooth_noise(rng, shape)
    healthy = np.clip(healthy, 0.05, None) * brain
    image = healthy.copy()
    label = np.zeros(shape, np.uint8)
    n = rng.integers(0, 3) if n_lesions is None else n_lesions
    for _ in range(n):
        cx, cy, cz = rng.uniform(-0.45, 0.45, 3)
        rad = rng.uniform(0.3, 0.45)
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * 0.8) ** 2) / rad
        d = d + 0.15 * _smooth_noise(rng, shape, 6)
        oedema, core = (d < 1) & brain, (d < 0.55) & brain
        image = np.where(oedema, 1.0 + 0.05 * _smooth_noise(rng, shape, 3), image)  # oedema brightest
        image = np.where(core, 0.85 + 0.1 * _smooth_noise(rng, shape, 2), image)
        label[oedema] = 2
        label[core] = 1
        label[(d < 0.3) & brain] = 4
    image = np.clip(image, 0.05, None) * brain
    s = intensity_scale
    return (image * s).astype(np.int16), (healthy * s).astype(np.int16), label


def write_cohort(out_dir: str | Path, n_cases: int = 6, seed: int = 0, shape=(48, 48, 24),
                 ras_every: int = 3, unlabeled: int = 0) -> Path:
    """BraTS-2018-named cases `Synth_000` ...; every `ras_every`-th case is stored RAS instead
    of LPS (same anatomy, other voxel order); the last `unlabeled` cases get no seg file."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for k in range(n_cases):
        cid = f"Synth_{k:03d}"
        d = out_dir / cid
        d.mkdir(parents=True, exist_ok=True)
        image, healthy, label = make_case(rng, shape, n_lesions=1 + k % 2,
                                          intensity_scale=float(rng.uniform(300, 3000)))
        affine = LPS.copy()
        if ras_every and k % ras_every == ras_every - 1:
            image, healthy, label = (a[::-1, ::-1] for a in (image, healthy, label))
            affine = RAS.copy()  # flipped voxel order, identity affine: same world positions
        else:
            affine[:3, 3] = [shape[0] - 1, shape[1] - 1, 0]
        nib.save(nib.Nifti1Image(np.ascontiguousarray(image), affine), d / f"{cid}_t2.nii.gz")
        nib.save(nib.Nifti1Image(np.ascontiguousarray(healthy), affine), d / f"{cid}_t2healthy.nii.gz")
        if k < n_cases - unlabeled:
            nib.save(nib.Nifti1Image(np.ascontiguousarray(label), affine), d / f"{cid}_seg.nii.gz")
    return out_dir
