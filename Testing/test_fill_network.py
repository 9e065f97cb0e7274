"""A model's fill network fills the lesion of the pseudo-normal (synthesis_fill.py, issue 24): its
fill lands inside the lesion mask (the user's in review mode, S's otherwise) and nowhere else, the
file keeps it, and a model without one synthesises as before. Small random networks; the fill
network's last layer is set so that its fill is its start plus a chosen constant."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from smilecore.modelfile import load_model, model_config, save_model
from smilecore.networks import FILL_NET, build_networks
from smilecore.synthesis import synthesize
from smilecore.synthesis_blend import Z_SIGMA, pass_sigma
from smilecore.inpainting_protocol import ring_mean_fill
from smilecore import synthesis_fill
from smilecore.synthesis_fill import open_rim, ring_matched
from smilecore.synthetic import LPS, make_case

SIZES = {n: {"base": 4, "depth": 3, "norm": "batch"} for n in "GSR"}


def _model(tmp_path, offset: float | None, g_change: float = 0.0):
    """G, S, R seeded alike in every file; a fill network whose fill is its start + `offset` (None: none).
    G (the paper's residual G, its head at zero: the identity) adds `g_change` everywhere."""
    torch.manual_seed(0)
    sizes = dict(SIZES)
    if offset is not None:
        sizes[FILL_NET] = {"base": 4, "depth": 2, "start": "smooth", "alpha": 0.25}
    nets = build_networks(sizes)
    with torch.no_grad():
        nets["G"].unet.head.bias.fill_(g_change)
        if offset is not None:
            nets[FILL_NET].unet.head.bias.fill_(offset)   # the head starts at zero: the change is the bias
    config = {**model_config(sizes, "t2")}
    return load_model(save_model(tmp_path / f"fill-{offset}-{g_change}.pt", nets, config))


@pytest.fixture(scope="module")
def case():
    image, _, label = make_case(np.random.default_rng(5), n_lesions=1)
    return image.astype(np.float32), label > 0


def _run(model, image, mask):
    return synthesize(image, LPS, model, mask=None if mask is None else mask.astype(np.uint8), notify=lambda m: None)


@pytest.mark.parametrize("review, g_change", [(True, 0.05), (False, 0.0), (False, 0.05)],
                         ids=["mask given", "S's mask, G changes nothing", "S's mask, G changes everything"])
def test_the_fill_lands_inside_the_lesion_mask_and_nowhere_else(tmp_path, case, review, g_change, monkeypatch):
    """Where the network's constant lands. Without a mask it is seen with the ring-mean shift off
    (the shift takes the constant out of every part of the fill, as in review mode)."""
    image, label = case
    monkeypatch.setattr(synthesis_fill, "RING_MATCH_WITHOUT_MASK", False)
    runs = {o: _run(_model(tmp_path, o, g_change), image, label if review else None) for o in (0.0, 0.2)}
    lesion = runs[0.0].lesion_mask > 0
    assert lesion.sum() > 20 and np.array_equal(lesion, runs[0.2].lesion_mask > 0)
    change = runs[0.2].pseudo_normal - runs[0.0].pseudo_normal
    # review mode: the mask only; S's mask: also the pixels of its rim that G changed
    rim = ndimage.maximum_filter(lesion, size=(2 * open_rim(_model(tmp_path, 0.0)) + 1,) * 2 + (1,)) & ~lesion
    reach = lesion | (rim if not review and g_change else False)
    assert np.abs(change[~reach]).max() == 0
    if not review and g_change:
        assert (change[rim & (image > 0)] > 0).mean() > 0.5   # G's rim is the network's too
    inside = change[lesion]
    if review:   # the network's constant is taken out: each part of the fill gets the ring's mean
        assert np.abs(inside).max() < 1e-3 * np.abs(image[lesion]).mean()
    else:
        assert inside.min() > 0 and inside.std() < 1e-3 * inside.mean()   # the constant, in the input's scale
    assert np.allclose(runs[0.2].difference, image - runs[0.2].pseudo_normal, atol=1e-3)


def test_the_switch_gives_the_fill_of_s_lesion_the_rings_mean(tmp_path, case, monkeypatch):
    """RING_MATCH_WITHOUT_MASK (off in the shipped engine, docs/pasted-truth.md): when on, a network
    that fills 0.2 brighter gives the same pseudo-normal inside S's lesion as one that does not."""
    image, _ = case
    monkeypatch.setattr(synthesis_fill, "RING_MATCH_WITHOUT_MASK", True)
    runs = {o: _run(_model(tmp_path, o), image, None) for o in (0.0, 0.2)}
    lesion = runs[0.0].lesion_mask > 0
    assert lesion.sum() > 20
    change = runs[0.2].pseudo_normal - runs[0.0].pseudo_normal
    assert np.abs(change[lesion]).max() < 1e-3 * np.abs(image[lesion]).mean()


def test_review_mode_gives_each_part_of_the_fill_the_rings_mean():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.3, 0.6, (40, 40, 10)).astype(np.float32)
    image[:3] = 0   # background: not in the ring
    hole = np.zeros(image.shape, bool)
    hole[10:20, 10:20, 2:6] = True
    hole[25:30, 25:30, 5:8] = True
    filled = np.where(hole, np.float32(0.1), image)
    out = ring_matched(filled, image, hole)
    ring, (labels, n) = ring_mean_fill(image, hole), ndimage.label(hole)
    assert n == 2 and np.array_equal(out[~hole], filled[~hole])
    for k in (1, 2):
        assert abs(out[labels == k].mean() - ring[labels == k].mean()) < 1e-5
        assert np.allclose(out[labels == k] - filled[labels == k], out[labels == k][0] - 0.1)   # a shift


