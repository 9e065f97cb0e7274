"""Which segmentor finds the lesion in synthesis, what it sees, and what is kept of its mask.

- S_flair when the caller gives a FLAIR (flair.py); else S_t2 where the model has one (the T2 and
  its left-right mirror in its recipe's scaling, networks.T2_NET); else S on the networks' image.
- A recipe may name "min_component_share": the segmentor then runs over every slice first, and
  its mask keeps only the 3D components at least that share of the largest (`main_components`)
  before G and R run (synthesis._run_networks, two passes). It may name "lesion_threshold" too,
  the probability above which its voxels are lesion (else the model's, 0.5): `mask_rule`.
"""
from __future__ import annotations

import numpy as np

from .flair import prepared_flair, segmentor_volumes
from .modelfile import SmileModel
from .networks import FLAIR_NET, T2_NET
from .volume import CanonicalVolume


def segmentor_input(model: SmileModel, vol: CanonicalVolume, flair, affine, flair_where: str, where: str,
                    tell) -> tuple[str, tuple | None]:
    """(the segmentor that finds the lesion, its input volumes or None): S_flair on the T2 and the
    caller's FLAIR; without one, the model's S_t2 on the T2 in its recipe's scaling where the model
    has it; else S on the image itself (None)."""
    if flair is not None:
        return FLAIR_NET, prepared_flair(model, flair, affine, vol, flair_where, where, tell)
    if model.segmentor_without_flair == T2_NET:
        return T2_NET, segmentor_volumes(vol, None, None, model.recipe(T2_NET), None, where)
    return "S", None


def mask_rule(model: SmileModel, segmentor: str) -> tuple[float, float | None]:
    """(threshold, min_component_share) of the lesion mask that `segmentor` makes: its recipe's where
    it names them, else the model's threshold and no component removal (S has no recipe)."""
    threshold = float(model.config.get("lesion_threshold", 0.5))
    recipe = model.recipe(segmentor) if segmentor != "S" else None
    if recipe is None:
        return threshold, None
    return float(recipe.get("lesion_threshold", threshold)), recipe.get("min_component_share")


def main_components(mask: np.ndarray, share: float) -> np.ndarray:
    """`mask` without its 3D components (face-connected, as cross-validation measured them)
    smaller than `share` of the largest one's volume. Cross-validated for the T2-only segmentor
    (docs/segmentor-cv.md, fifth run): isolated small components are mostly bright CSF, not
    tumour. A satellite lesion under that share of the main one is dropped too: it stays in the
    pseudo-normal (the lesion probability keeps it)."""
    from scipy import ndimage
    labels, n = ndimage.label(mask)
    if n < 2:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return np.isin(labels, 1 + np.flatnonzero(sizes >= share * sizes.max()))
