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


# --- A real case made to look like what users bring (the clinical-input checks and tests) ---

def brain_scale(data: np.ndarray) -> float:
    """V99.5 of the voxels > 0 (the paper's scale of a skull-stripped image)."""
    return float(np.percentile(data[data > 0], 99.5))


def with_noise(data: np.ndarray, sigma_share: float = 0.02, everywhere: bool = False,
               seed: int = 0) -> np.ndarray:
    """Gaussian noise of SD `sigma_share` x V99.5 added to the background (or to every voxel)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, sigma_share * brain_scale(data), data.shape).astype(np.float32)
    return (data + (noise if everywhere else noise * (data <= 0))).astype(np.float32)


def with_scalp(data: np.ndarray, spacing=(1.0, 1.0, 1.0), gap_mm: float = 4.0, thickness_mm: float = 6.0,
               brightness: float = 0.8, joined_slices: int = 0, seed: int = 0) -> np.ndarray:
    """A head that was not skull-stripped, roughly: a dark skull `gap_mm` thick around the brain
    (0: none), then a bright textured scalp `thickness_mm` thick at `brightness` x V99.5; over the
    lowest `joined_slices` slices with brain, tissue fills the skull's place (as at the neck)."""
    from scipy import ndimage
    distance = ndimage.distance_transform_edt(data <= 0, sampling=spacing)
    scale = brain_scale(data)
    scalp = (distance > gap_mm) & (distance <= gap_mm + thickness_mm)
    texture = 1 + 0.1 * np.random.default_rng(seed).standard_normal(data.shape)
    out = np.where(scalp, brightness * scale * texture, data).astype(np.float32)
    if joined_slices:
        z0 = int(np.nonzero((data > 0).any(axis=(0, 1)))[0][0])
        neck = np.zeros(data.shape, bool)
        neck[:, :, z0:z0 + joined_slices] = True
        out[neck & (distance > 0) & (distance <= gap_mm)] = 0.4 * scale
    return out


def resample_case(data: np.ndarray, label: np.ndarray, affine: np.ndarray, in_plane_mm: float = 1.0,
                  slice_mm: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1 mm LPS case as a scanner would give it at `in_plane_mm` (axes 0, 1; linear
    interpolation, label nearest) with `slice_mm`-thick slices (axis 2: the mean of `slice_mm`
    1 mm slices, as thick slices average; label where more than half of them is lesion)."""
    from scipy import ndimage
    z = data.shape[2] // slice_mm * slice_mm
    thick = data[:, :, :z].reshape(data.shape[0], data.shape[1], -1, slice_mm).mean(axis=3)
    lab = (label[:, :, :z] > 0).reshape(label.shape[0], label.shape[1], -1, slice_mm).mean(axis=3) > 0.5
    size = [int(round(n / in_plane_mm)) for n in data.shape[:2]]
    zoom = (size[0] / data.shape[0], size[1] / data.shape[1], 1.0)
    image = ndimage.zoom(thick, zoom, order=1, grid_mode=True, mode="grid-constant")
    lab = ndimage.zoom(lab.astype(np.uint8), zoom, order=0, grid_mode=True, mode="grid-constant")
    out = np.array(affine, float)
    out[:3, :3] = out[:3, :3] @ np.diag([data.shape[0] / size[0], data.shape[1] / size[1], slice_mm])
    # the first voxel's centre moves with the voxel size (grid_mode: the volume's edges stay put)
    out[:3, 3] = affine[:3, :3] @ (np.array([data.shape[0] / size[0], data.shape[1] / size[1], slice_mm]) / 2 - 0.5) \
        + affine[:3, 3]
    return image.astype(np.float32), lab.astype(np.uint8), out
