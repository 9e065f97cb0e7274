"""S_t2: a recipe segmentor on the T2 alone (the T2 and its left-right mirror), which synthesis
without a FLAIR uses in place of S where a model has it (issue 23, item 2; smilecore/networks.py).

As in test_flair_input.py, the segmentor's weights pass one chosen input channel straight to the
lesion logit (flair_helpers.reading_segmentor: lesion where the channel is above 0.7), so the mask
says which channel it saw. The T2 gets a bright blob (1.0 after the median scaling, the rest of the
brain at most 0.6), so a mask on the blob, or on its mirror, is S_t2's and not S's.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from flair_helpers import SIZES, flair_case, reading_segmentor
from script_helpers import script_module
from smilecore.cli import main as cli_main
from smilecore.flair import mirror_sum, mirrored
from smilecore.modelfile import ModelFileError, load_model, model_config, save_model, segmentor_recipe
from smilecore.modelsummary import networks_used
from smilecore.networks import FLAIR_NET, T2_NET, build_networks
from smilecore.synthesis import synthesize
from smilecore.synthetic import LPS


def t2_model(path, channel: int = 0, flair_channel: int | None = None, in_ch: int = 2, modalities=("t2",),
             **recipe):
    """A model file whose S_t2 reads input `channel` (0: the T2; 1: the T2 mirrored), and with
    `flair_channel` an S_flair that reads that channel of its own input; `recipe`: more of S_t2's recipe."""
    torch.manual_seed(0)
    sizes = {**SIZES, T2_NET: {"in_ch": in_ch, "base": 4, "depth": 2}}
    config = {**model_config(sizes, "t2"), "t2_segmentor": {**segmentor_recipe(modalities), **recipe}}
    if flair_channel is not None:
        sizes[FLAIR_NET] = {"in_ch": 4, "base": 4, "depth": 2}
        config["flair_segmentor"] = segmentor_recipe()
    nets = build_networks(sizes)
    reading_segmentor(nets[T2_NET], channel)
    if flair_channel is not None:
        reading_segmentor(nets[FLAIR_NET], flair_channel)
    return save_model(path, nets, config)


@pytest.fixture(scope="module")
def case():
    """(T2 with a bright blob, FLAIR, brain, blob)."""
    t2, flair, brain, blob = flair_case()
    t2 = t2.copy()
    t2[blob] = 2000.0   # the brain's median is about 730: the blob scales to 1 (clipped), the rest below 0.6
    return t2, flair, brain, blob


def test_without_a_flair_s_t2_finds_the_lesion_on_the_t2(case, tmp_path):
    t2, _, brain, blob = case
    result = synthesize(t2, LPS, load_model(t2_model(tmp_path / "m.pt")), brain=brain, notify=lambda m: None)
    assert result.segmentor == T2_NET
    assert np.array_equal(result.lesion_mask > 0, blob)


def test_s_t2s_second_channel_is_the_t2_mirrored_about_the_brains_centre(case, tmp_path):
    t2, _, brain, blob = case
    result = synthesize(t2, LPS, load_model(t2_model(tmp_path / "m.pt", channel=1)), brain=brain,
                        notify=lambda m: None)
    expected = np.moveaxis(mirrored(np.moveaxis(blob, 2, 0), mirror_sum(brain)), 0, 2) & brain
    assert expected.sum() > 100 and not (expected & blob).any()
    assert np.array_equal(result.lesion_mask > 0, expected)


def test_a_flair_given_makes_s_flair_the_segmentor_even_with_s_t2(case, tmp_path):
    t2, flair, brain, blob = case
    model = load_model(t2_model(tmp_path / "m.pt", channel=1, flair_channel=0))   # S_flair reads the T2
    with_flair = synthesize(t2, LPS, model, flair=(flair, LPS), brain=brain, notify=lambda m: None)
    assert with_flair.segmentor == FLAIR_NET and np.array_equal(with_flair.lesion_mask > 0, blob)
    without = synthesize(t2, LPS, model, brain=brain, notify=lambda m: None)
    assert without.segmentor == T2_NET and not (without.lesion_mask > 0)[blob].any()


