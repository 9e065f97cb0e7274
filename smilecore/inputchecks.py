"""Input checks below volume.py: a damaged gzip stream, a label map given as the image, signed
(z-scored) intensities, a header without orientation, nibabel's logging while probing a file;
and the brain search's hole filling (`fill_holes`).

Each names the file (or volume), the problem and the fix; docs/BAD_INPUTS.md lists them with
their tests. `VolumeError` lives here so that this module needs nothing from volume.py (which
re-exports it); notes about a run that still works are issued as `InputWarning` (the CLI prints
them as `smile <command>: note: ...`).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .files import nibabel_quiet, one_line  # noqa: F401 (nibabel_quiet: volume.py)

# An image with at most this many distinct non-zero values, all whole numbers, is a label map.
MAX_IMAGE_LABELS = 16
# ... when it has at least this many voxels (tiny test volumes may hold a few whole numbers).
MIN_LABEL_CHECK_VOXELS = 4096
# Signed intensities (z-scored): between these shares of the non-zero voxels are negative.
SIGNED_SHARE = (0.05, 0.95)


class VolumeError(ValueError):
    """An input volume that cannot be used; the message names the file and the problem."""


class InputWarning(UserWarning):
    """A note about an input that is still used (an assumed orientation, an empty review mask)."""


def verify_gzip(path: Path, what: str = "image") -> None:
    """Read a gzip file to its end, so that its CRC and length are checked (nibabel reads only
    the bytes it needs and never sees a damaged stream's checksum). A file that is not gzip at all
    is left to nibabel, whose message says so."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return
    except OSError:
        return
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeError(f"{what} {path}: cannot be read as NIfTI ({one_line(exc)}): its gzip stream is "
                          f"damaged or cut short (`gzip -t {path.name}` fails); copy the file again from "
                          "its source") from exc


def check_not_label_map(data: np.ndarray, where: str) -> None:
    """Refuse a segmentation or label map given as the image: a few whole-number values."""
    if data.size < MIN_LABEL_CHECK_VOXELS:
        return
    flat = data.ravel()
    if len(np.unique(flat[::97])) > MAX_IMAGE_LABELS + 1:  # quick: a subsample already has many values
        return
    values = np.unique(flat)
    nonzero = values[values != 0]
    if not 2 <= len(nonzero) <= MAX_IMAGE_LABELS or (values != np.round(values)).any():
        return
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise VolumeError(f"{where}: holds only {len(values)} whole-number values ({shown}): it is a label map "
                      "(a segmentation), not an MRI image; give the image itself (for example "
                      "<case>_t2.nii.gz, not <case>_seg.nii.gz)")


def signed_intensities(data: np.ndarray, shell: np.ndarray | None) -> bool:
    """An intensity-normalised image (z-scored: brain around 0 +- 1, negative values inside it)
    with an exactly zero background (`shell`: the volume's outer voxels, all exactly 0): its brain
    is the non-zero region, and its scaling starts at the brain's minimum rather than at 0."""
    if shell is None or shell.any() or not float(data.min()) < 0.0:
        return False
    nonzero = data[data != 0]
    share = float((nonzero < 0).mean()) if nonzero.size else 0.0
    return SIGNED_SHARE[0] <= share <= SIGNED_SHARE[1]


def orientation_note(img, path: Path, what: str = "image") -> str | None:
    """What to tell the user when the header holds no orientation: an Analyze file, a NIfTI
    whose qform and sform codes are 0, or a NIfTI with an identity affine (an array saved
    without its header). The result is then as the header's assumed axes make it."""
    import nibabel as nib
    if isinstance(img, nib.Nifti1Pair):  # NIfTI-1 and -2, single file or pair
        header = img.header
        codes = int(header["qform_code"]), int(header["sform_code"])
        if codes == (0, 0):
            return (f"{what} {path}: its header stores no orientation (qform and sform codes are 0); the voxel "
                    "axes are assumed, so left and right or the slice direction may be wrong: check the "
                    "result, or save the image with its original header")
        if np.allclose(img.affine, np.eye(4)):  # not a RAS header with an origin (make-cohort writes those)
            return (f"{what} {path}: its header has an identity affine (an array saved without its header?), so "
                    "it holds no real orientation; the voxel axes are assumed to be right, anterior, superior: "
                    "check the result, or save the image with its original header")
        return None
    if isinstance(img, nib.AnalyzeImage):
        return (f"{what} {path}: an Analyze file stores no orientation; the orientation is assumed (the "
                "first axis running right to left, radiological), so left and right may be swapped: check the "
                "result, or convert the file to NIfTI with its orientation")
    return None


def fill_holes(mask: np.ndarray, in_plane: bool = False) -> np.ndarray:
    """scipy.ndimage.binary_fill_holes (face connectivity; `in_plane`: within each slice of the
    last axis), with the same result, 5-10x faster on a brain volume: scipy grows the background
    from the array's border one voxel layer per pass; here the background is labelled once, in
    the mask's bounding box grown by a voxel, and its parts that touch the box's border (along an
    axis the connectivity crosses) stay background (outside the box all is one background part
    that reaches the array's border)."""
    from scipy import ndimage
    mask = np.asarray(mask, bool)
    out = mask.copy()
    if not mask.any():
        return out
    box = []
    for axis in range(mask.ndim):
        hit = np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
        box.append(slice(max(int(hit[0]) - 1, 0), int(hit[-1]) + 2))
    box = tuple(box)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    if in_plane:
        structure = np.zeros((3,) * mask.ndim, bool)
        structure[..., 1] = ndimage.generate_binary_structure(mask.ndim - 1, 1)
    labels, n = ndimage.label(~mask[box], structure)
    hole = np.ones(n + 1, bool)
    hole[0] = False
    for axis in range(mask.ndim - 1 if in_plane else mask.ndim):
        hole[np.take(labels, [0, -1], axis=axis)] = False
    out[box] |= hole[labels]
    return out
