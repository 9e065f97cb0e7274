"""FLAIR as an optional second input to the lesion segmentor (issue 23, item 3).

Why: on T2 both the CSF and a tumour's oedema are bright, and S confuses them (ventricles called
lesion); on FLAIR the CSF is dark and the oedema bright. A model file may carry S_flair
(networks.FLAIR_NET), a segmentor that sees the T2 and the FLAIR, with its recipe in the
configuration ("flair_segmentor", modelfile.segmentor_recipe). Cross-validated on the 12 shared BraTS
cases (scripts/cv_segmentor.py, recipe mirror+flair), fold 0 gave a Dice of 0.837 against 0.764
for T2 alone, and bright tissue called lesion 0.07 % against 2.2 %.

At synthesis, with a FLAIR given:
- The model must have S_flair, else the run is refused before any work (`require_flair`).
- The FLAIR is brought onto the T2's voxel grid (`flair_on_t2_grid`): as it is when it lies on
  that grid in any voxel order, else resampled linearly through world coordinates (the affines;
  scipy's affine_transform, order 1). It must cover the T2's brain (`MIN_COVER`, counted in world
  coordinates), else a one-line error naming the file; partly covered, a note.
- It gets the T2's brain mask (the two are one acquisition session; a second brain search could
  disagree at the surface) and the recipe's scaling, as S_flair's T2 channel does: the brain's
  median to MEDIAN_LEVEL, above the FLAIR's own background level (read off its outer shell, as
  the T2's is), clipped to [0, 1] (`segmentor_volumes`). The T2 channel is scaled afresh for
  S_flair: G, S and R keep the model's own scaling.
- Its channels go through the networks' grid with the T2 (synthesis_grid: the same in-plane
  resampling, crop and slices). With the recipe's mirroring, each channel's left-right mirror is
  added after them (T2, FLAIR, T2 mirrored, FLAIR mirrored: the order of cv_segmentor's
  `net_input`), mirrored about the centre of the brain's left-right extent over the whole
  volume (`mirror_sum`, `mirrored`). Training mirrored BraTS slices about the array's centre,
  where the atlas puts the midline; on the 12 shared cases the brain's extent is centred within
  2 voxels of it (117.5-120.0 against 119.5), so the two agree on BraTS, and the brain's extent
  also finds the midline of inputs that are not atlas-aligned. This assumes the head is not
  turned about its vertical axis (nor tilted about the front-back one): the mid-sagittal plane
  must be near a plane of constant left-right voxel index. The mirror moves whole voxels (the
  centre is rounded to half a voxel), so nothing is interpolated.
- S_flair's probability is the average over test-time flips of its input (`flip_averaged`: by
  default left-right, front-back and both), so a flipped or rotated input gives the same mask.
- S_flair's lesion probability and mask replace S's for everything: R, the blend, and the
  gated G's `cover` (gated.COVER_RIM). G and R see only the T2, so G's own decision is the same
  with and without FLAIR; only what it is held open over changes. The result says which
  segmentor ran (`SynthesisResult.segmentor`, and a note).
"""
from __future__ import annotations

import numpy as np
import torch

from .cases import modality_from_name
from .inputchecks import VolumeError
from .volume import MEDIAN_LEVEL, Normalisation, background_level, check_affine, on_image_grid

# Test-time flips (dims of N x C x X x Y slices; X is left-right, Y front-back): S_flair is
# trained with both flips (scripts/cv_segmentor.py `augment`), so averaging its probability over
# the four makes the mask equivariant to a left-right flip and a 180-degree in-plane rotation by
# construction (a header that lies about either gives the same lesion). A model's recipe may name
# its own ("test_time_flips"); files made before it get DEFAULT_FLIPS.
TEST_TIME_FLIPS = {"none": ((),), "lr": ((), (-2,)), "d2": ((), (-2,), (-1,), (-2, -1))}
DEFAULT_FLIPS = "d2"
MIN_COVER = 0.9    # at least this share of the T2's brain must lie within the FLAIR's field of view
FULL_COVER = 0.999  # below this share, a note says part of the brain has no FLAIR