def test_a_header_that_lies_about_left_and_right_gives_the_same_lesion(case, tmp_path):
    """S_t2 is averaged over the four test-time flips (its recipe's default): a network that is not
    symmetric still gives the same mask on the volume flipped left-right (voxels only)."""
    t2, _, brain, blob = case
    path = t2_model(tmp_path / "m.pt")
    model = load_model(path)
    with torch.no_grad():   # break the network's symmetry: a ramp along X added to the lesion logit
        model.nets[T2_NET].unet.down[0][0].weight[0, 0, 0, 1] = 0.3
    plain = synthesize(t2, LPS, model, brain=brain, notify=lambda m: None).lesion_mask
    flipped = synthesize(t2[::-1].copy(), LPS, model, brain=brain[::-1].copy(), notify=lambda m: None).lesion_mask
    assert plain.any() and np.array_equal(flipped[::-1], plain)


def small_blob(shape) -> np.ndarray:
    """A sphere of 33 voxels in the brain of flair_case, away from its blob (257 voxels)."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (x - 30) ** 2 + (y - 16) ** 2 + (z - 12) ** 2 <= 4


@pytest.mark.parametrize("spacing", [1.0, 0.8])   # 0.8 mm: the networks see slices resampled to 1 mm
def test_components_under_the_recipes_share_of_the_largest_leave_the_lesion_mask(case, tmp_path, spacing):
    """With "min_component_share" 0.5 the small blob (an eighth of the large one) is not lesion: not in the
    mask, so not removed, though its probability stays; the large one is. The same with batches of 1."""
    t2, _, brain, blob = case
    small = small_blob(t2.shape)
    assert brain[small].all() and not (small & blob).any()
    t2 = t2.copy()
    t2[small] = 2000.0
    affine = LPS @ np.diag([spacing, spacing, 1.0, 1.0])
    model = load_model(t2_model(tmp_path / "m.pt", min_component_share=0.5))
    runs = [synthesize(t2, affine, model, brain=brain, notify=lambda m: None, batch_size=b) for b in (16, 1)]
    for result in runs:
        mask = result.lesion_mask > 0
        assert not mask[small].any() and mask[blob].mean() > (0.999 if spacing == 1 else 0.8)   # resampled: edges
        assert (result.lesion_probability[small] > 0.5).mean() > 0.5   # S_t2 saw it; the mask left it out
    assert np.array_equal(runs[0].lesion_mask, runs[1].lesion_mask)
    assert np.array_equal(runs[0].pseudo_normal, runs[1].pseudo_normal)
    plain = synthesize(t2, affine, load_model(t2_model(tmp_path / "plain.pt")), brain=brain, notify=lambda m: None)
    assert (plain.lesion_mask > 0)[small].mean() > 0.5                # without the share: both are lesion


def test_the_recipes_lesion_threshold_decides_the_mask(case, tmp_path):
    """"lesion_threshold" in S_t2's recipe replaces the model's 0.5 for S_t2's mask (what G and R get):
    S_t2 gives the blob p 0.998 and the brain around it under 0.08."""
    t2, _, brain, blob = case
    masks = {}
    for threshold in (0.06, 0.999):
        model = load_model(t2_model(tmp_path / f"m{threshold}.pt", lesion_threshold=threshold))
        result = synthesize(t2, LPS, model, brain=brain, notify=lambda m: None)
        masks[threshold] = result.lesion_mask > 0
        assert np.array_equal(masks[threshold], result.lesion_probability > threshold)
    assert masks[0.06][blob].all() and masks[0.06].sum() > blob.sum()   # the blob and brain around it
    assert not masks[0.999].any()
    assert "lesion above p 0.999" in " ".join(networks_used(model.config))


@pytest.mark.parametrize("in_ch, modalities, problem", [
    (3, ("t2",), "S_t2 takes 3 channels, its recipe gives 2"),
    (4, ("t2", "flair"), "t2_segmentor modalities ['t2', 'flair']: expected t2 first, and no flair"),
    (2, ("t2",), "t2_segmentor min_component_share 1.5 is not a number in [0, 1)"),
    (2, ("t2",), "t2_segmentor lesion_threshold 1 is not a number in (0, 1)"),
])
def test_a_model_whose_s_t2_does_not_match_its_recipe_is_refused(tmp_path, in_ch, modalities, problem):
    recipe = {"min_component_share": 1.5} if "share" in problem else {"lesion_threshold": 1} if "threshold" in problem else {}
    path = t2_model(tmp_path / "m.pt", in_ch=in_ch, modalities=modalities, **recipe)
    with pytest.raises(ModelFileError, match=f"^model file {re.escape(str(path))}: damaged or inconsistent .*{re.escape(problem)}"):
        load_model(path)


def test_smile_info_names_the_t2_segmentor(tmp_path, capsys):
    assert cli_main(["info", str(t2_model(tmp_path / "m.pt"))]) == 0
    assert "T2 segmentor   S_t2: the T2 and its left-right mirror; median scaling" in capsys.readouterr().out


@pytest.mark.parametrize("recipe", ["mirror", "mirror+neg", "mirror+opposite"])
def test_healthiness_is_judged_by_the_fold_segmentor_that_held_each_case_out(tmp_path, recipe):
    """scripts/healthiness_cases.py --judges (and --makers): each case's judge is the model with, as its
    S_t2, the S that cv_segmentor.py trained on the folds without that case (its weights and record); a
    maker also takes the mask rule given (`--rule`, else the model's own)."""
    import json

    from smilecore.unet import UNet
    script = script_module("healthiness_cases")
    folder = tmp_path / "cv" / recipe
    folder.mkdir(parents=True)
    weights = {}
    for k, test in enumerate((["a", "b"], ["c"])):
        torch.manual_seed(k)
        weights[k] = UNet(2, 2, base=4, depth=2, norm="batch").state_dict()
        torch.save(weights[k], folder / f"fold{k}.pt")
        (folder / f"fold{k}.json").write_text(json.dumps({
            "recipe": recipe, "fold": k, "test": test, "train": ["x"],
            "settings": {"base": 4, "depth": 2}}))
    source = save_model(tmp_path / "m.pt", build_networks(SIZES), model_config(SIZES, "t2"))
    judges = script.fold_judges(str(tmp_path / "cv"), str(source), tmp_path, recipe=recipe)
    assert set(judges) == {"a", "b", "c"} and judges["a"] is judges["b"]
    for case, k in (("a", 0), ("c", 1)):
        model = judges[case]
        assert model.segmentor_without_flair == T2_NET and model.recipe(T2_NET)["training"]["fold"] == k
        got = model.nets[T2_NET].unet.state_dict()
        assert all(torch.equal(got[key], value) for key, value in weights[k].items())
    rule = script.mask_rule_of(judges["a"], "0.6,0.2")
    assert rule == {"lesion_threshold": 0.6, "min_component_share": 0.2}
    makers = script.fold_judges(str(tmp_path / "cv"), str(source), tmp_path, recipe=recipe, rule=rule)
    from smilecore.synthesis_segmentor import mask_rule
    assert mask_rule(makers["c"], T2_NET) == (0.6, 0.2) and mask_rule(judges["c"], T2_NET) == (0.5, None)
    assert script.mask_rule_of(makers["c"], None) == rule   # the model's own, when no rule is given


def test_post_processing_drops_components_under_the_share_or_the_floor():
    """scripts/cv_postprocess.py: a component is dropped under share x the largest, or under the
    floor's volume (a judged voxel stands for 2 mm^3: every other 1 mm slice)."""
    script = script_module("cv_postprocess")
    mask = np.zeros((10, 40, 40), bool)
    mask[1:9, 2:22, 2:22] = True     # 3200 voxels: 6.4 mL
    mask[2:4, 30:35, 30:35] = True   # 50 voxels: 0.1 mL, 1.6 % of the largest
    assert script.kept(mask, 0.0, 0.0).sum() == 3250
    assert script.kept(mask, 0.01, 0.0).sum() == 3250 and script.kept(mask, 0.02, 0.0).sum() == 3200
    assert script.kept(mask, 0.0, 0.1).sum() == 3250 and script.kept(mask, 0.0, 0.11).sum() == 3200
    assert not script.kept(mask, 0.0, 7.0).any()   # a floor drops the largest too: nothing left to remove
    ring = mask.copy()
    ring[3, 8:12, 8:12] = False      # a hole inside one slice, and a notch open to the outside
    ring[5, 2:6, 10:12] = False
    filled = script.holes_filled(ring)
    assert filled[3, 8:12, 8:12].all() and not filled[5, 2:6, 10:12].any()
    assert (filled ^ ring).sum() == 16 and not script.holes_filled(np.zeros_like(mask)).any()


def test_a_bilateral_case_copies_the_tumour_to_its_mirror_place_and_labels_both():
    """scripts/cv_segmentor.py's `bilateral`: the tumour's intensities also at its left-right mirror place
    (axis X), where that is not tumour itself; both places are lesion in the mask."""
    cv = script_module("cv_segmentor")
    image = np.arange(1, 13, dtype=np.float32).reshape(1, 4, 3)
    mask = np.zeros((1, 4, 3), np.uint8)
    mask[0, 0, 1] = mask[0, 3, 2] = 1            # x=3, y=2 mirrors onto x=0, y=2
    out, both = cv.bilateral(image, mask)
    assert out[0, 3, 1] == image[0, 0, 1] and out[0, 0, 2] == image[0, 3, 2]
    unchanged = ~(both[0] > 0) | (mask[0] > 0)
    assert np.array_equal(out[0][unchanged], image[0][unchanged])
    assert both[0].sum() == 4 and both[0, 3, 1] and both[0, 0, 2]


def test_an_opposite_case_pastes_another_tumour_at_the_mirror_place_and_labels_both():
    """scripts/cv_segmentor.py's `opposite`: the donor's tumour intensities, moved so that its centre is
    the mirror of this tumour's centre (axis X), only on brain and not over this tumour; both are lesion."""
    cv = script_module("cv_segmentor")
    image = np.full((1, 10, 6), 1.0, np.float32)
    image[0, 8:, :] = 0.0                                   # no brain at x 8-9
    mask = np.zeros((10, 6), np.uint8)
    mask[1:3, 2:4] = 1                                      # centre (1.5, 2.5): mirror place x 7.5
    donor_image = np.full((1, 10, 6), 5.0, np.float32)
    donor_mask = np.zeros((10, 6), np.uint8)
    donor_mask[3:7, 1:3] = 1                                # centre (4.5, 1.5), 4 x 2
    out, both = cv.opposite(image, mask, donor_image, donor_mask)
    pasted = (both > 0) & ~(mask > 0)
    assert np.array_equal(np.argwhere(pasted), [[6, 2], [6, 3], [7, 2], [7, 3]])   # x 6-9 moved, 8-9 not brain
    assert (out[0][pasted] == 5.0).all() and np.array_equal(out[0][~pasted], image[0][~pasted])
    assert np.array_equal(both[mask > 0], mask[mask > 0])


def test_fold_overviews_stacks_each_case_under_its_caption():
    """scripts/fold_overviews.py: the cases' overviews one under the other, each below its own caption line."""
    from PIL import Image
    script = script_module("fold_overviews")
    first, second = Image.new("RGB", (40, 10), (200, 0, 0)), Image.new("RGB", (30, 12), (0, 0, 200))
    canvas = script.stacked([("a", first), ("b", second)])
    assert canvas.size == (40, 10 + 12 + 2 * 16)
    assert canvas.getpixel((5, 16 + 5)) == (200, 0, 0)            # the first case under its caption
    assert canvas.getpixel((5, 16 + 10 + 16 + 5)) == (0, 0, 200)  # the second under its own
    assert canvas.getpixel((35, 16 + 10 + 16 + 5)) == (0, 0, 0)   # beyond a narrower row: black


def test_healthiness_splits_what_is_found_again_into_the_fill_and_what_the_maker_left(monkeypatch):
    """scripts/healthiness_cases.py: 1 - h is the tumour the judge finds again inside the maker's
    mask (the fill) plus outside it; the summary lists them per case, lowest h first."""
    from types import SimpleNamespace
    script = script_module("healthiness_cases")
    shape = (10, 10, 4)
    tumour = np.zeros(shape, bool)
    tumour[:4] = True                                   # 160 voxels
    maker = np.zeros(shape, bool)
    maker[:2] = True                                    # the maker marks half of it
    again = np.zeros(shape, bool)
    again[1:3] = True                                   # 40 in the fill, 40 left by the maker
    again[8:] = True                                    # and healthy brain, which h does not count
    monkeypatch.setattr(script, "synthesize", lambda *a, **k: SimpleNamespace(lesion_mask=again.astype(np.uint8)))
    t2 = np.ones(shape, np.float32)
    f = script.pseudo_normal_figures(t2, t2, tumour, np.eye(4), judge_model=None, lesion=maker)
    assert f["h"] == pytest.approx(0.5)
    assert f["again_in_mask"] == pytest.approx(0.25) and f["again_outside_mask"] == pytest.approx(0.25)
    assert script.found_again(t2, tumour, np.eye(4), None) == pytest.approx(0.5)
    cases = {f"Brats18_{c}": {"dice": 0.8, "judge_finds_on_input": 0.9, "reach": {"8": dict(f, h=h)}}
             for c, h in (("A_1", 0.95), ("B_1", 0.5))}
    lines = script.where_found(cases)
    assert lines[3].startswith("| B_1 | 0.800 | 0.500 | 0.250 | 0.250 | 0.900 |") and lines[4].startswith("| A_1 ")


def test_external_case_figures_count_parts_and_read_the_flair_of_marked_bright_tissue():
    """scripts/external_case.py: Dice and per-label recall against the reference, the mask's parts,
    and each marked piece of bright tissue with its FLAIR over the brain's median (CSF below 1)."""
    from types import SimpleNamespace
    script = script_module("external_case")
    shape = (40, 40, 12)
    t2 = np.zeros(shape, np.float32)
    t2[4:36, 4:36, 1:11] = 1.0
    t2[26:32, 6:12, 3:9] = 3.0                          # bright tissue (CSF) far from the tumour
    labels = np.zeros(shape, int)
    labels[8:16, 8:16, 3:9] = 2
    labels[10:14, 10:14, 4:8] = 1
    mask = labels > 0
    mask[26:32, 6:12, 3:9] = True                       # the mask also takes the CSF: a second part
    flair = np.where(t2 > 0, 1.0, 0).astype(np.float32)
    flair[26:32, 6:12, 3:9] = 0.3                       # dark on FLAIR: CSF
    result = SimpleNamespace(lesion_mask=mask.astype(np.uint8), pseudo_normal=np.where(mask, 0.5, t2))
    f = script.run_figures(result, t2, labels > 0, labels, flair)
    assert f["parts"] == 2 and f["largest_parts"] == [384, 216]
    assert f["recall"] == 1.0 and f["label_recall"] == {1: 1.0, 2: 1.0}
    assert f["dice"] == pytest.approx(2 * 384 / (600 + 384))
    assert f["bright_marked"] > 0.9 and f["bright_marked_flair"] == [(216, 0.3)]
