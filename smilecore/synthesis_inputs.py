"""What synthesis accepts, checked before any network runs: an image of the model's modality,
the volume in canonical order with its brain, and a lesion mask that is one (see the synthesis
module docstring and docs/BAD_INPUTS.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .cases import canonical_modality, modality_from_name
from .modalitycheck import check_image_modality
from .modelfile import SmileModel
from .volume import OBLIQUE_WARNING_DEG, CanonicalVolume, VolumeError

VOIDED_SHARE = 0.5        # a lesion mask this much exactly 0 in the image: the challenge's voided format
MAX_LESION_SHARE = 0.5    # a lesion mask larger than this share of the brain is refused
OUTSIDE_NOTE_ML = 5.0     # bright tissue outside the brain above this volume gets a note


class ModalityMismatch(ValueError):
    """The input's modality (stated, or from its name) is not the model's."""


def check_modality(model: SmileModel, stated: str | None = None, name: str | Path | None = None,
                   where: str = "volume") -> str | None:
    """Refuse an input whose modality differs from the model's. The input's modality is the
    `stated` one, else the one its `name` carries as a BraTS suffix; unknown (None) passes.
    Returns the input's modality."""
    source = "stated"
    if stated:
        modality = canonical_modality(stated)
    else:
        modality = modality_from_name(name) if name is not None else None
        source = f"from its name {Path(str(name)).name}"
    model_modality = model.config.get("modality")
    if modality is None or model_modality is None or canonical_modality(model_modality) == modality:
        return modality
    model_name = f"model file {model.path}" if model.path else "the model"
    raise ModalityMismatch(
        f"{where} is {modality} ({source}) but {model_name} was trained on {model_modality}: a model only "
        f"works on its own modality. Choose a {modality} model, or, if the image really is "
        f"{model_modality}, state it (smile synthesize --modality {model_modality})")


def check_lesion_mask(mask: np.ndarray, brain: np.ndarray, where: str, tell) -> None:
    """Refuse a lesion mask that is not one: most of the brain, or mostly outside it."""
    n = int(mask.sum())
    inside = int((mask & brain).sum())
    share = inside / max(int(brain.sum()), 1)
    if share > MAX_LESION_SHARE:
        raise VolumeError(f"{where}: the lesion mask covers {100 * share:.0f} % of the brain (at most "
                          f"{100 * MAX_LESION_SHARE:.0f} % is taken as a lesion); is it a brain mask? "
                          "(a brain mask goes to --brain-mask)")
    if n and inside < n / 2:
        raise VolumeError(f"{where}: {n - inside} of the lesion mask's {n} voxels lie outside the brain: the "
                          "mask does not belong to this image")
    if inside < n:
        tell(f"{where}: {n - inside} of the lesion mask's {n} voxels lie outside the brain and are ignored")


def is_voided(data: np.ndarray, mask: np.ndarray | None) -> bool:
    """Whether the image is given as the inpainting challenge gives it: its lesion voided (set
    to 0) inside the mask. In review mode the mask is then part of the brain, not a hole in it."""
    if mask is None or np.shape(mask) != np.shape(data):
        return False
    data, inside = np.asarray(data), np.asarray(mask) > 0
    zeros = inside & (data == 0)
    if not inside.any() or zeros.sum() < VOIDED_SHARE * inside.sum():
        return False
    # and the zeros lie within the box of the image's non-zero voxels: a mask of the background
    # (~brain, a mask of another image) holds zeros too, mostly outside that box
    tissue = data != 0
    if not tissue.any():
        return False
    box = tuple(slice(idx[0], idx[-1] + 1) for idx in
                (np.flatnonzero(tissue.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)))
    return zeros[box].sum() >= 0.9 * zeros.sum()


def voided_brain(data: np.ndarray, affine: np.ndarray, mask: np.ndarray, where: str) -> np.ndarray:
    """The brain of a voided image (voxel order of `data`): found, with all its checks, on the
    image whose voided voxels hold the brain's median (a void at the surface is otherwise outside
    the brain, and one enclosed near it looks like a skull), then the mask added."""
    data = np.asarray(data, np.float32)
    inside = np.asarray(mask) > 0
    hole = inside & (data == 0)
    tissue = data[(data > 0) & ~inside]
    patched = np.where(hole, np.float32(np.median(tissue)) if tissue.size else np.float32(1), data)
    vol = CanonicalVolume.from_array(patched, affine, where=where)
    return vol.to_input_order(vol.brain) | inside


def canonical_volume(data: np.ndarray, affine: np.ndarray, model: SmileModel, where: str,
                     brain: np.ndarray | None, tell, lesion_mask: np.ndarray | None = None) -> CanonicalVolume:
    """`data` in canonical LPS order (axial slices whatever the voxel order), its brain found (or
    the caller's `brain`), normalised as the model's training data was. `tell` gets a note on an
    oblique acquisition (its slices are tilted from the axial ones the model knows) and on
    bright tissue apart from the brain (it is left unchanged). `lesion_mask` (voxel order of
    `data`, review mode): where the image is voided inside it (`is_voided`), the brain is
    `voided_brain`."""
    if brain is None and is_voided(data, lesion_mask):
        brain = voided_brain(data, affine, lesion_mask, where)
    vol = CanonicalVolume.from_array(data, affine, where=where, brain=brain,
                                     clip_percentile=model.config["normalisation"]["clip_percentile"],
                                     normalisation=model.normalisation)
    check_image_modality(vol, model.config.get("modality"), where)  # a T1 named like a T2 (issue 23 item 5)
    if vol.obliquity_deg > OBLIQUE_WARNING_DEG:
        tell(f"{where}: the voxel axes are {vol.obliquity_deg:.0f} degrees oblique to the anatomical axes; "
             "slices are taken along the voxel axis nearest to axial without resampling, so they are "
             "tilted by that much from the axial slices the model was trained on (resample the image to "
             "axial for the best result)")
    if vol.found.outside_ml > OUTSIDE_NOTE_ML:
        tell(f"{where}: {vol.found.outside_ml:.0f} mL of bright voxels lie apart from the brain (skull, scalp or "
             "noise); they are left unchanged")
    return vol


def canonical_lesion_mask(mask: np.ndarray | None, data: np.ndarray, vol: CanonicalVolume, where: str,
                          tell) -> np.ndarray | None:
    """The caller's lesion mask (voxel order of `data`) as a boolean array in `vol`'s canonical
    order, checked (`check_lesion_mask`); None without one."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != np.shape(data):
        raise VolumeError(f"{where}: lesion mask shape {mask.shape} differs from the image's {np.shape(data)}")
    user_mask = vol.to_canonical_order(mask > 0)
    if is_voided(vol.raw, user_mask):   # the challenge's format: the voided mask is brain
        vol.brain |= user_mask & (vol.raw == 0)
    check_lesion_mask(user_mask, vol.brain, where, tell)
    return user_mask