def test_a_model_without_a_fill_network_fills_with_g(tmp_path, case):
    image, label = case
    plain, filled = (_run(_model(tmp_path, o), image, label) for o in (None, 0.0))
    lesion = label > 0
    assert np.array_equal(plain.pseudo_normal[~lesion], filled.pseudo_normal[~lesion])
    assert not np.allclose(plain.pseudo_normal[lesion], filled.pseudo_normal[lesion])


def test_the_model_file_keeps_the_fill_network(tmp_path):
    model = _model(tmp_path, 0.2)
    saved = torch.load(model.path, weights_only=True)
    assert FILL_NET in saved and json.loads(saved["config"])["networks"][FILL_NET]["start"] == "smooth"
    assert torch.allclose(model.nets[FILL_NET].unet.head.bias, torch.tensor([0.2]))


def test_add_fill_network_trains_on_the_models_training_split_only(tmp_path):
    """scripts/add_fill_network.py on a small cohort: two steps of a tiny fill network; the copy has
    it with its training record (the split's training cases only), G, S and R unchanged."""
    from script_helpers import script_module
    from smilecore.synthetic import write_cohort
    cohort = write_cohort(tmp_path / "cohort", n_cases=4, seed=2, shape=(40, 40, 12))
    ids = sorted(p.name for p in cohort.iterdir() if p.is_dir())
    split = {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
    torch.manual_seed(0)
    source = save_model(tmp_path / "m.pt", build_networks(SIZES), model_config(SIZES, "t2", training={"split": split}))
    script = script_module("add_fill_network")
    out = tmp_path / "with-fill.pt"
    assert script.main([str(source), str(cohort), "--out", str(out), "--steps", "2", "--batch-size", "2",
                        "--crop", "32", "--base", "4", "--depth", "2", "--through-plane-sigma", "0"]) == 0
    model, before = load_model(out), load_model(source)
    record = model.config["fill_network"]
    assert record["cases"] == ids[:2] and record["steps"] == 2 and model.config["networks"][FILL_NET]["base"] == 4
    assert pass_sigma(model.config) == 0.0 and pass_sigma(before.config) == Z_SIGMA   # the engine's unless named
    for name in "GSR":
        for key, value in before.nets[name].state_dict().items():
            assert torch.equal(value, model.nets[name].state_dict()[key]), (name, key)
    with pytest.raises(SystemExit, match="--out is the input model"):
        script.main([str(source), str(cohort), "--out", str(source)])


def test_the_network_sees_the_other_hemisphere_without_the_lesions_s_finds(tmp_path, case, monkeypatch):
    """Trained long, the network copies what the mirror channel shows; a tumour there came into the
    fill (docs/fill-cv.md, seventh stage). In synthesis that channel has S's lesion (p above the
    mask's threshold) zeroed, as the case's own tumour was in training: in review mode and without."""
    from smilecore import synthesis
    image, label = case
    real_fill, real_with = synthesis_fill.fill_volume, synthesis.fill_with_network
    seen = {}

    def spy_fill(net, img, hole, tumour=None):
        seen["tumour"] = tumour
        return real_fill(net, img, hole, tumour=tumour)

    def spy_with(model, outs, user_mask, threshold):
        seen["found"] = outs.prob > threshold
        return real_with(model, outs, user_mask, threshold)
    monkeypatch.setattr(synthesis_fill, "fill_volume", spy_fill)
    monkeypatch.setattr(synthesis, "fill_with_network", spy_with)
    for mask in (label, None):
        seen.clear()
        _run(_model(tmp_path, 0.0), image, mask)
        assert seen["found"].any() and np.array_equal(seen["tumour"], seen["found"])
