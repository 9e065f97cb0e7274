"""FLAIR as an optional second input to the segmentor (issue 23, item 3; smilecore/flair.py).

The model here (flair_helpers.py) carries an S_flair whose output can be predicted: its weights pass
one chosen input channel straight to the lesion logit (20 x channel - 14: lesion where the channel is
above 0.7), so the lesion mask says which channel S_flair saw and where. The FLAIR has a bright blob
(1.0 after the median scaling, tissue 0.4) away from the T2's lesion, so a mask on the blob is
S_flair's and not S's. Volumes are small synthetic brains written as real NIfTI files.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from flair_helpers import SHAPE, SIZES, coarse_flair, dice, flair_case, flair_model
from smilecore.cli import main as cli_main
from smilecore.flair import NoFlairSegmentor, mirror_sum, mirrored
from smilecore.modelfile import ModelFileError, load_model, model_config, save_model
from smilecore.networks import FLAIR_NET, T2_NET, build_networks
from smilecore.synthesis import synthesize, synthesize_file
from smilecore.synthetic import LPS
from smilecore.volume import VolumeError


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """(T2 file, FLAIR file on its grid, T2 array, FLAIR array, brain, blob, folder)."""
    folder = tmp_path_factory.mktemp("flair-case")
    t2, flair, brain, blob = flair_case()
    paths = folder / "case_t2.nii.gz", folder / "case_flair.nii.gz"
    for path, data in zip(paths, (t2, flair)):
        nib.save(nib.Nifti1Image(data, LPS), path)
    return (*paths, t2, flair, brain, blob, folder)


def test_the_lesion_mask_is_s_flairs_on_the_flair_of_the_same_grid(case, tmp_path):
    _, _, t2, flair, brain, blob, _ = case
    model = load_model(flair_model(tmp_path / "m.pt"))
    result = synthesize(t2, LPS, model, flair=(flair, LPS), brain=brain, notify=lambda m: None)
    assert np.array_equal(result.lesion_mask > 0, blob)          # the FLAIR channel, thresholded
    assert result.segmentor == FLAIR_NET and any(FLAIR_NET in n for n in result.notes)
    # the same FLAIR stored in another voxel order (RAS) is the same grid: the same result
    ras = np.eye(4)
    ras[:3, 3] = (1 - SHAPE[0], 1 - SHAPE[1], 0)    # voxel j of the flipped axes lies where LPS's n-1-j does
    again = synthesize(t2, LPS, model, flair=(flair[::-1, ::-1].copy(), ras), brain=brain, notify=lambda m: None)
    assert np.array_equal(again.lesion_mask, result.lesion_mask)
    without = synthesize(t2, LPS, model, brain=brain, notify=lambda m: None)
    assert without.segmentor == "S" and not np.array_equal(without.lesion_mask > 0, blob)


def test_a_flair_on_a_2mm_grid_in_another_voxel_order_is_resampled_onto_the_t2(case, tmp_path):
    _, _, t2, flair, brain, blob, _ = case
    model = load_model(flair_model(tmp_path / "m.pt"))
    notes = []
    result = synthesize(t2, LPS, model, flair=coarse_flair(flair), brain=brain, notify=notes.append)
    assert dice(result.lesion_mask, blob) > 0.8, dice(result.lesion_mask, blob)
    assert any("resampled onto the T2's voxel grid" in n for n in notes)


def test_the_mirrored_channel_mirrors_about_the_brains_centre(case, tmp_path):
    _, _, t2, flair, brain, blob, _ = case
    model = load_model(flair_model(tmp_path / "m.pt", channel=3))   # 3: the FLAIR mirrored
    result = synthesize(t2, LPS, model, flair=(flair, LPS), brain=brain, notify=lambda m: None)
    expected = mirrored(np.moveaxis(blob, 2, 0), mirror_sum(brain))    # (Z, X, Y) slices
    assert expected.sum() > 100
    assert np.array_equal(result.lesion_mask > 0, np.moveaxis(expected, 0, 2) & brain)
    assert not (result.lesion_mask > 0)[blob].any()


def _hooked(net, calls):
    return net.register_forward_hook(lambda module, args, kwargs, out: calls.append((args, kwargs, out)),
                                     with_kwargs=True)


def test_g_sees_and_gives_the_same_with_and_without_flair(case, tmp_path):
    _, _, t2, flair, brain, _, _ = case
    model = load_model(flair_model(tmp_path / "m.pt"))
    runs = []
    for given in (None, (flair, LPS)):
        g, s = [], []
        hooks = _hooked(model.nets["G"], g), _hooked(model.nets["S"], s)
        synthesize(t2, LPS, model, flair=given, brain=brain, notify=lambda m: None, batch_size=4)
        for h in hooks:
            h.remove()
        runs.append((g, s))
    (g0, s0), (g1, s1) = runs
    assert len(g0) == len(g1) > 0 and len(s0) > 0 and s1 == []     # with FLAIR, S does not run
    for (a_in, _, a_out), (b_in, _, b_out) in zip(g0, g1):
        assert torch.equal(a_in[0], b_in[0]) and torch.equal(a_out, b_out)


def test_the_gated_gs_cover_is_s_flairs_mask(case, tmp_path):
    _, _, t2, flair, brain, blob, _ = case
    model = load_model(flair_model(tmp_path / "m.pt", generator="gated"))
    calls = []
    hook = _hooked(model.nets["G"], calls)
    result = synthesize(t2, LPS, model, flair=(flair, LPS), brain=brain, notify=lambda m: None)
    hook.remove()
    covered = sum(int(kwargs["cover"].sum()) for _, kwargs, _ in calls)
    assert covered == int(blob.sum()) == int(result.lesion_mask.sum())
    # held open over the blob: the pseudo-normal changed there, the input kept elsewhere in the brain
    assert not np.allclose(result.pseudo_normal[blob], t2[blob])


def test_a_model_without_s_flair_refuses_a_flair_before_any_work(case, model_path, tmp_path):
    t2_path, flair_path, t2, flair, *_ = case
    with pytest.raises(NoFlairSegmentor, match=f"^model file {model_path} has no FLAIR segmentor; "):
        synthesize_file(t2_path, tmp_path / "out", load_model(model_path), flair_path=tmp_path / "missing.nii.gz")
    assert not (tmp_path / "out").exists()
    with pytest.raises(NoFlairSegmentor):
        synthesize(t2, LPS, load_model(model_path), flair=(flair, LPS))
    assert load_model(model_path).flair is None


def test_a_flair_that_does_not_overlap_the_t2s_brain_is_refused_naming_the_file(case, tmp_path):
    t2_path, _, _, flair, *_ = case
    model = load_model(flair_model(tmp_path / "m.pt"))
    for shift, share in ((300.0, "0"), (12.0, None)):   # far away; about half of the brain outside
        affine = LPS.copy()
        affine[2, 3] = shift
        path = tmp_path / f"shifted{int(shift)}_flair.nii.gz"
        nib.save(nib.Nifti1Image(flair, affine), path)
        with pytest.raises(VolumeError) as err:
            synthesize_file(t2_path, tmp_path / "out", model, flair_path=path)
        message = str(err.value)
        assert message.startswith(f"FLAIR {path}: covers ") and "\n" not in message
        share = share or message.split("covers ")[1].split(" %")[0]
        assert f"covers {share} % of the T2's brain (at least 90 % is needed" in message
        assert shift > 100 or 30 < int(share) < 70, message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.nii.gz"))
    # two slices off: most of the brain is covered, and a note says how much is not
    affine = LPS.copy()
    affine[2, 3] = 2.0
    notes = []
    synthesize(case[2], LPS, model, flair=(flair, affine), brain=case[4], notify=notes.append)
    assert any("of the T2's brain lies outside the FLAIR's field of view" in n for n in notes), notes


def test_the_command_line_takes_a_flair_and_info_says_so(case, tmp_path, capsys):
    t2_path, flair_path, t2, flair, brain, blob, _ = case
    model = flair_model(tmp_path / "m.pt")
    out = tmp_path / "out"
    assert cli_main(["synthesize", str(t2_path), "--flair", str(flair_path), "--model", str(model),
                     "--out-dir", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"the lesion mask is {FLAIR_NET}'s" in err and f"(FLAIR {flair_path}: it must be the same patient's)" in err
    mask = nib.load(out / "case_t2_lesion_mask.nii.gz").get_fdata() > 0
    assert np.array_equal(mask, blob)
    assert cli_main(["info", str(model)]) == 0
    assert "FLAIR input    accepted (smile synthesize --flair): S_flair sees t2, flair, both mirrored" in \
        capsys.readouterr().out
    t2_named = tmp_path / "other_t2.nii.gz"        # a FLAIR argument named like a T2: refused
    nib.save(nib.Nifti1Image(flair, LPS), t2_named)
    assert cli_main(["synthesize", str(t2_path), "--flair", str(t2_named), "--model", str(model),
                     "--out-dir", str(tmp_path / "o2")]) == 1
    assert capsys.readouterr().err.strip() == (f"smile synthesize: error: FLAIR {t2_named}: its name says t2 "
                                               "(BraTS suffix), not FLAIR; give the FLAIR image")


def test_model_files_with_and_without_s_flair(tmp_path, model_path):
    path = flair_model(tmp_path / "m.pt")
    model = load_model(path)
    assert set(model.nets) == {"G", "S", "R", FLAIR_NET}
    assert model.flair["modalities"] == ["t2", "flair"] and model.flair["mirror"] is True
    assert model.flair["normalisation"] == "median"
    # a recipe whose channels S_flair does not take: refused as inconsistent, naming the file
    blob = torch.load(path, weights_only=True)
    import json
    config = json.loads(blob["config"])
    config["flair_segmentor"]["mirror"] = False
    blob["config"] = json.dumps(config)
    bad = tmp_path / "bad.pt"
    torch.save(blob, bad)
    with pytest.raises(ModelFileError, match=f"model file {bad}: damaged or inconsistent .*S_flair takes 4"):
        load_model(bad)
    assert set(load_model(model_path).nets) == {"G", "S", "R"}


@pytest.mark.parametrize("recipe, role, channels, extra", [("mirror+flair", FLAIR_NET, 4, []),
                                                         ("mirror", T2_NET, 2, ["--min-component-share", "0.1"])])
def test_add_segmentor_trains_on_the_models_training_split_only(tmp_path, recipe, role, channels, extra):
    """scripts/add_segmentor.py on a small cohort (FLAIR files beside the T2s): two steps of a tiny
    S_flair or S_t2; the copy has it, G, S and R unchanged, and only the split's training cases."""
    import shutil

    from script_helpers import script_module
    from smilecore.synthetic import write_cohort
    cohort = write_cohort(tmp_path / "cohort", n_cases=4, seed=2, shape=(40, 40, 12))
    for t2 in cohort.glob("*/*_t2.nii.gz"):
        shutil.copy(t2, t2.with_name(t2.name.replace("_t2.", "_flair.")))
    ids = sorted(p.name for p in cohort.iterdir() if p.is_dir())
    split = {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
    torch.manual_seed(0)
    source = save_model(tmp_path / "m.pt", build_networks(SIZES), model_config(SIZES, "t2", training={"split": split}))
    script = script_module("add_segmentor")
    out = tmp_path / "with-segmentor.pt"
    assert script.main([str(source), str(cohort), "--out", str(out), "--recipe", recipe, "--steps", "2",
                        "--batch-size", "2", "--crop", "32", "--base", "4", "--depth", "2", *extra]) == 0
    model, before = load_model(out), load_model(source)
    assert set(model.nets) == {"G", "S", "R", role}
    assert model.recipe(role)["training"]["cases"] == ids[:2] and model.recipe(role)["training"]["steps"] == 2
    assert model.nets[role].unet.down[0][0].in_channels == channels
    assert model.recipe(role).get("min_component_share") == (0.1 if extra else None)
    for name in "GSR":
        for key, value in before.nets[name].state_dict().items():
            assert torch.equal(value, model.nets[name].state_dict()[key]), (name, key)
    with pytest.raises(SystemExit, match="--out is the input model"):
        script.main([str(source), str(cohort), "--out", str(source)])


def test_the_bundled_default_drops_small_parts_of_s_flairs_mask_and_info_says_so(capsys):
    """The shipped S_flair keeps parts of at least a tenth of the largest (cross-validated,
    docs/segmentor-cv.md "S_flair's mask rule"), at the model's threshold, and `smile info` says so."""
    from smilecore.modelfile import default_model_path
    from smilecore.synthesis_segmentor import mask_rule
    model = load_model(default_model_path())
    assert mask_rule(model, FLAIR_NET) == (0.5, 0.1)
    assert cli_main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("FLAIR input"))
    assert line.endswith("median scaling; parts under 0.1 of the largest dropped")