class NoFlairSegmentor(ValueError):
    """A FLAIR was given to a model without S_flair."""


def require_flair(model) -> dict:
    """The model's FLAIR recipe; NoFlairSegmentor (one line) when it has no S_flair."""
    if model.flair is not None:
        return model.flair
    name = f"model file {model.path}" if model.path else "the model"
    raise NoFlairSegmentor(f"{name} has no FLAIR segmentor; synthesise from the T2 alone (leave out --flair), "
                           "or add one to a copy of the model (scripts/add_segmentor.py)")


def check_flair_name(path, where: str) -> None:
    """Refuse a FLAIR file whose name carries another modality's BraTS suffix (a T2 given twice)."""
    named = modality_from_name(path)
    if named is not None and named != "flair":
        raise VolumeError(f"{where}: its name says {named} (BraTS suffix), not FLAIR; give the FLAIR image")


def checked_array(data, affine, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A FLAIR array and affine that can be used: 3D, real, finite, a usable affine."""
    data = np.asarray(data)
    if data.dtype.kind == "c":
        raise VolumeError(f"{where}: complex-valued voxels ({data.dtype}); expected a magnitude image")
    if data.ndim != 3 or min(data.shape) < 1:
        raise VolumeError(f"{where}: expected a 3D volume, got shape {data.shape}")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise VolumeError(f"{where}: contains NaN or infinite voxels; they cannot be processed")
    return data, check_affine(affine, where)


def _voxel_map(affine: np.ndarray, t2_affine: np.ndarray) -> np.ndarray:
    """T2 voxel index -> FLAIR voxel index (4 x 4)."""
    return np.linalg.inv(affine) @ t2_affine


def brain_cover(affine: np.ndarray, shape: tuple, t2_affine: np.ndarray, t2_brain: np.ndarray) -> float:
    """The share of the T2's brain voxels (`t2_brain`, T2 voxel order) whose centres lie within the
    FLAIR's field of view (its voxels' extent, half a voxel beyond the outer centres)."""
    idx = np.argwhere(t2_brain)
    if len(idx) == 0:
        return 0.0
    idx = idx[:: max(1, len(idx) // 200_000)]   # a sample is enough for a share
    m = _voxel_map(affine, t2_affine)
    at = idx @ m[:3, :3].T + m[:3, 3]
    inside = ((at >= -0.5) & (at <= np.array(shape) - 0.5)).all(axis=1)
    return float(inside.mean())


def flair_on_t2_grid(data: np.ndarray, affine: np.ndarray, t2_shape: tuple, t2_affine: np.ndarray,
                     where: str) -> tuple[np.ndarray, float, bool]:
    """(the FLAIR in the T2's voxel order, its background level, whether it was resampled). On the
    T2's grid (any voxel order) it is taken as it is; else resampled linearly through world
    coordinates, the FLAIR's background level outside its field of view."""
    level = background_level(data)[0]
    try:
        return on_image_grid(data, affine, t2_shape, t2_affine, where, "the T2"), level, False
    except VolumeError:
        pass   # another grid: resampled below
    from scipy import ndimage
    m = _voxel_map(affine, t2_affine)
    out = ndimage.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=tuple(t2_shape), order=1,
                                   mode="constant", cval=level, output=np.float32)
    return out, level, True


def check_cover(cover: float, where: str, tell) -> None:
    if cover < MIN_COVER:
        raise VolumeError(f"{where}: covers {100 * cover:.0f} % of the T2's brain (at least {100 * MIN_COVER:.0f} % "
                          "is needed; the two are placed by their headers' world coordinates): is it the same "
                          "patient and session, and registered to the T2?")
    if cover < FULL_COVER:
        tell(f"{where}: {100 * (1 - cover):.1f} % of the T2's brain lies outside the FLAIR's field of view; the "
             "lesion mask there is less reliable")


