"""Property-based tests (hypothesis) of the loader and the preprocessing in smilecore/volume.py:
over random shapes, dtypes, voxel orders (axis permutations, flips, voxel sizes, small
obliquity) and intensity ranges, a volume either loads and preprocesses with its invariants, or
is refused with a VolumeError naming the file. Kept small (a few seconds in all)."""
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nibabel import orientations as nio

from scipy import ndimage

from smilecore.volume import (BACKGROUND_NOISE_SDS, CLIP_PERCENTILE, CanonicalVolume, VolumeError,
                              background_level, load_nifti, reorient, restore_orientation)

# derandomize: the same examples on every run (CI must not flake); no example database on disk
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
DTYPES = (np.uint8, np.int16, np.int32, np.float32, np.float64)


@st.composite
def affines(draw, oblique=True):
    """Voxel-to-world matrices: any axis permutation and flips, voxel sizes 0.2-5 mm, any
    origin, optionally a rotation of up to 30 degrees about a random axis."""
    perm = draw(st.permutations([0, 1, 2]))
    signs = np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3)))
    zooms = np.array(draw(st.lists(st.floats(0.2, 5.0), min_size=3, max_size=3)))
    m = np.zeros((3, 3))
    for voxel_axis, world_axis in enumerate(perm):
        m[world_axis, voxel_axis] = signs[voxel_axis] * zooms[voxel_axis]
    if oblique and draw(st.booleans()):
        angle = np.radians(draw(st.floats(-30, 30)))
        axis = draw(st.sampled_from([0, 1, 2]))
        a, b = [i for i in range(3) if i != axis]
        r = np.eye(3)
        r[a, a], r[a, b], r[b, a], r[b, b] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
        m = r @ m
    affine = np.eye(4)
    affine[:3, :3] = m
    affine[:3, 3] = draw(st.lists(st.floats(-200, 200), min_size=3, max_size=3))
    return affine


@st.composite
def volumes(draw):
    """(array of a random dtype, its intended float values): a random shape, background of
    zeros (or negative values), a brain of random extent, intensities over a random range."""
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=3, max_size=3)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if dtype.kind == "f":
        top = 10.0 ** draw(st.floats(-6, 8))
    else:
        top = float(draw(st.integers(1, int(min(np.iinfo(dtype).max, 10 ** 6)))))
    brain_share = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    values = rng.uniform(0, top, shape) * (rng.random(shape) < brain_share)
    if draw(st.booleans()) and dtype.kind in "fi":
        values = values - (values == 0) * rng.uniform(0, top, shape)  # negative background
    if draw(st.booleans()):
        values = np.where(values > 0, top, values)                   # constant brain
    data = values.astype(dtype) if dtype.kind == "f" else np.round(values).astype(dtype)
    return data


def _expected_brain(data32: np.ndarray) -> np.ndarray:
    """The brain as volume.find_brain defines it, written out with scipy: above the background
    by its noise (and > 0), the largest 6-connected part, holes filled."""
    level, noise = background_level(data32)
    labels, n = ndimage.label(data32 > max(level + BACKGROUND_NOISE_SDS * noise, 0))
    if n == 0:
        return labels > 0
    return ndimage.binary_fill_holes(labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1)


def _expect_refusal(data32: np.ndarray) -> bool:
    brain = data32[_expected_brain(data32)]
    return brain.size == 0 or brain.min() == brain.max()


def _check_invariants(vol: CanonicalVolume, data32: np.ndarray, affine: np.ndarray):
    t = vol.transform
    # canonical voxel order: the reoriented grid's axes run to Left, Posterior, Superior
    canonical_affine = affine @ nio.inv_ornt_aff(t, data32.shape)
    assert nib.aff2axcodes(canonical_affine) == ("L", "P", "S")
    assert np.array_equal(vol.raw, reorient(data32, t))
    assert np.array_equal(restore_orientation(vol.raw, t), data32)              # exactly invertible
    assert np.array_equal(vol.brain, _expected_brain(vol.raw))
    assert ndimage.label(vol.brain)[1] == 1                                   # one connected brain
    # normalisation: [0, 1], background level subtracted, clipped at the percentile of brain
    # voxels, nothing outside the brain
    assert vol.image.dtype == np.float32
    assert vol.image.min() >= 0 and vol.image.max() == 1.0
    assert np.all(vol.image[~vol.brain] == 0)
    offset = vol.norm.offset
    assert vol.norm.scale == pytest.approx(float(np.percentile(vol.raw[vol.brain] - offset, CLIP_PERCENTILE)),
                                           rel=1e-6)
    brain = vol.brain
    assert np.allclose(vol.norm.invert(vol.image)[brain], np.clip(vol.raw, offset, offset + vol.norm.scale)[brain],
                       rtol=1e-5, atol=1e-6 * vol.norm.scale)


