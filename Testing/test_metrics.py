"""Metrics on inputs with known answers, and cross-checked against established implementations
(pytorch-msssim, scikit-image), which are test dependencies only."""
import numpy as np
import pytest
import torch

from smilecore import metrics

pytorch_msssim = pytest.importorskip("pytorch_msssim")
skimage_metrics = pytest.importorskip("skimage.metrics")


def smooth_images(n=3, size=240, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((n, size // 8, size // 8))
    up = torch.nn.functional.interpolate(torch.tensor(base)[:, None], size=(size, size), mode="bilinear")[:, 0]
    a = up.numpy()
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    return a, b


def test_identical_images_score_one():
    a, _ = smooth_images()
    assert torch.allclose(metrics.ms_ssim(a, a), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(metrics.ssim(a, a), torch.ones(3, dtype=torch.float64))
    M = np.zeros_like(a)
    M[:, 100:140, 100:140] = 1
    G_I = a.copy()
    G_I[M > 0] = 0                                      # any change inside the lesion is ignored
    assert torch.allclose(metrics.identity(G_I, a, M), torch.ones(3, dtype=torch.float64))


def test_ms_ssim_matches_pytorch_msssim():
    a, b = smooth_images()
    ours = metrics.ms_ssim(a, b, data_range=1.0)
    ref = pytorch_msssim.ms_ssim(torch.tensor(a)[:, None], torch.tensor(b)[:, None], data_range=1.0,
                                 size_average=False)
    assert torch.allclose(ours, ref.double(), atol=1e-4), (ours, ref)
    assert ours.max() < 0.999                            # a real difference is measured


def test_ssim_matches_scikit_image():
    a, b = smooth_images(n=1, size=96)
    ours = float(metrics.ssim(a[0], b[0], data_range=1.0))
    ref = skimage_metrics.structural_similarity(a[0], b[0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False)
    # skimage averages over the padded full image, ours over the valid region: close, not equal
    assert abs(ours - ref) < 0.01, (ours, ref)
    _, full = skimage_metrics.structural_similarity(a[0], b[0], data_range=1.0, gaussian_weights=True,
                                                    sigma=1.5, use_sample_covariance=False, full=True)
    assert abs(ours - full[5:-5, 5:-5].mean()) < 1e-6


def test_healthiness_known_answers():
    assert metrics.healthiness(100, 100) == 0.0        # G returns I: Spred finds as much as before
    assert metrics.healthiness(0, 100) == 1.0          # nothing left to find
    assert metrics.healthiness(25, 100) == 0.75
    assert np.isnan(metrics.healthiness(3, 0))


def test_dice_known_answers():
    t = np.zeros((4, 4), bool)
    t[:2] = True
    assert metrics.dice(t, t) == 1.0 and metrics.dice(~t, t) == 0.0
    assert metrics.dice(np.zeros_like(t), np.zeros_like(t)) == 1.0
    half = np.zeros_like(t)
    half[0] = True
    assert metrics.dice(half, t) == pytest.approx(2 * 4 / (4 + 8))


def test_known_truth_errors():
    a, b = smooth_images(n=2, size=64)
    lesion = np.zeros_like(a)
    lesion[:, 20:40, 20:40] = 1
    perfect = metrics.known_truth_errors(a, a, lesion)
    assert perfect["mae"] == 0 and perfect["psnr"] == float("inf") and perfect["ssim"] == pytest.approx(1.0)
    off = a + 0.1 * lesion                              # a constant error of 0.1 inside the lesion only
    e = metrics.known_truth_errors(off, a, lesion)
    assert e["mae"] == pytest.approx(0.1) and e["psnr"] == pytest.approx(20.0)
    assert e["ssim"] < 1.0
    with pytest.raises(ValueError):
        metrics.known_truth_errors(a, a, np.zeros_like(a))


def test_through_plane_change_known_answers():
    from smilecore.metrics import through_plane_change
    region = np.ones((4, 8, 8), bool)
    flat = np.full((4, 8, 8), 0.5)
    assert through_plane_change(flat, region) == (0.0, 3 * 64)
    stripes = flat.copy()
    stripes[1::2] = 0.7                                       # every other slice brighter by 0.2
    value, n = through_plane_change(stripes, region)
    assert value == pytest.approx(0.2) and n == 3 * 64
    # pairs that are not neighbours in the volume, and pixels outside the region, do not count
    assert through_plane_change(stripes, region, neighbours=[True, False, False]) == (pytest.approx(0.2), 64)
    part = region.copy()
    part[2] = False
    assert through_plane_change(stripes, part)[1] == 64
    assert np.isnan(through_plane_change(stripes, np.zeros_like(region))[0])