def segmentor_volumes(vol, flair: np.ndarray, level: float, recipe: dict, where: str, t2_where: str) -> tuple:
    """A recipe segmentor's input volumes before mirroring (S_flair's, or S_t2's with the T2 alone:
    `flair` None), canonical order: each of the recipe's modalities (T2 first) scaled by the recipe's
    method over the T2's brain, zero outside it."""
    raw = {"t2": (vol.raw, vol.norm.offset, t2_where), "flair": (flair, level, where)}
    out = []
    for modality in recipe["modalities"]:
        data, offset, name = raw[modality]
        norm = Normalisation.fit(data, vol.brain, name, offset=offset, method=recipe["normalisation"])
        if recipe["normalisation"] == "median":   # a recipe trained with another level keeps it
            norm.scale *= MEDIAN_LEVEL / float(recipe.get("median_level", MEDIAN_LEVEL))
        image = norm.apply(data)
        image *= vol.brain
        out.append(image)
    return tuple(out)


def prepared_flair(model, flair, t2_affine: np.ndarray, vol, where: str, t2_where: str, tell) -> tuple:
    """S_flair's input volumes (canonical order, `segmentor_volumes`) for the caller's FLAIR
    (data, affine), checked: usable, covering the T2's brain; `vol` is the T2 (CanonicalVolume)."""
    recipe = require_flair(model)
    data, affine = checked_array(*flair, where)
    brain = vol.to_input_order(vol.brain)
    check_cover(brain_cover(affine, data.shape, check_affine(t2_affine), brain), where, tell)
    on_t2, level, resampled = flair_on_t2_grid(data, affine, brain.shape, t2_affine, where)
    if resampled:
        tell(f"{where}: resampled onto the T2's voxel grid (linear, through world coordinates)")
    return segmentor_volumes(vol, vol.to_canonical_order(on_t2), level, recipe, where, t2_where)


class FlipAveraged(torch.nn.Module):
    """A segmentor whose class probabilities are averaged over test-time flips of its input (each
    flipped back). It returns their log, so that a softmax of its output is that average."""

    def __init__(self, net: torch.nn.Module, flips):
        super().__init__()
        self.net, self.flips = net, tuple(flips)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0
        for dims in self.flips:
            p = torch.softmax(self.net(torch.flip(x, dims) if dims else x).float(), dim=1)
            total = total + (torch.flip(p, dims) if dims else p)
        return torch.log((total / len(self.flips)).clamp_min(1e-12))


def flip_averaged(net: torch.nn.Module, recipe: dict) -> torch.nn.Module:
    """S_flair as synthesis runs it: averaged over its recipe's test-time flips (TEST_TIME_FLIPS)."""
    flips = TEST_TIME_FLIPS[recipe.get("test_time_flips", DEFAULT_FLIPS)]
    return net if flips == ((),) else FlipAveraged(net, flips)


def mirror_sum(brain: np.ndarray) -> int:
    """First plus last left-right index (axis 0) of the brain over the whole volume: a voxel i
    mirrors to `mirror_sum - i`, about the centre of the brain's left-right extent."""
    xs = np.flatnonzero(np.asarray(brain).any(axis=tuple(range(1, np.ndim(brain)))))
    return int(xs[0] + xs[-1]) if len(xs) else np.shape(brain)[0] - 1


def mirrored(stack: np.ndarray, total: int) -> np.ndarray:
    """Slices (..., X, Y) mirrored left-right: out[..., i, :] = stack[..., total - i, :], zero where
    that index falls outside the array."""
    n = stack.shape[-2]
    source = total - np.arange(n)
    valid = (source >= 0) & (source < n)
    out = np.zeros_like(stack)
    out[..., valid, :] = stack[..., source[valid], :]
    return out
