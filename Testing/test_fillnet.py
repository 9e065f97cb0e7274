"""The self-supervised fill network (smilecore/fillnet.py, issue 24), on tiny procedural cases."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from smilecore.dataset import CachedCase, _boxes
from smilecore.fillnet import (TUMOUR_MARGIN, FillNet, HoleSamples, fill_loss, fill_volume, gradient_magnitude, net_input,
                               random_shape, texture_gap, train_fillnet, tumour_shapes)
from smilecore.lesionfill import smooth_fill
from smilecore.synthetic import make_case


def _cached(seed: int, shape=(40, 40, 12)) -> CachedCase:
    image, _, label = make_case(np.random.default_rng(seed), shape=shape, n_lesions=1)
    slices = np.moveaxis(image.astype(np.float32) / image.max(), 2, 0)
    masks = np.moveaxis(label, 2, 0)
    return CachedCase(f"case{seed}", slices.astype(np.float16), masks, np.arange(shape[2]),
                      _boxes(slices > 0), _boxes(masks > 0), 1.0)


def test_the_input_is_kept_outside_the_hole_and_the_start_is_the_smooth_fill():
    torch.manual_seed(0)
    net = FillNet(base=4, depth=2).eval()
    image = torch.rand(2, 1, 32, 32) + 0.1
    hole = torch.zeros_like(image)
    hole[..., 8:20, 10:24] = 1
    voided = image * (1 - hole)
    out = net(net_input(voided, hole, voided, voided, voided))
    assert torch.equal(out[hole == 0], voided[hole == 0])
    assert torch.allclose(out, smooth_fill(voided, hole))     # the change starts at zero
    torch.nn.init.normal_(net.unet.head.weight)
    assert not torch.allclose(net(net_input(voided, hole, voided, voided, voided)), smooth_fill(voided, hole))


def test_the_loss_is_zero_only_for_the_truth():
    truth = torch.rand(1, 1, 32, 32)
    hole = torch.zeros_like(truth)
    hole[..., 10:20, 10:20] = 1
    assert float(fill_loss(truth, truth, hole)) == pytest.approx(0, abs=1e-5)
    assert float(fill_loss(torch.where(hole > 0, truth.mean(), truth), truth, hole)) > 0.1


def test_the_texture_term_asks_a_flat_patch_for_the_truths_gradient_energy():
    torch.manual_seed(0)
    truth = torch.rand(1, 1, 48, 48)
    hole = torch.zeros_like(truth)
    hole[..., 12:36, 12:36] = 1
    flat = torch.where(hole > 0, truth.mean(), truth).requires_grad_()
    assert float(texture_gap(truth, truth, hole)) == pytest.approx(0, abs=1e-6)
    assert float(texture_gap(flat, truth, hole)) > 0.1
    # the same loss without the term does not see how flat the patch is; with it, it does
    base = float(fill_loss(flat, truth, hole))
    assert float(fill_loss(flat, truth, hole, texture=1.0)) == pytest.approx(base + float(texture_gap(flat, truth, hole)), rel=1e-5)
    # a step down the term's gradient gives the patch texture (in-plane gradient energy rises)
    texture_gap(flat, truth, hole).backward()
    rough = flat - 0.5 * flat.grad / flat.grad.abs().max()
    assert float(gradient_magnitude(rough)[hole > 0].mean()) > float(gradient_magnitude(flat.detach())[hole > 0].mean())


def test_holes_lie_in_healthy_brain_and_the_neighbours_are_voided_too():
    cases = [_cached(s) for s in (1, 2)]
    samples = HoleSamples(cases, tumour_shapes(cases, min_area=10))
    rng = np.random.default_rng(0)
    for _ in range(10):
        x, truth = samples.sample(32, rng)
        hole = x[1] > 0
        assert x.shape == (5, 32, 32) and truth.shape == (1, 32, 32)
        assert hole.sum() > 0 and (truth[0][hole] > 0).all()   # brain under every hole pixel
        assert torch.equal(x[0][~hole], truth[0][~hole]) and (x[0][hole] == 0).all()
    assert all(random_shape(samples.shapes, rng).any() for _ in range(5))


def test_no_hole_within_the_margin_of_a_tumour():
    case = _cached(1)
    i = int(np.nonzero(case.abnormal)[0][len(np.nonzero(case.abnormal)[0]) // 2])
    samples = HoleSamples([case], tumour_shapes([case], min_area=10))
    samples.index = [(0, i)]            # that slice only, cropped to the whole slice
    _, tumour = samples._slices(case, i)
    near = ndimage.binary_dilation(tumour, iterations=TUMOUR_MARGIN)
    rng = np.random.default_rng(1)
    for _ in range(10):
        x, _ = samples.sample(40, rng)
        assert not (x[1].numpy() > 0)[near].any()


def test_training_and_filling_a_voided_volume():
    cases = [_cached(s) for s in (1, 2, 3)]
    net, run = train_fillnet(cases, steps=3, crop=32, batch_size=2, base=4, depth=2, log=lambda _: None)
    assert run["steps"] == 3 and np.isfinite(run["final_loss"])
    image = np.moveaxis(np.asarray(cases[0].image, np.float32), 0, 2)
    mask = ndimage.binary_erosion(image > 0, iterations=6) & (np.indices(image.shape)[0] < 20)
    given = np.where(mask, 0, image)
    filled = fill_volume(net, given, mask)
    assert np.array_equal(filled[~mask], given[~mask])
    assert (filled[mask] > 0).all()
