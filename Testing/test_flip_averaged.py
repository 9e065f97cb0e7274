"""S_flair's test-time flips (flair.FlipAveraged, issue 23): its lesion probability is the average
over the input as it is, flipped left-right, flipped front-back and rotated 180 degrees, so a
volume whose header lies about left-right or about a half-turn gives the same lesion, flipped.
Small random networks: what is checked is the averaging, not what the shipped S_flair finds."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smilecore.flair import DEFAULT_FLIPS, TEST_TIME_FLIPS, FlipAveraged, flip_averaged
from smilecore.modelfile import segmentor_recipe, load_model, model_config, save_model
from smilecore.networks import FLAIR_NET, build_networks
from smilecore.synthesis import synthesize
from smilecore.synthetic import LPS
from flair_helpers import SIZES, flair_case

MOVES = {"left-right": (-2,), "front-back": (-1,), "180 degrees": (-2, -1)}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return build_networks({**SIZES, FLAIR_NET: {"in_ch": 4, "base": 4, "depth": 2}})[FLAIR_NET].eval()


def probability(S, x):
    with torch.no_grad():
        return torch.softmax(S(x), 1)


@pytest.mark.parametrize("move", MOVES)
def test_the_average_is_equivariant_to_each_flip_and_the_plain_net_is_not(net, move):
    x = torch.rand(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    dims = MOVES[move]
    averaged = FlipAveraged(net, TEST_TIME_FLIPS["d2"])
    moved = probability(averaged, torch.flip(x, dims))
    assert torch.allclose(moved, torch.flip(probability(averaged, x), dims), atol=1e-5)
    plain_gap = (probability(net, torch.flip(x, dims)) - torch.flip(probability(net, x), dims)).abs().max()
    assert plain_gap > 1e-3   # without the average a flip changes the output: the check has teeth


def test_its_softmax_is_the_mean_of_the_flipped_back_probabilities(net):
    x = torch.rand(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = sum(torch.flip(probability(net, torch.flip(x, d) if d else x), d) if d else probability(net, x)
                   for d in TEST_TIME_FLIPS["d2"]) / 4
    assert torch.allclose(probability(FlipAveraged(net, TEST_TIME_FLIPS["d2"]), x), expected, atol=1e-6)


def test_the_recipe_chooses_the_flips(net):
    assert flip_averaged(net, {"test_time_flips": "none"}) is net
    assert flip_averaged(net, {}).flips == TEST_TIME_FLIPS[DEFAULT_FLIPS]
    assert flip_averaged(net, {"test_time_flips": "lr"}).flips == ((), (-2,))


def _model(path, flips: str):
    torch.manual_seed(2)    # random S_flair: its output depends on where things are
    sizes = {**SIZES, FLAIR_NET: {"in_ch": 4, "base": 4, "depth": 2}}
    config = {**model_config(sizes, "t2"), "flair_segmentor": {**segmentor_recipe(), "test_time_flips": flips}}
    return load_model(save_model(path, build_networks(sizes), config))


@pytest.mark.parametrize("flips, equal", [("d2", True), ("none", False)])
def test_a_volume_whose_header_lies_about_left_and_right_gets_the_same_lesion(tmp_path, flips, equal):
    t2, flair, brain, _ = flair_case()
    model = _model(tmp_path / f"{flips}.pt", flips)
    # the arrays reversed left-right under the same affine: what a header that lies would give
    runs = [synthesize(v, LPS, model, flair=(f, LPS), notify=lambda m: None).lesion_probability
            for v, f in ((t2, flair), (t2[::-1].copy(), flair[::-1].copy()))]
    gap = np.abs(runs[1][::-1] - runs[0])[brain].max()
    assert (gap < 1e-4) if equal else (gap > 1e-3), gap


def test_a_model_file_with_unknown_flips_is_refused(tmp_path):
    with pytest.raises(ValueError, match="test_time_flips"):
        _model(tmp_path / "bad.pt", "sideways")
