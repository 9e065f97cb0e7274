import nibabel as nib
import numpy as np
import pytest

from smilecore.files import save_like
from smilecore.volume import (CanonicalVolume, VolumeError, load_label, load_nifti, reorient,
                              restore_orientation, to_canonical)

AFFINES = {
    "LPS": np.diag([-1.0, -1, 1, 1]),
    "RAS": np.eye(4),
    "permuted PIR": np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]]),
    "oblique": np.array([[0.96, -0.26, 0, 0], [0.26, 0.96, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("name", AFFINES)
def test_orientation_round_trip_and_axial_axis(name):
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    t = to_canonical(AFFINES[name])
    canonical = reorient(data, t)
    assert np.array_equal(restore_orientation(canonical, t), data)
    # the canonical third axis is the one the affine maps (mostly) to superior
    sup_axis = int(np.argmax(np.abs(AFFINES[name][2, :3])))
    assert canonical.shape[2] == data.shape[sup_axis]


def test_normalisation_clips_at_the_995th_percentile():
    rng = np.random.default_rng(0)
    data = np.zeros((20, 20, 20), np.float32)
    data[5:15, 5:15, 5:15] = rng.uniform(1, 100, (10, 10, 10))
    vol = CanonicalVolume.from_array(data, AFFINES["LPS"])  # already canonical: no reordering
    assert vol.norm.scale == pytest.approx(np.percentile(data[data > 0], 99.5))
    assert vol.image.min() == 0 and vol.image.max() == 1
    assert np.allclose(vol.norm.invert(vol.image)[data < vol.norm.scale], data[data < vol.norm.scale], rtol=1e-5)


def test_median_normalisation_scales_a_brain_alike_with_and_without_a_tumour():
    from smilecore.volume import MEDIAN_LEVEL, Normalisation
    rng = np.random.default_rng(0)
    data = np.zeros((20, 20, 20), np.float32)
    data[5:15, 5:15, 5:15] = rng.uniform(50, 100, (10, 10, 10))
    with_tumour = data.copy()
    with_tumour[6:9, 6:9, 6:12] = 300                       # 5 % of the brain, three times brighter
    brain = data > 0
    fits = {m: [Normalisation.fit(d, brain, method=m).scale for d in (data, with_tumour)]
            for m in ("clip-percentile", "median")}
    assert fits["clip-percentile"][1] > 2.5 * fits["clip-percentile"][0]     # the tumour sets the scale
    assert fits["median"][1] == pytest.approx(fits["median"][0], rel=0.05)   # it hardly moves the median
    assert fits["median"][0] == pytest.approx(np.median(data[brain]) / MEDIAN_LEVEL)
    vol = CanonicalVolume.from_array(data, AFFINES["LPS"], normalisation="median")
    assert np.median(vol.image[vol.brain]) == pytest.approx(MEDIAN_LEVEL, rel=1e-4) and vol.image.max() <= 1
    with pytest.raises(ValueError, match="unknown normalisation"):
        Normalisation.fit(data, brain, method="zscore")


@pytest.mark.parametrize("data, message", [
    (np.zeros((8, 8, 8)), "no brain voxels"),
    (np.full((8, 8, 8), np.nan), "NaN or infinite"),
    (np.zeros((8, 8)), "expected a 3D volume"),
])
def test_unusable_arrays_are_refused(data, message):
    with pytest.raises(VolumeError, match=message):
        CanonicalVolume.from_array(data, np.eye(4), where="test volume")


def test_bad_files_are_named_in_errors(tmp_path):
    text = tmp_path / "scan_t2.nii.gz"
    text.write_text("this is not an image")
    with pytest.raises(VolumeError, match="scan_t2.nii.gz: cannot be read as NIfTI"):
        load_nifti(text)
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), flat)
    with pytest.raises(VolumeError, match="flat.nii.gz: expected a 3D volume"):
        load_nifti(flat)
    seg = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 7, np.uint8), np.eye(4)), seg)
    with pytest.raises(VolumeError, match="label values"):
        load_label(seg, (8, 8, 8), np.eye(4))
    with pytest.raises(VolumeError, match="shape"):
        load_label(seg, (8, 8, 9), np.eye(4))


def test_save_like_keeps_geometry_and_writes_atomically(tmp_path):
    affine = np.diag([-1.0, -1.2, 2.0, 1])
    affine[:3, 3] = [10, 20, -30]
    ref = nib.Nifti1Image(np.ones((6, 5, 4), np.int16), affine)
    out = save_like(np.full((6, 5, 4), 2.5), ref, tmp_path / "out.nii.gz")
    back = nib.load(out)
    assert np.allclose(back.affine, affine) and back.shape == (6, 5, 4)
    assert np.allclose(back.get_fdata(), 2.5)
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]  # no temporary left behind


def test_text_written_atomically_survives_a_full_disk(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from smilecore.files import write_text_atomic
    target = tmp_path / "report.json"
    write_text_atomic(target, "old")
    real_write = Path.write_text

    def half_then_full(self, text, *a, **k):
        real_write(self, text[:1])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError, match=f"writing report {target} failed") as err:
        write_text_atomic(target, "new and longer", "report")
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_fill_holes_gives_scipys_result():
    """The brain search's hole filling (inputchecks.fill_holes, faster) against scipy's own."""
    from scipy import ndimage
    from smilecore.inputchecks import fill_holes
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    rng = np.random.default_rng(0)
    masks = [rng.random(tuple(rng.integers(1, 12, 3))) < rng.uniform(0.2, 0.9) for _ in range(200)]
    x, y, z = np.mgrid[:20, :20, :9]
    shell = np.abs(np.sqrt((x - 9.5) ** 2 + (y - 9.5) ** 2 + (z - 4) ** 2) - 4) < 1   # a hollow ball
    tube = shell.copy()
    tube[:, :, 4] = False                                    # open in 3D, closed within other slices
    masks += [shell, tube, np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool)]
    filled = 0
    for m in masks:
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
        assert np.array_equal(fill_holes(m, in_plane=True), ndimage.binary_fill_holes(m, structure=in_plane))
        filled += int((fill_holes(m) & ~m).sum())
    assert (fill_holes(shell) & ~shell).sum() > 100 and not (fill_holes(tube) & ~tube).any()
    assert (fill_holes(tube, in_plane=True) & ~tube).any() and filled > 200
