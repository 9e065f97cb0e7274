"""The through-plane pass over the fill (synthesis_blend.through_plane_pass) and the stripe
measures (inpainting_protocol.stripe_measures): a fill made slice by slice gets a brightness of
its own in each slice, seen as stripes in coronal views; the pass averages it along z inside the
replaced region only."""
import dataclasses
import nibabel as nib
import numpy as np
import pytest

from smilecore import inpainting_protocol as protocol
from smilecore import synthesis_blend
from smilecore.modelfile import load_model
from smilecore.synthesis import synthesize
from smilecore.synthesis_blend import through_plane_pass


def _striped(seed=0):
    """A textured truth, a box mask, and a fill that is flat in-plane with its own random
    brightness in every slice (what a 2D fill slice by slice looks like)."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(1.0, 0.2, (32, 32, 24)).astype(np.float32)
    mask = np.zeros(truth.shape, bool)
    mask[8:24, 8:24, 4:20] = True
    fill = truth.copy()
    fill[mask] = (1.0 + rng.normal(0, 0.15, truth.shape[2]).astype(np.float32))[np.nonzero(mask)[2]]
    return truth, mask, fill


def test_a_flat_striped_fill_fails_the_stripe_measure_and_the_pass_reduces_it():
    truth, mask, fill = _striped()
    assert protocol.stripe_measures(truth, truth, mask) == {"slice_bias_jump": 0.0, "slice_step_ratio": 1.0,
                                                             "z_share_ratio": 1.0}
    before = protocol.score(fill, truth, protocol.voided(truth, mask), mask)
    # the old measure passes it (below its bar of 1.3); the new ones do not
    assert before["through_plane_ratio"] < 1.3 and before["gradient_ratio"] == 0.0
    assert before["slice_bias_jump"] > 0.5 and before["slice_step_ratio"] > 5 and before["z_share_ratio"] > 1.5
    out = fill.copy()
    box = through_plane_pass(out, mask, 1.5)
    after = protocol.stripe_measures(out, truth, mask)
    assert after["slice_bias_jump"] < 0.4 * before["slice_bias_jump"]
    assert after["slice_step_ratio"] < 0.4 * before["slice_step_ratio"]
    assert np.array_equal(out[~mask], fill[~mask])        # outside the region: bit-identical
    assert box == (slice(8, 24), slice(8, 24), slice(4, 20))
    # a fill constant along z is left as it is (the average of equal values)
    flat = np.where(mask, np.float32(0.7), truth)
    kept = flat.copy()
    through_plane_pass(kept, mask, 2.0)
    assert np.allclose(kept, flat, atol=1e-6)
    assert through_plane_pass(fill.copy(), mask, 0.0) is None   # sigma 0: no pass


def test_the_pass_uses_the_regions_voxels_only():
    """Tissue outside the region never leaks in: a bright slab just above it changes nothing."""
    truth, mask, fill = _striped(1)
    a, b = fill.copy(), fill.copy()
    b[:, :, 20:] += 100.0   # the slices above the mask
    through_plane_pass(a, mask, 2.0)
    through_plane_pass(b, mask, 2.0)
    assert np.array_equal(a[mask], b[mask])


@pytest.fixture(scope="module")
def case(cohort, model_path):
    d = cohort / "Synth_000"
    img = nib.load(d / "Synth_000_t2.nii.gz")
    mask = nib.load(d / "Synth_000_seg.nii.gz").get_fdata() > 0
    return img.get_fdata().astype(np.float32), img.affine, mask, load_model(model_path)


@pytest.mark.parametrize("given", [True, False], ids=["review", "no-mask"])
def test_synthesize_changes_only_the_replaced_region(case, given):
    data, affine, mask, model = case
    runs, on = [], synthesis_blend.pass_sigma(model.config) or 1.5   # the model's sigma, or one if its pass is off
    for sigma in (0.0, on):   # the same networks, the sigma named in their configuration
        with_sigma = dataclasses.replace(model, config={**model.config, "through_plane_sigma": sigma})
        runs.append(synthesize(data, affine, with_sigma, mask=mask if given else None, notify=lambda m: None).arrays())
    without, with_ = runs
    region = with_["lesion_mask"] > 0   # review: the user's mask (in the brain); else S's, cut to the brain
    for name in ("lesion_probability", "lesion_mask", "pseudo_abnormal"):
        assert np.array_equal(without[name], with_[name]), name
    for name in ("pseudo_normal", "difference"):
        assert np.array_equal(without[name][~region], with_[name][~region]), name
    assert region.any()   # the untrained S of this model marks a few slices too
    assert not np.array_equal(with_["pseudo_normal"][region], without["pseudo_normal"][region])
    assert np.array_equal(with_["difference"][region], (data - with_["pseudo_normal"])[region])
    if given:   # the engine's pass is the function the fill CV applies to a pass-free fill
        expected = without["pseudo_normal"].copy()
        through_plane_pass(expected, mask, on)
        assert np.array_equal(with_["pseudo_normal"], expected)


def test_a_models_pass_sigma_is_set_without_retraining_and_checked(model_path, tmp_path, capsys):
    """scripts/set_recipe.py --role model: the sigma lands in a copy whose weights are the same bytes,
    synthesis and `smile info` read it, and a sigma synthesis cannot use is refused with no file left."""
    import torch

    from smilecore.cli import main as cli_main
    from smilecore.modelfile import ModelFileError
    from script_helpers import script_module
    set_recipe = script_module("set_recipe")
    out = tmp_path / "no-pass.pt"
    assert set_recipe.main([str(model_path), "--role", "model", "--set", "through_plane_sigma=0", "--out", str(out)]) == 0
    before, after = (torch.load(p, weights_only=True) for p in (model_path, out))
    assert before.keys() == after.keys()
    for name in set(before) - {"config"}:
        if isinstance(before[name], dict):
            assert all(torch.equal(before[name][k], after[name][k]) for k in before[name]), name
    assert synthesis_blend.pass_sigma(load_model(out).config) == 0.0
    assert synthesis_blend.pass_sigma(load_model(model_path).config) == synthesis_blend.Z_SIGMA
    capsys.readouterr()
    assert cli_main(["info", str(out)]) == 0
    assert "through-plane pass sigma 0 slices" in capsys.readouterr().out
    bad = tmp_path / "bad.pt"
    with pytest.raises(ModelFileError, match=r"through_plane_sigma -1\.0 is not a number of slices in \[0, 100\)"):
        set_recipe.set_recipe(model_path, "model", {"through_plane_sigma": -1.0}, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-pass.pt"]
