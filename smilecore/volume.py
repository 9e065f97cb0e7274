"""Volumes: NIfTI in and out, one canonical orientation, per-volume intensity normalisation.

Canonical orientation is LPS (the voxel order BraTS files already have): array axis 0 runs
to the patient's Left, axis 1 to Posterior, axis 2 to Superior, so ``vol[:, :, k]`` is an
axial slice. Any input is brought there by flips and axis permutations only (the closest
axes for an oblique acquisition), so no voxel is resampled and the transform is exactly
invertible: outputs go back to the input's own voxel order and header.

Normalisation (the paper's): intensities clipped to [0, V99.5], V99.5 the 99.5th percentile
over brain voxels (voxels > 0 in a skull-stripped image), then divided by V99.5 so that the
networks see [0, 1].
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

CANONICAL_AXCODES = ("L", "P", "S")
CLIP_PERCENTILE = 99.5


class VolumeError(ValueError):
    """An input volume that cannot be used; the message names the file and the problem."""


def load_nifti(path: str | Path, what: str = "image") -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    """(float32 3D array, affine, image) from a NIfTI file, with clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{what} {path}: file not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise VolumeError(f"{what} {path}: cannot be read as NIfTI ({type(exc).__name__}: {exc})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeError(f"{what} {path}: expected a 3D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise VolumeError(f"{what} {path}: contains NaN or infinite voxels")
    return data, img.affine, img


def to_canonical(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the voxel order of `affine` to canonical LPS."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL_AXCODES))


def reorient(data: np.ndarray, transform: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(nio.apply_orientation(data, transform))


def restore_orientation(data: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Inverse of `reorient` with the same transform."""
    # transform[i] = (canonical axis, flip) for input axis i; the inverse swaps the roles.
    inverse = np.zeros_like(transform)
    for input_axis, (canonical_axis, flip) in enumerate(transform):
        inverse[int(canonical_axis)] = (input_axis, flip)
    return np.ascontiguousarray(nio.apply_orientation(data, inverse))


@dataclass
class Normalisation:
    """Per-volume scaling to [0, 1]: x -> clip(x, 0, scale) / scale."""
    scale: float
    clip_percentile: float = CLIP_PERCENTILE

    @classmethod
    def fit(cls, data: np.ndarray, brain: np.ndarray, where: str = "volume",
            clip_percentile: float = CLIP_PERCENTILE) -> "Normalisation":
        if not brain.any():
            raise VolumeError(f"{where}: no brain voxels (the volume is empty or all <= 0)")
        scale = float(np.percentile(data[brain], clip_percentile))
        if not scale > 0:
            raise VolumeError(f"{where}: the {clip_percentile}th intensity percentile is {scale}; "
                              "the image is constant or not a positive-valued MRI")
        return cls(scale, clip_percentile)

    def apply(self, data: np.ndarray) -> np.ndarray:
        return (np.clip(data, 0.0, self.scale) / self.scale).astype(np.float32)

    def invert(self, data: np.ndarray) -> np.ndarray:
        return data * self.scale


def brain_mask(data: np.ndarray) -> np.ndarray:
    """Brain voxels of a skull-stripped image: everything above zero."""
    return data > 0


@dataclass
class CanonicalVolume:
    """A volume in canonical LPS order, normalised, with what is needed to undo both."""
    image: np.ndarray          # float32 (X, Y, Z) in [0, 1], LPS
    brain: np.ndarray          # bool, LPS
    raw: np.ndarray            # float32 input intensities, LPS
    norm: Normalisation
    transform: np.ndarray      # orientation transform input -> LPS

    @classmethod
    def from_array(cls, data: np.ndarray, affine: np.ndarray, where: str = "volume",
                   clip_percentile: float = CLIP_PERCENTILE) -> "CanonicalVolume":
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 3:
            raise VolumeError(f"{where}: expected a 3D volume, got shape {data.shape}")
        if not np.isfinite(data).all():
            raise VolumeError(f"{where}: contains NaN or infinite voxels")
        transform = to_canonical(np.asarray(affine, dtype=float))
        raw = reorient(data, transform)
        brain = brain_mask(raw)
        norm = Normalisation.fit(raw, brain, where, clip_percentile)
        return cls(norm.apply(raw), brain, raw, norm, transform)

    def to_input_order(self, data: np.ndarray) -> np.ndarray:
        return restore_orientation(data, self.transform)

    def to_canonical_order(self, data: np.ndarray) -> np.ndarray:
        return reorient(data, self.transform)


def load_label(path: str | Path, image_shape: tuple, image_affine: np.ndarray) -> np.ndarray:
    """Segmentation as a boolean whole-tumour mask (any label > 0), checked against its image."""
    data, affine, _ = load_nifti(path, what="segmentation")
    if data.shape != tuple(image_shape):
        raise VolumeError(f"segmentation {path}: shape {data.shape} differs from its image's {tuple(image_shape)}")
    if not np.allclose(affine, image_affine, atol=1e-3):
        raise VolumeError(f"segmentation {path}: its affine differs from its image's (not the same grid)")
    values = np.unique(data)
    bad = [v for v in values if v < 0 or v != np.round(v) or v > 4]
    if bad:
        raise VolumeError(f"segmentation {path}: label values {bad[:5]} are not BraTS labels (0-4)")
    return data > 0


def save_like(data: np.ndarray, reference: nib.Nifti1Image, path: str | Path,
              dtype=np.float32) -> Path:
    """Write `data` with the reference image's affine and header, atomically (temp + rename)."""
    path = Path(path)
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(np.asarray(data, dtype=dtype), reference.affine, header)
    out.header.set_slope_inter(1, 0)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        nib.save(out, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
