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


# ---- normal anatomy called lesion (issue 23) ----------------------------------------------------
def _anatomy_case():
    """One 30 x 30 slice of brain at 1.0: a 4 x 4 tumour (3.0) at x 4-7, y 12-15; ten bright voxels
    (5.0) within 2 voxels of it, ten bright voxels far from it (x 25, y 0-9)."""
    image = np.ones((1, 30, 30), np.float32)
    truth = np.zeros(image.shape, bool)
    truth[0, 4:8, 12:16] = True
    image[truth] = 3.0
    image[0, 4:8, 17] = 5.0
    image[0, 4:10, 10] = 5.0
    image[0, 25, 0:10] = 5.0
    return image, truth


def test_bright_tissue_is_the_bright_healthy_brain_away_from_the_tumour():
    image, truth = _anatomy_case()
    bright = metrics.bright_tissue(image, image > 0, truth)
    assert bright.sum() == 10 and bright[0, 25, 0:10].all()    # the near ones and the tumour itself left out
    pred = truth.copy()
    pred[0, 25, 0:3] = True                                    # 3 of the 10 far bright voxels
    pred[0, 4:8, 17] = True                                    # near bright voxels do not count
    assert metrics.share_marked(pred, bright) == pytest.approx(0.3)
    # no tumour: everything above the healthy 95th percentile (1.0) counts, the 20 at 5.0 and the 16 at 3.0;
    # an empty region gives NaN, not 0
    assert metrics.bright_tissue(image, image > 0, np.zeros_like(truth)).sum() == 36
    assert np.isnan(metrics.share_marked(pred, np.zeros_like(pred)))


def test_healthy_ised_takes_the_mirrored_voxel_and_leaves_tumour_on_both_sides_unknown():
    image = np.arange(6, dtype=np.float32).reshape(1, 6, 1) + 10       # x: 10 .. 15
    truth = np.zeros(image.shape, bool)
    truth[0, [1, 2, 3], 0] = True                                       # 1 mirrors to 4; 2 and 3 to each other
    healed, unknown = metrics.healthy_ised(image, truth)
    assert healed[0, :, 0].tolist() == [10, 14, 13, 12, 14, 15]
    assert unknown[0, :, 0].tolist() == [False, False, True, True, False, False]
    # about another plane (twice its coordinate: 4, x mirrors to 4 - x: 1, 2, 3 to 3, 2, 1, all tumour)
    healed, unknown = metrics.healthy_ised(image, truth, mirror_at=4)
    assert healed[0, 1, 0] == 13 and unknown[0, :, 0].tolist() == [False, True, True, True, False, False]
    truth[0, 5, 0] = True                                               # 4 - 5 = -1: outside the array
    assert metrics.healthy_ised(image, truth, mirror_at=4)[1][0, 5, 0]
    counted = metrics.healthy_ised_counted(np.ones((1, 9, 9)), np.pad(np.ones((1, 1, 1)), ((0, 0), (4, 4), (4, 4))))
    assert counted.sum() == 81 - 13                    # it and 2 steps around it (a diamond of 13) left out


def test_normal_anatomy_called_lesion_with_a_thresholding_segmentor():
    image, truth = _anatomy_case()
    image[0, 22:26, 12:16] = 3.0                     # the tumour's mirror (29 - x) is bright too: a lesion there
    segment = lambda x: x > 2.0                      # noqa: E731  (marks the tumour and every bright voxel)
    report = metrics.normal_anatomy_called_lesion({"a": (image, truth)}, {"a": segment(image)}, segment)
    case = report["per_case"]["a"]
    assert case["bright_tissue"] == 1.0              # all 10 far bright voxels marked
    healthy_marked = (segment(metrics.healthy_ised(image, truth)[0]) & (image > 0)).sum()
    assert healthy_marked == 16 + 20 + 16            # the mirrored "lesion" now pasted in, both bright rows, itself
    assert case["healthy_ised"] == pytest.approx(healthy_marked / 900)
    assert report["bright_tissue"] == {"mean": 1.0, "worst": 1.0}
