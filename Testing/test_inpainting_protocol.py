"""The inpainting challenge's protocol (smilecore/inpainting_protocol.py, issue 24): the scores
equal the challenge's own package (`inpainting` 0.0.12, a test extra) on arrays whose planes
have BraTS's size; voiding keeps off the tumour; a voided image with its mask goes through
synthesis (review mode) instead of being refused."""
import numpy as np
import pytest
import torch
from inpainting.challenge_metrics_2023 import generate_metrics
from scipy import ndimage

from smilecore import inpainting_protocol as protocol
from smilecore.lesionfill import fill_lesion
from smilecore.modelfile import load_model
from smilecore.synthesis import synthesize
from smilecore.synthesis_inputs import canonical_volume, is_voided
from smilecore.synthetic import make_case


def _blob(rng, shape, inside):
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 4)
    return (noise > np.quantile(noise[inside], 0.85)) & inside


@pytest.mark.parametrize("seed", [0, 1])
def test_scores_equal_the_challenge_package(seed):
    # BraTS planes are 240 x 155 (the package's SSIM is 2D over the array's last two axes);
    # 10 of them keep the package's time down
    rng = np.random.default_rng(seed)
    _, healthy, _ = make_case(rng, shape=(10, 240, 155), n_lesions=0)
    truth = healthy.astype(np.float32) + rng.normal(0, 20, healthy.shape).astype(np.float32) * (healthy > 0)
    mask = _blob(rng, truth.shape, truth > 0)
    given = protocol.voided(truth, mask)
    fill = np.where(mask, ndimage.gaussian_filter(truth, 2) * rng.uniform(0.8, 1.2), truth).astype(np.float32)
    ours = protocol.challenge_metrics(fill, truth, given, mask)
    t = lambda a: torch.from_numpy(np.asarray(a))[None]  # noqa: E731  (the package's 1 x X x Y x Z)
    theirs = generate_metrics(t(fill), t(truth), t(given), t(mask))
    assert ours["ssim"] == pytest.approx(theirs["ssim"], abs=1e-5)
    assert ours["psnr"] == pytest.approx(theirs["psnr"], abs=1e-4)
    assert ours["mse"] == pytest.approx(theirs["mse"], rel=1e-5)
    assert 0 < ours["ssim"] < 1   # an imperfect fill: the comparison is not of two trivial values


def test_structure_measures_tell_a_flat_patch():
    rng = np.random.default_rng(3)
    _, healthy, _ = make_case(rng, shape=(48, 48, 24), n_lesions=0)
    truth = healthy.astype(np.float32)
    mask = np.zeros(truth.shape, bool)
    mask[14:30, 16:32, 8:16] = True
    same = protocol.structure_measures(truth, truth, mask)
    assert same == pytest.approx({"gradient_ratio": 1, "intensity_ratio": 1, "through_plane_ratio": 1})
    flat = protocol.ring_mean_fill(protocol.voided(truth, mask), mask)
    measured = protocol.structure_measures(flat, truth, mask)
    assert measured["gradient_ratio"] == pytest.approx(0, abs=1e-9)   # one value per slice
    assert 0.8 < measured["intensity_ratio"] < 1.2


def test_place_mask_keeps_off_the_tumour_and_inside_the_brain():
    rng = np.random.default_rng(4)
    _, healthy, label = make_case(rng, shape=(48, 48, 24), n_lesions=1)
    brain, tumour = healthy > 0, label > 0
    x, y, z = np.indices(brain.shape)
    donors = [(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 < 25 for cx, cy in ((14, 14), (34, 30), (24, 24))]
    protocol.MIN_VOXELS, saved = 50, protocol.MIN_VOXELS
    try:
        mask, placed = protocol.place_mask(brain, tumour, donors, seed=0)
    finally:
        protocol.MIN_VOXELS = saved
    near = ndimage.binary_dilation(tumour, iterations=protocol.TUMOUR_MARGIN)
    assert mask.sum() >= 50 and not (mask & near).any() and not (mask & ~brain).any()
    assert set(placed) == {"donor", "mirrored", "shift"}
    with pytest.raises(ValueError, match="no donor mask fits"):
        protocol.place_mask(brain, brain, donors)   # all brain is tumour: nowhere to void


def test_the_fill_before_G_fills_a_voided_mask():
    image = torch.full((1, 1, 32, 32), 0.5)
    mask = torch.zeros_like(image)
    mask[..., 10:20, 10:20] = 1
    filled = fill_lesion(image * (1 - mask), mask)
    assert filled[mask > 0].min() > 0.4   # was left at 0: the mask's voxels were not brain


def test_review_mode_accepts_a_voided_image(model_path):
    rng = np.random.default_rng(8)
    _, healthy, _ = make_case(rng, shape=(48, 48, 24), n_lesions=0)
    data = healthy.astype(np.float32)
    mask = np.zeros(data.shape, np.uint8)
    mask[4:20, 10:30, 6:18] = 1      # reaches the brain's surface: a void there is not brain to find_brain
    mask &= (data > 0)
    given = protocol.voided(data, mask > 0)
    assert is_voided(given, mask) and not is_voided(data, mask)
    model = load_model(model_path)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    result = synthesize(given, affine, model, mask=mask, notify=lambda _: None)   # smile synthesize --mask
    assert (result.pseudo_normal[mask > 0] > 0).mean() > 0.9
    filled = protocol.review_fill(given, mask > 0, model)
    assert np.isfinite(filled).all() and (filled[mask > 0] > 0).mean() > 0.9
    assert np.array_equal(filled[mask == 0], given[mask == 0])


def test_a_void_enclosed_near_the_surface_is_brain_when_the_mask_is_given(model_path):
    # a void 4-14 mm deep in half the brain: enclosed in-plane, near the surface, it reads as a
    # skull between brain and scalp unless the mask says what it is
    _, healthy, _ = make_case(np.random.default_rng(8), shape=(48, 48, 24), n_lesions=0)
    data = healthy.astype(np.float32)
    depth = ndimage.distance_transform_edt(data > 0, sampling=(4, 4, 4))
    mask = (data > 0) & (depth > 4) & (depth < 14)
    mask[:, :24] = False
    given = protocol.voided(data, mask)
    affine = np.diag([-4.0, -4.0, 4.0, 1.0])
    model = load_model(model_path)
    with pytest.raises(ValueError, match="skull"):
        canonical_volume(given, affine, model, "voided", None, print)
    vol = canonical_volume(given, affine, model, "voided", None, print, lesion_mask=mask)
    assert vol.brain[mask].all()
    result = synthesize(given, affine, model, mask=mask, notify=lambda _: None)   # smile synthesize --mask
    assert (result.pseudo_normal[mask] > 0).mean() > 0.9