def test_flair_fold_check_scores_each_mask_rule_on_one_probability(monkeypatch):
    """scripts/flair_fold_check.py --rules: each rule (threshold:share) is applied to the one
    synthesis's S_flair probability: a higher threshold keeps less, a share drops the small part."""
    from types import SimpleNamespace
    from script_helpers import script_module
    script = script_module("flair_fold_check")
    shape = (30, 30, 8)
    prob = np.zeros(shape, np.float32)
    prob[5:15, 5:15, 2:6] = 0.9          # the tumour, sure
    prob[15:17, 5:15, 2:6] = 0.55        # its rim, unsure
    prob[24:26, 24:26, 2:4] = 0.8        # a small far part (8 voxels)
    truth = np.zeros(shape, bool)
    truth[5:17, 5:15, 2:6] = True
    t2 = np.ones(shape, np.float32)
    t2[24:26, 24:26, 2:4] = 5.0          # the small part lies on bright tissue
    calls = []
    monkeypatch.setattr(script, "synthesize",
                        lambda *a, **k: calls.append(1) or SimpleNamespace(lesion_probability=prob))
    record = {"cases": {}}
    script.record_rules(record, "c", t2, np.eye(4), None, truth, None, "0.5:0,0.6:0,0.5:0.1")
    got = record["cases"]["c"]
    assert len(calls) == 1
    assert got["0.5:0"]["dice"] == pytest.approx(2 * 480 / (488 + 480)) and got["0.5:0"]["bright_marked"] > 0.9
    assert got["0.6:0"]["dice"] == pytest.approx(2 * 400 / (408 + 480))
    assert got["0.5:0.1"]["dice"] == 1.0 and got["0.5:0.1"]["bright_marked"] == 0.0
