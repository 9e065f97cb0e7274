"""The reach of G's change (synthesis_blend.kept_near_lesion): without a mask, the pseudo-normal is
the input exactly farther than the reach from S's lesion, so that G's gate opening on normal
anatomy far from every lesion (a training case's lateral ventricles) cannot erase it."""
import dataclasses

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from smilecore import synthesis_blend
from smilecore.modelfile import load_model
from smilecore.synthesis import synthesize
from smilecore.synthesis_blend import REACH_FADE_MM, change_reach, kept_near_lesion
from smilecore.train import MODEL_NAME


def _changed_everywhere(seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.uniform(100, 200, (40, 40, 30)).astype(np.float32)
    lesion = np.zeros(raw.shape, bool)
    lesion[15:20, 15:20, 12:15] = True
    return raw, raw + rng.uniform(5, 10, raw.shape).astype(np.float32), lesion


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 5.0)])
def test_beyond_the_reach_the_input_is_kept_exactly_and_near_the_lesion_the_change_is_whole(spacing):
    raw, changed, lesion = _changed_everywhere()
    reach = 8.0
    pn = changed.copy()
    kept_near_lesion(pn, raw, lesion, spacing, reach)
    distance = ndimage.distance_transform_edt(~lesion, sampling=spacing)   # mm
    far, near = distance > reach, distance <= reach - REACH_FADE_MM
    assert far.any() and near.any()
    assert np.array_equal(pn[far], raw[far])            # bit for bit
    assert np.array_equal(pn[near], changed[near])      # the lesion and its surroundings untouched
    fading = ~far & ~near
    assert np.all((pn[fading] >= raw[fading]) & (pn[fading] <= changed[fading]))
    if spacing[2] > 1:   # 5 mm slices: two slices above the lesion are 10 mm off, beyond an 8 mm reach
        assert np.array_equal(pn[15:20, 15:20, 16], raw[15:20, 15:20, 16])


def test_no_lesion_means_no_change_and_reach_zero_means_no_limit():
    raw, changed, lesion = _changed_everywhere()
    pn = changed.copy()
    kept_near_lesion(pn, raw, np.zeros_like(lesion), (1, 1, 1), 12.0)
    assert np.array_equal(pn, raw)      # a brain S finds no lesion in: nothing changes
    pn = changed.copy()
    kept_near_lesion(pn, raw, lesion, (1, 1, 1), 0.0)
    assert np.array_equal(pn, changed)


@pytest.fixture(scope="module")
def case(cohort, trained_run):
    """A synthetic case and the session's trained tiny model, whose G changes brain outside S's
    lesion (an untrained G changes none)."""
    d = cohort / "Synth_000"
    img = nib.load(d / "Synth_000_t2.nii.gz")
    return img.get_fdata().astype(np.float32), img.affine, load_model(trained_run / MODEL_NAME)


def test_synthesis_without_a_mask_changes_nothing_beyond_the_reach(case):
    """The trained tiny G changes brain far from the lesion; with a reach (3 mm here: the
    synthetic brain is small beside the default's) the pseudo-normal differs from the input only
    within it of the lesion mask, and the difference output is input - pseudo-normal everywhere."""
    data, affine, model = case
    assert change_reach(model.config) == (synthesis_blend.REACH_MM, synthesis_blend.REACH_P)   # names none
    reach = 3.0
    runs = {}
    for reach in (0, reach):
        m = dataclasses.replace(model, config={**model.config, "change_reach_mm": reach, "change_reach_p": 1.0})
        runs[reach] = synthesize(data, affine, m, notify=lambda _: None).arrays()
    lesion = runs[0]["lesion_mask"] > 0
    assert lesion.any()
    spacing = nib.affines.voxel_sizes(affine)
    far = ndimage.distance_transform_edt(~lesion, sampling=spacing) > reach
    unlimited, limited = runs[0]["pseudo_normal"], runs[reach]["pseudo_normal"]
    assert (unlimited[far] != data[far]).sum() > 100          # without a reach G changes far brain
    assert np.array_equal(limited[far], data[far])            # with it, none
    assert np.array_equal(limited[lesion], unlimited[lesion])
    assert np.allclose(runs[reach]["difference"], data - limited, atol=1e-3)
    for name in ("lesion_mask", "lesion_probability", "pseudo_abnormal"):
        assert np.array_equal(runs[0][name], runs[reach][name]), name


def test_a_reach_the_engine_cannot_use_is_refused(model_path, tmp_path):
    from script_helpers import script_module

    from smilecore.modelfile import ModelFileError
    set_recipe = script_module("set_recipe")
    with pytest.raises(ModelFileError, match=r"change_reach_mm -1\.0 is not a number of mm"):
        set_recipe.set_recipe(model_path, "model", {"change_reach_mm": -1.0}, tmp_path / "bad.pt")
    out = tmp_path / "no-reach.pt"
    set_recipe.set_recipe(model_path, "model", {"change_reach_mm": 0}, out)
    assert change_reach(load_model(out).config)[0] == 0
    with pytest.raises(ModelFileError, match=r"change_reach_p 0 is not a probability"):
        set_recipe.set_recipe(model_path, "model", {"change_reach_p": 0}, tmp_path / "bad.pt")
