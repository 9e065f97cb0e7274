"""Volumes: NIfTI in, one canonical orientation, per-volume intensity normalisation, brain, masks.
(Writing files, atomically, is files.py's: `files.save_like` writes an array with an image's header.)

Canonical orientation is LPS (the voxel order BraTS files already have): array axis 0 runs
to the patient's Left, axis 1 to Posterior, axis 2 to Superior, so ``vol[:, :, k]`` is an
axial slice. Any input is brought there by flips and axis permutations only (the closest
axes for an oblique acquisition), so no voxel is resampled and the transform is exactly
invertible: outputs go back to the input's own voxel order and header.

Brain and background (`find_brain`): the paper's "voxels > 0" holds only for a skull-stripped
image with an exactly zero background. Scans users bring have noise in the background, an
intercept (background at 1), or skull and scalp. The background's level and noise are read off
the volume's outer shell of voxels (air around the head), brain is what is brighter than that
level by 5 noise SDs, kept as its largest connected part with holes filled. A head that was not
skull-stripped is refused with the fix named (unless the caller gives a brain mask): a foreground
larger than a brain, bright tissue apart from it (a scalp), or a dark layer enclosed near its
surface (a skull between brain and scalp). Small specks apart from the brain are left unchanged.

Normalisation (the paper's): intensities, less the background level, clipped to [0, V99.5],
V99.5 the 99.5th percentile over brain voxels, then divided by V99.5 so that the networks see
[0, 1]. On BraTS data (background exactly 0) this is exactly the paper's.

Voxel size: `CanonicalVolume.spacing` gives the voxel size along the canonical axes (mm);
synthesis resamples axial slices to the model's training spacing (see synthesis.py).

Masks (`load_mask`): a lesion or brain mask is accepted on the image's physical grid in any
voxel order (voxel centres within `grid_tolerance_mm`); a label map counts where > 0, a
probability map (values in [0, 1], not all 0/1) where >= 0.5; anything else (an image given
as a mask, negative values) is refused.

Inputs that cannot be used raise `VolumeError` naming the file (or volume) and the problem:
unreadable or truncated files, images that are not 3D, complex or non-finite voxels, values
beyond float32, a degenerate affine, no brain voxel, a constant image. docs/BAD_INPUTS.md lists
every case with the test that checks it. An oblique acquisition is not refused: its slices are
taken along the voxel axis nearest to axial (`CanonicalVolume.obliquity_deg` says how far off).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from .files import one_line
from .inputchecks import (InputWarning, VolumeError, check_not_label_map, fill_holes,  # noqa: F401
                          nibabel_quiet, orientation_note, signed_intensities, verify_gzip)

CANONICAL_AXCODES = ("L", "P", "S")
CLIP_PERCENTILE = 99.5
# How a volume's intensities are scaled to [0, 1] (Normalisation): "clip-percentile" divides by the
# brain's 99.5th percentile (the paper's); "median" maps the brain's median to MEDIAN_LEVEL and
# clips above 1. A tumour is a few percent of the brain and mostly brighter than it in T2: it
# moves the top percentile (healthy tissue of a brain with a tumour is scaled darker than the same
# brain without one) but hardly the median. MEDIAN_LEVEL is where the 99.5th percentile scaling
# puts the median on BraTS T2 (mean over the 12 cases of ../shared/data: 0.40, range 0.32-0.49),
# so networks trained on either scaling see tissue at about the same values.
NORMALISATIONS = ("clip-percentile", "median")
MEDIAN_LEVEL = 0.40
# Above this angle between the voxel axes and the anatomical axes, front ends tell the user
# that the "axial" slices are tilted (the volume is still processed, without resampling).
OBLIQUE_WARNING_DEG = 25.0
# A brain with its CSF, as a skull-stripped image holds it, is 1.0-2.0 litres; a head with skull,
# scalp, face and neck 3-5 litres. Foreground above this volume is not a skull-stripped brain.
MAX_BRAIN_ML = 2500.0
# Bright tissue apart from the brain (a scalp shell) or a dark layer enclosed within SURFACE_MM of
# its surface (a skull) above these volumes: not skull-stripped. Noise specks stay far below.
MAX_OUTSIDE_ML = 50.0
MAX_ENCLOSED_DARK_ML = 20.0
SURFACE_MM = 12.0
# Background: the voxels in this many outer layers of each face; brain: above level + k * noise.
SHELL_VOXELS = 2
BACKGROUND_NOISE_SDS = 5.0
# A label map has a few values; more distinct values than this is an image given as a mask.
MAX_LABEL_VALUES = 64


def _nonfinite_message(data: np.ndarray) -> str:
    n_nan, n_inf = int(np.isnan(data).sum()), int(np.isinf(data).sum())
    parts = [f"{n} {kind} voxel{'s' if n != 1 else ''}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
    return f"contains {' and '.join(parts)} (of {data.size}); NaN or infinite voxels cannot be processed"


def load_nifti(path: str | Path, what: str = "image",
               note_orientation: bool = True) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    """(float32 3D array, affine, image) from a NIfTI file, with clear errors for bad files; an
    image whose header stores no orientation gets a note (InputWarning) unless `note_orientation`
    is False (training: make-cohort's RAS cases have an identity affine on purpose)."""
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{what} {path}: file not found" if not path.exists()
                          else f"{what} {path}: is a folder, not a NIfTI file")
    if path.name.lower().endswith(".gz"):
        verify_gzip(path, what)
    try:
        with nibabel_quiet():
            img = nib.load(str(path))
        kind = np.dtype(img.get_data_dtype()).kind
        if kind == "c":
            raise VolumeError(f"{what} {path}: complex-valued voxels ({img.get_data_dtype()}); "
                              "expected a magnitude image")
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.asarray(img.dataobj, dtype=np.float32)
    except VolumeError:
        raise
    except Exception as exc:  # nibabel raises many types for broken or truncated files
        raise VolumeError(f"{what} {path}: cannot be read as NIfTI ({one_line(exc)})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        hint = " (a 4D series: save the one volume to use as its own file)" if data.ndim == 4 else ""
        raise VolumeError(f"{what} {path}: expected a 3D volume, got shape {data.shape}{hint}")
    if not np.isfinite(data).all():
        with np.errstate(over="ignore", invalid="ignore"):
            source = np.asanyarray(img.dataobj)
        if np.isfinite(source).all():
            raise VolumeError(f"{what} {path}: values up to {float(np.abs(source).max()):.3g} are "
                              f"beyond the float32 range")
        raise VolumeError(f"{what} {path}: {_nonfinite_message(data)}")
    note = orientation_note(img, path, what) if what == "image" and note_orientation else None
    if note:
        import warnings
        warnings.warn(note, InputWarning, stacklevel=2)
    # C order (nibabel gives the file's Fortran order): what the rest works fastest on, and what a
    # canonical view of it keeps without a copy (CanonicalVolume.from_array)
    return np.ascontiguousarray(data), img.affine, img


def check_affine(affine, where: str = "volume") -> np.ndarray:
    """A usable voxel-to-world matrix: 4 x 4, finite, its 3 x 3 part invertible."""
    try:
        affine = np.asarray(affine, dtype=float)
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{where}: the affine is not a 4 x 4 matrix ({one_line(exc)})") from None
    if affine.shape != (4, 4):
        raise VolumeError(f"{where}: the affine has shape {affine.shape}, expected 4 x 4")
    if not np.isfinite(affine).all():
        raise VolumeError(f"{where}: the affine (voxel-to-world matrix) holds NaN or infinite values")
    sv = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if not sv.min() > 1e-6 * max(sv.max(), 1e-300):
        raise VolumeError(f"{where}: the affine (voxel-to-world matrix) is degenerate (a voxel size of 0 "
                          "or two voxel axes along the same direction); the header is damaged")
    return affine


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle, in degrees, between a voxel axis and the anatomical axis nearest to it."""
    return float(np.degrees(np.max(nib.affines.obliquity(np.asarray(affine, dtype=float)))))


def to_canonical(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the voxel order of `affine` to canonical LPS."""
    return nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(CANONICAL_AXCODES))