@SETTINGS
@given(volumes(), affines())
def test_preprocessing_works_with_its_invariants_or_refuses_naming_the_volume(data, affine):
    data32 = data.astype(np.float32)
    where = "image /data/case_t2.nii.gz"
    if _expect_refusal(data32):
        with pytest.raises(VolumeError, match="^image /data/case_t2.nii.gz: (no brain voxels|every brain voxel)"):
            CanonicalVolume.from_array(data, affine, where=where)
        return
    _check_invariants(CanonicalVolume.from_array(data, affine, where=where), data32, affine)


@SETTINGS
@given(volumes(), affines())
def test_files_load_and_preprocess_or_are_refused_naming_the_file(data, affine):
    """The same through a real NIfTI file of that dtype and affine."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "case_t2.nii"
        nib.save(nib.Nifti1Image(data, affine), path)
        loaded, loaded_affine, _ = load_nifti(path)
        assert loaded.dtype == np.float32 and np.array_equal(loaded, data.astype(np.float32))
        assert np.allclose(loaded_affine, affine, atol=1e-4)
        if _expect_refusal(loaded):
            with pytest.raises(VolumeError, match=f"^image {path}: "):
                CanonicalVolume.from_array(loaded, loaded_affine, where=f"image {path}")
            return
        _check_invariants(CanonicalVolume.from_array(loaded, loaded_affine, where=f"image {path}"),
                          loaded, loaded_affine)


@SETTINGS
@given(volumes(), st.permutations([0, 1, 2]), st.lists(st.booleans(), min_size=3, max_size=3),
       st.floats(0.01, 1000.0))
def test_voxel_order_and_intensity_scale_do_not_change_the_network_input(data, perm, flips, gain):
    """The same anatomy stored in any voxel order, at any intensity scale, gives the same
    normalised canonical image."""
    data = data.astype(np.float32)
    assume(not _expect_refusal(data))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    reference = CanonicalVolume.from_array(data, lps)
    ornt = np.array([[p, -1.0 if f else 1.0] for p, f in zip(perm, flips)])
    stored = nio.apply_orientation(data, ornt)
    stored_affine = lps @ nio.inv_ornt_aff(ornt, data.shape)
    again = CanonicalVolume.from_array(stored, stored_affine)
    assert np.array_equal(again.image, reference.image)
    scaled = CanonicalVolume.from_array(data * np.float32(gain), lps)
    assert np.allclose(scaled.image, reference.image, atol=1e-5)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.integers(0, 351), st.integers(1, 255), st.sampled_from([".nii", ".nii.gz"]), st.data())
def test_damaged_files_are_refused_naming_the_file_or_load_cleanly(position, flip, ext, data):
    """A valid file with one header byte changed, or cut short: either a usable 3D volume, or
    a VolumeError naming the file; never another exception."""
    image = np.random.default_rng(0).uniform(1, 100, (6, 5, 4)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"case_t2{ext}"
        nib.save(nib.Nifti1Image(image, np.diag([-1.0, -1, 1, 1])), path)
        raw = bytearray(path.read_bytes())
        if ext == ".nii":
            raw[position] ^= flip
        else:
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        path.write_bytes(bytes(raw))
        try:
            loaded, affine, _ = load_nifti(path)
        except VolumeError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
        assert loaded.ndim == 3 and np.isfinite(loaded).all()
        try:
            CanonicalVolume.from_array(loaded, affine, where=f"image {path}")
        except VolumeError as exc:
            assert str(path) in str(exc)
