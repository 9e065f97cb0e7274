"""The lesion fill (smilecore/lesionfill.py) and the review mode that uses it."""
import nibabel as nib
import numpy as np
import pytest
import torch

from smilecore.evaluate import best_constant, mean_fill
from smilecore.lesionfill import fill_lesion_array, smooth_fill
from smilecore.modelfile import load_model
from smilecore.synthesis import synthesize
from smilecore.train import MODEL_NAME


def _disc(h, w, cx, cy, r):
    x, y = np.mgrid[:h, :w]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r ** 2


def _brain_with_lesion(shape=(2, 96, 96)):
    n, h, w = shape
    brain = np.broadcast_to(_disc(h, w, 48, 48, 40), shape)
    ramp = np.linspace(0.2, 0.8, w, dtype=np.float32)[None, None, :] * np.ones(shape, np.float32)
    truth = np.where(brain, ramp, 0).astype(np.float32)
    lesion = np.zeros(shape, bool)
    lesion[0] = _disc(h, w, 48, 40, 12)          # slice 1 keeps no lesion
    image = np.where(lesion, 1.0, truth).astype(np.float32)
    return image, truth, lesion


def test_fill_changes_only_the_grown_mask_inside_the_brain():
    image, truth, lesion = _brain_with_lesion()
    out = fill_lesion_array(image, lesion, radius=4)
    grown = torch.nn.functional.max_pool2d(torch.from_numpy(lesion.astype(np.float32))[:, None], 9, 1, 4)[:, 0].numpy() > 0
    changed = out != image
    assert changed[0][lesion[0]].all()                              # the lesion's own values are gone
    assert not changed[~(grown & (image > 0))].any()                # nothing outside the grown mask or brain
    assert np.array_equal(out[1], image[1])                         # a slice without mask is untouched
    assert (out[image <= 0] == 0).all()


def test_smooth_fill_follows_a_gradient_better_than_one_flat_value():
    image, truth, lesion = _brain_with_lesion()
    smooth = fill_lesion_array(image, lesion, radius=0)
    flat = mean_fill(image, lesion)
    err = lambda a: float(np.abs(a - truth)[lesion].mean())  # noqa: E731
    assert err(smooth) < 0.5 * err(flat)
    constant = np.where(image > 0, 0.4, 0).astype(np.float32)
    assert np.allclose(fill_lesion_array(constant, lesion, radius=4)[lesion], 0.4, atol=1e-5)


def test_a_hole_beyond_the_kernel_takes_the_slice_mean():
    image = np.full((1, 1, 64, 64), 0.5, np.float32)
    image[..., :8] = 0.3
    hole = torch.zeros_like(torch.from_numpy(image), dtype=torch.bool)
    hole[..., 8:] = True
    out = smooth_fill(torch.from_numpy(image), hole, sigma=2.0)     # 2 px kernel: most of the hole is out of reach
    assert torch.isfinite(out).all()
    assert torch.allclose(out[..., 40:], torch.tensor(0.3))         # the mean of the tissue outside the hole


def test_the_fill_has_no_edge_where_the_kernels_reach_ends():
    # tissue 0.3 on the left, 0.7 on the right, a hole wider than the kernel reaches in between:
    # the fill goes from each side's value to the slice mean (0.5) without a step. A switch to the
    # slice mean at a threshold stepped by 0.2 in one pixel (a line across a large lesion).
    image = np.zeros((1, 1, 96, 128), np.float32)
    image[..., :8], image[..., 120:] = 0.3, 0.7
    hole = torch.zeros(image.shape, dtype=torch.bool)
    hole[..., 8:120] = True
    row = smooth_fill(torch.from_numpy(image), hole, sigma=10.0)[0, 0, 48].numpy()
    assert np.abs(np.diff(row[8:120])).max() < 0.03
    assert row[9] == pytest.approx(0.3, abs=2e-3) and row[118] == pytest.approx(0.7, abs=2e-3)
    assert row[64] == pytest.approx(0.5, abs=1e-3)


def test_best_constant_is_a_ceiling_for_the_flat_fill():
    image, truth, lesion = _brain_with_lesion()
    mse = lambda a: float(((a - truth)[lesion] ** 2).mean())  # noqa: E731
    assert mse(best_constant(image, truth, lesion)) <= mse(mean_fill(image, lesion))


@pytest.fixture(scope="module")
def model(trained_run):
    return load_model(trained_run / MODEL_NAME)


def test_review_mode_gives_G_the_filled_input(cohort, model):
    d = cohort / "Synth_000"
    img = nib.load(d / "Synth_000_t2.nii.gz")
    data = img.get_fdata().astype(np.float32)
    mask = nib.load(d / "Synth_000_seg.nii.gz").get_fdata() > 0
    healthy = nib.load(d / "Synth_000_t2healthy.nii.gz").get_fdata().astype(np.float32)
    filled = synthesize(data, img.affine, model, mask=mask)
    published = synthesize(data, img.affine, model, mask=mask, lesion_fill="none")
    for r in (filled, published):
        assert np.array_equal(r.pseudo_normal[~mask], data[~mask])   # input outside the mask either way
    assert not np.allclose(filled.pseudo_normal[mask], published.pseudo_normal[mask])
    # the fill removes the lesion's signal: closer to the healthy truth than the lesion itself
    err = lambda a: float(np.abs(a - healthy)[mask].mean())  # noqa: E731
    assert err(filled.pseudo_normal) < err(data)
    # without a mask the fill is not used: the method as published
    a = synthesize(data, img.affine, model)
    b = synthesize(data, img.affine, model, lesion_fill="none")
    assert np.array_equal(a.pseudo_normal, b.pseudo_normal)
    with pytest.raises(ValueError, match="lesion_fill"):
        synthesize(data, img.affine, model, mask=mask, lesion_fill="mean")


def test_nothing_above_the_clipping_percentile_shows_through_the_lesion(cohort, model):
    """A lesion core far brighter than V99.5 (a cyst) must not survive in the pseudo-normal as
    its excess over the clipped value: inside the mask the pseudo-normal is G's image."""
    d = cohort / "Synth_000"
    img = nib.load(d / "Synth_000_t2.nii.gz")
    data = img.get_fdata().astype(np.float32)
    mask = nib.load(d / "Synth_000_seg.nii.gz").get_fdata() > 0
    core = np.zeros_like(mask)
    idx = np.argwhere(mask)[:: max(1, int(mask.sum()) // 20)][:20]   # a few voxels, well under 0.5 % of the brain
    core[tuple(idx.T)] = True
    v995 = np.percentile(data[data > 0], 99.5)
    bright = np.where(core, 5 * v995, data).astype(np.float32)
    for given in (mask, None):
        r = synthesize(bright, img.affine, model, mask=given)
        lesion = r.lesion_mask > 0
        inside = core & lesion
        assert inside.any()
        assert r.pseudo_normal[inside].max() < 2 * v995
        assert r.pseudo_abnormal[inside].max() < 2 * v995
        assert np.array_equal(r.pseudo_normal[~lesion & (bright > 0)] > 0, bright[~lesion & (bright > 0)] > 0)