def reorient(data: np.ndarray, transform: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(nio.apply_orientation(data, transform))


def restore_orientation(data: np.ndarray, transform: np.ndarray, copy: bool = True) -> np.ndarray:
    """Inverse of `reorient` with the same transform (a contiguous copy, or with `copy=False` a
    view: flips and axis swaps only)."""
    # transform[i] = (canonical axis, flip) for input axis i; the inverse swaps the roles.
    inverse = np.zeros_like(transform)
    for input_axis, (canonical_axis, flip) in enumerate(transform):
        inverse[int(canonical_axis)] = (input_axis, flip)
    view = nio.apply_orientation(data, inverse)
    return np.ascontiguousarray(view) if copy else view


@dataclass
class Normalisation:
    """Per-volume scaling to [0, 1]: x -> clip(x - offset, 0, scale) / scale, where offset is the
    background level (0 for BraTS) and scale the clip percentile of brain voxels above it."""
    scale: float
    clip_percentile: float = CLIP_PERCENTILE
    offset: float = 0.0
    method: str = "clip-percentile"

    @classmethod
    def fit(cls, data: np.ndarray, brain: np.ndarray, where: str = "volume",
            clip_percentile: float = CLIP_PERCENTILE, offset: float = 0.0,
            method: str = "clip-percentile") -> "Normalisation":
        if method not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {method!r}; choose from {NORMALISATIONS}")
        if not brain.any():
            raise VolumeError(f"{where}: no brain voxels (the volume is empty or all <= 0)")
        values = data[brain] - offset
        lo, hi = float(values.min()), float(values.max())
        if lo == hi:
            raise VolumeError(f"{where}: every brain voxel (> 0) has the same value {hi + offset:g}; a "
                              "constant image holds no anatomy (is this a mask rather than an MRI?)")
        q = clip_percentile if method == "clip-percentile" else 50.0
        scale = float(np.percentile(values, q))
        if not scale > 0:
            raise VolumeError(f"{where}: the {q:g}th intensity percentile of the brain is {scale}; "
                              "the image is constant or not a positive-valued MRI")
        if method == "median":
            scale /= MEDIAN_LEVEL
        return cls(scale, clip_percentile, offset, method)

    def apply(self, data: np.ndarray) -> np.ndarray:
        out = np.subtract(data, self.offset, dtype=np.float32)   # one new array, the rest in place
        np.clip(out, 0.0, self.scale, out=out)
        out /= np.float32(self.scale)
        return out

    def invert(self, data: np.ndarray) -> np.ndarray:
        return data * self.scale + self.offset


def _outer_shell(data: np.ndarray) -> np.ndarray | None:
    """The outer SHELL_VOXELS layers of the three darkest faces (by median) among the faces of the
    axes wide enough to have an inside: a slab or a scan down to the neck has tissue on some faces,
    air on the others."""
    k = SHELL_VOXELS
    faces = [np.take(data, idx, axis=a).ravel() for a in range(3) if data.shape[a] > 4 * k
             for idx in (list(range(k)), list(range(-k, 0)))]
    if not faces:
        return None
    faces.sort(key=np.median)
    return np.concatenate(faces[:max(1, len(faces) // 2)])


def background_level(data: np.ndarray) -> tuple[float, float]:
    """(level, noise SD) of the air around the head, from the volume's outer shell (median and
    MAD). Where the shell is not dark (a volume cropped to the brain, or too small to have a
    shell), the background is 0 without noise: the paper's "> 0" for a skull-stripped image."""
    shell = _outer_shell(data)
    if shell is None:
        return 0.0, 0.0
    level = float(np.median(shell))
    if level > 0.1 * float(np.percentile(data, CLIP_PERCENTILE)):  # tissue at the border, not air
        return 0.0, 0.0
    return level, 1.4826 * float(np.median(np.abs(shell - level)))


@dataclass
class Brain:
    """Where the brain is, and what was found around it (`find_brain`)."""
    mask: np.ndarray           # bool, same voxel order as the data
    level: float               # background level (the normalisation's offset)
    noise: float               # background noise SD (0: an exactly constant background)
    brain_ml: float
    outside_ml: float = 0.0    # bright voxels apart from the brain (noise specks), left unchanged
    given: bool = False        # the caller's mask


def _not_skull_stripped(where: str, evidence: str) -> VolumeError:
    return VolumeError(
        f"{where}: {evidence}: the image seems not to be skull-stripped (or its background is not dark). "
        "Skull-strip it first (in Slicer: the HD Brain Extraction or Swiss Skull Stripper extension; on the "
        "command line: a skull-stripping tool such as HD-BET or FSL bet), or give a brain mask "
        "(smile synthesize --brain-mask)")


def find_brain(data: np.ndarray, spacing=(1.0, 1.0, 1.0), where: str = "volume",
               given: np.ndarray | None = None) -> Brain:
    """Brain voxels of `data` (voxel size `spacing`, mm): above the background by
    BACKGROUND_NOISE_SDS noise SDs (and > 0), the largest connected part, holes filled; or the
    caller's mask (`given`). Refused as not skull-stripped: a foreground larger than any brain
    (MAX_BRAIN_ML), bright tissue apart from it (a scalp shell, MAX_OUTSIDE_ML), or a dark layer
    enclosed near its surface (a skull between brain and scalp, MAX_ENCLOSED_DARK_ML)."""
    from scipy import ndimage

    voxel_ml = float(np.prod(spacing)) / 1000.0
    level, noise = background_level(data)
    signed = signed_intensities(data, _outer_shell(data))  # z-scored: the brain is the non-zero region
    if given is not None:
        mask = np.asarray(given, bool)
        level = float(data[mask].min()) if signed and mask.any() else level
        return Brain(mask, level, noise, float(mask.sum()) * voxel_ml, given=True)
    if float(data.max()) == float(data.min()) > 0:
        raise VolumeError(f"{where}: every brain voxel (> 0), indeed every voxel, has the same value "
                          f"{float(data.max()):g}; a constant image holds no anatomy (is this a mask rather "
                          "than an MRI?)")
    # a magnitude image: brighter than the background (and > 0); a z-scored one: not exactly 0
    foreground = (data != 0) if signed else data > max(level + BACKGROUND_NOISE_SDS * noise, 0.0)
    labels, n = ndimage.label(foreground)
    if n == 0:
        return Brain(foreground, level, noise, 0.0)
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == int(np.argmax(sizes)) + 1
    mask = fill_holes(largest)
    brain_ml = float(mask.sum()) * voxel_ml
    outside_ml = float(sizes.sum() - sizes.max()) * voxel_ml
    if brain_ml > MAX_BRAIN_ML:
        raise _not_skull_stripped(where, f"the foreground is {brain_ml / 1000:.1f} litres, more than a brain "
                                         "(1.0-2.0 litres)")
    if outside_ml > MAX_OUTSIDE_ML:
        raise _not_skull_stripped(where, f"{outside_ml:.0f} mL of bright tissue lie apart from the brain "
                                         "(a scalp, or a noisy background)")
    # A skull is a dark layer between brain and scalp: enclosed within each axial slice (a slab, or
    # a scalp joined to the brain at the neck, leaves it open in 3D) and near the surface
    # (ventricles and a dark necrosis lie deeper). Skull-stripped BraTS cases: 0.4-2.3 mL.
    slices_filled = fill_holes(largest, in_plane=True)
    enclosed = slices_filled & ~largest
    if float(enclosed.sum()) * voxel_ml > MAX_ENCLOSED_DARK_ML:
        depth = ndimage.distance_transform_edt(slices_filled, sampling=spacing)
        skull_ml = float((enclosed & (depth < SURFACE_MM)).sum()) * voxel_ml
        if skull_ml > MAX_ENCLOSED_DARK_ML:
            raise _not_skull_stripped(where, f"{skull_ml:.0f} mL of dark voxels lie within {SURFACE_MM:.0f} mm "
                                             "of the surface, between the brain and a bright outer layer "
                                             "(a skull between brain and scalp)")
    level = float(data[mask].min()) if signed else level  # the scaling starts at the brain's minimum
    return Brain(mask, level, noise, brain_ml, outside_ml)


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each voxel axis of `affine`."""
    return np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


@dataclass
class CanonicalVolume:
    """A volume in canonical LPS order, normalised, with what is needed to undo both."""
    image: np.ndarray          # float32 (X, Y, Z) in [0, 1], LPS
    brain: np.ndarray          # bool, LPS
    raw: np.ndarray            # float32 input intensities, LPS
    norm: Normalisation
    transform: np.ndarray      # orientation transform input -> LPS
    obliquity_deg: float = 0.0  # angle between the voxel axes and the anatomical axes
    spacing: tuple = (1.0, 1.0, 1.0)  # voxel size (mm) along the canonical axes L, P, S
    found: Brain | None = None  # how the brain was found (background level, noise, outside parts)

    @classmethod
    def from_array(cls, data: np.ndarray, affine: np.ndarray, where: str = "volume",
                   clip_percentile: float = CLIP_PERCENTILE, brain: np.ndarray | None = None,
                   normalisation: str = "clip-percentile") -> "CanonicalVolume":
        """`brain`: the caller's brain mask in the voxel order of `data` (else it is found);
        `normalisation`: one of NORMALISATIONS."""
        data = np.asarray(data)
        if data.dtype.kind == "c":
            raise VolumeError(f"{where}: complex-valued voxels ({data.dtype}); expected a magnitude image")
        with np.errstate(over="ignore"):
            data = data.astype(np.float32, copy=False)
        if data.ndim != 3:
            raise VolumeError(f"{where}: expected a 3D volume, got shape {data.shape}")
        if min(data.shape) < 1:
            raise VolumeError(f"{where}: the volume is empty (shape {data.shape})")
        if not np.isfinite(data).all():
            raise VolumeError(f"{where}: {_nonfinite_message(data)}")
        affine = check_affine(affine, where)
        check_not_label_map(data, where)
        transform = to_canonical(affine)
        raw = nio.apply_orientation(data, transform)  # a view (flips, axis swaps): no copy of a large volume
        if not (np.diff(np.abs(raw.strides)) <= 0).all():   # but in C order (last axis fastest): the brain
            raw = np.ascontiguousarray(raw)                 # search ran 3x slower on a Fortran-ordered view
        sizes = voxel_sizes(affine)
        spacing = tuple(float(sizes[int(np.flatnonzero(transform[:, 0] == axis)[0])]) for axis in range(3))
        if brain is not None and np.shape(brain) != data.shape:
            raise VolumeError(f"{where}: brain mask shape {np.shape(brain)} differs from the image's {data.shape}")
        found = find_brain(raw, spacing, where, None if brain is None else reorient(np.asarray(brain, bool), transform))
        norm = Normalisation.fit(raw, found.mask, where, clip_percentile, offset=found.level, method=normalisation)
        # the networks see nothing outside the brain, as in training (BraTS: background 0)
        image = norm.apply(raw)
        image *= found.mask
        return cls(image, found.mask, raw, norm, transform, obliquity_deg(affine), spacing, found)

    def to_input_order(self, data: np.ndarray, copy: bool = True) -> np.ndarray:
        """`data` (canonical order) in the input's voxel order; `copy=False`: a view of it."""
        return restore_orientation(data, self.transform, copy)

    def to_canonical_order(self, data: np.ndarray) -> np.ndarray:
        return reorient(data, self.transform)


def grid_tolerance_mm(affine: np.ndarray) -> float:
    """How far two grids' voxel centres may be apart and still be one grid: 1 % of the smallest
    voxel size (a header re-saved in float32 moves them by micrometres), at least 1e-3 mm."""
    return max(1e-3, 0.01 * float(voxel_sizes(affine).min()))


def _corners(shape) -> np.ndarray:
    return np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                     for k in (0, shape[2] - 1)]).T


def on_image_grid(data: np.ndarray, affine: np.ndarray, image_shape: tuple, image_affine: np.ndarray,
                  what: str, image_name: str = "the image") -> np.ndarray:
    """`data` brought to the image's voxel order when it lies on the image's grid (the same voxel
    centres within `grid_tolerance_mm`, in any voxel order); else VolumeError naming `what`."""
    image_affine = check_affine(image_affine, "image")
    affine = check_affine(affine, what)
    t_data, t_image = to_canonical(affine), to_canonical(image_affine)
    canon = reorient(data, t_data)
    canon_shape = reorient(np.empty(image_shape, bool), t_image).shape
    if canon.shape != canon_shape:
        raise VolumeError(f"{what}: not on the grid of {image_name} (shape {data.shape} against "
                          f"{tuple(image_shape)})")
    # the canonical voxel -> world matrices must place every corner voxel at the same point
    a = affine @ nio.inv_ornt_aff(t_data, data.shape)
    b = image_affine @ nio.inv_ornt_aff(t_image, image_shape)
    gap = float(np.abs((a - b) @ _corners(canon.shape)).max())
    tol = grid_tolerance_mm(image_affine)
    if gap > tol:
        raise VolumeError(f"{what}: not on the grid of {image_name} (voxel centres up to {gap:.3g} mm apart, more than "
                          f"the {tol:.3g} mm tolerance); resample it onto the image first")
    return restore_orientation(canon, t_image)


def binary_from_mask_values(data: np.ndarray, what: str) -> np.ndarray:
    """A label map counts where > 0; a probability map (values in [0, 1], not only 0 and 1) where
    >= 0.5. Negative values, or many distinct or non-integer values above 1, are an image given as
    a mask: refused."""
    if (data < 0).any():
        raise VolumeError(f"{what}: has negative values (down to {float(data.min()):g}); a mask holds labels "
                          "(0, 1, 2, ...) or probabilities (0-1)")
    if float(data.max()) <= 1.0 and not np.isin(data, (0.0, 1.0)).all():
        return data >= 0.5
    values = np.unique(data)
    if (values != np.round(values)).any() or len(values) > MAX_LABEL_VALUES:
        raise VolumeError(f"{what}: {len(values)} distinct values from {float(values[0]):g} to "
                          f"{float(values[-1]):g} are neither a label map (a few whole numbers) nor a "
                          "probability map (0-1): is this an image rather than a mask?")
    return data > 0


def load_mask(path: str | Path, image_shape: tuple, image_affine: np.ndarray,
              what: str = "mask", image_name: str = "the image") -> np.ndarray:
    """A lesion or brain mask file as a boolean array in the image's voxel order (see
    `on_image_grid` and `binary_from_mask_values`)."""
    data, affine, _ = load_nifti(path, what=what)
    where = f"{what} {path}"
    mask = binary_from_mask_values(on_image_grid(data, affine, image_shape, image_affine, where, image_name), where)
    if not mask.any():
        if what.startswith("brain"):
            raise VolumeError(f"{where}: the brain mask is empty (no voxel > 0); give a mask that is > 0 on the "
                              "brain, or leave --brain-mask out to have the brain found")
        import warnings
        warnings.warn(f"{where} is empty (no voxel > 0): there is no lesion to review, and the outputs show no "
                      "lesion; run without --mask for the automatic lesion mask", InputWarning, stacklevel=2)
    return mask


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
