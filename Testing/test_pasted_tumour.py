"""scripts/pasted_tumour_cases.py (issue 24, no mask on cross-case known truth): the paste puts
the donor's scaled intensities exactly inside the placed mask, moved as the mask was, and leaves
the host as it is elsewhere; the model without its fill network loses that network only; the
summary's per-fold bar reads the right folds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smilecore import inpainting_protocol as protocol
from smilecore.modelfile import SmileModel
from smilecore.networks import FILL_NET

from script_helpers import script_module


@pytest.fixture(scope="module")
def script():
    return script_module("pasted_tumour_cases")   # it imports cv_fill and cv_segmentor beside it


def source_index(mask: np.ndarray, placed: dict) -> tuple:
    """Where each mask voxel's value comes from in the donor, by hand: undo the shift, then the
    left-right mirror of axis 0."""
    x, y, z = np.nonzero(mask)
    dx, dy, dz = placed["shift"]
    x, y, z = x - dx, y - dy, z - dz
    if placed["mirrored"]:
        x = mask.shape[0] - 1 - x
    return x, y, z


@pytest.mark.parametrize("placed", [{"mirrored": False, "shift": [0, 0, 0]},
                                    {"mirrored": True, "shift": [2, -1, 1]},
                                    {"mirrored": True, "shift": [-3, 2, 0]}])
def test_paste_moves_the_donor_as_its_mask_and_scales_it(script, placed):
    rng = np.random.default_rng(0)
    host = rng.uniform(1, 2, (16, 14, 10)).astype(np.float32)
    donor = rng.uniform(5, 9, host.shape).astype(np.float32)
    label = np.zeros(host.shape, bool)
    label[3:7, 4:9, 2:6] = True
    mask = script.moved(label, placed)
    assert mask.sum() == label.sum()   # the block stays inside the volume at these shifts
    out = script.paste(host, donor, mask, placed, 0.5)
    np.testing.assert_array_equal(out[mask], 0.5 * donor[source_index(mask, placed)])
    np.testing.assert_array_equal(out[~mask], host[~mask])
    assert label[source_index(mask, placed)].all()   # every pasted voxel is the donor's tumour


def test_paste_on_the_protocols_placement(script):
    """A donor mask placed by inpainting_protocol.place_mask (as the fill CV places it): the paste
    is the donor's tumour, scaled, exactly where the placed mask is, off the host's tumour."""
    rng = np.random.default_rng(1)
    shape = (40, 36, 24)
    brain = np.zeros(shape, bool)
    brain[4:36, 4:32, 2:22] = True
    host = np.where(brain, rng.uniform(1, 2, shape), 0).astype(np.float32)
    tumour = np.zeros(shape, bool)
    tumour[6:14, 8:16, 8:14] = True
    label = np.zeros(shape, bool)
    label[8:20, 10:22, 6:16] = True   # over the host's tumour where it lies: it must be moved
    donor = np.where(label, rng.uniform(6, 9, shape), rng.uniform(1, 2, shape)).astype(np.float32)
    mask, placed = protocol.place_mask(brain, tumour, [label], seed=3, max_shift=12)
    assert placed["mirrored"] or placed["shift"] != [0, 0, 0]
    out = script.paste(host, donor, mask, placed, 2.0)
    np.testing.assert_array_equal(out[mask], 2.0 * donor[source_index(mask, placed)])
    assert (out[mask] >= 12).all()   # donor tumour values (>= 6) scaled, never its healthy tissue
    np.testing.assert_array_equal(out[~mask], host[~mask])
    assert not (mask & tumour).any()


def test_without_fill_network_keeps_the_other_networks(script):
    nets = {name: torch.nn.Identity() for name in ("G", "S", "R", FILL_NET)}
    model = SmileModel(nets, {"modality": "t2"}, Path("m.pt"))
    bare = script.without_fill_network(model)
    assert set(bare.nets) == {"G", "S", "R"} and all(bare.nets[n] is nets[n] for n in "GSR")
    assert FILL_NET in model.nets and bare.config is model.config


def test_summary_judges_each_fold(script, tmp_path):
    """The fill network's PSNR above the ring mean's in fold 0 only: the bar is met there alone."""
    from cv_segmentor import folds
    hosts = [f"Brats18_case_{k:02d}" for k in range(12)]
    first = set(folds(hosts)[0])
    measures = {m: 1.0 for m in script.MEASURES + script.EXTRAS}

    def scores(host):
        return {"fill_network": {**measures, "psnr": 20.0 if host in first else 10.0},
                "g_fill": {**measures, "psnr": 12.0}, "ring_mean": {**measures, "psnr": 15.0},
                "pasted": {**measures, "psnr": 8.0}}
    cases = {h: {"mask": {"donor": "d"}, "mask_ml": 1.0, "scores": scores(h)} for h in hosts}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"model": "m.pt", "hosts": hosts, "held_out": {hosts[0]: "test"}, "cases": cases}))
    text = script.summary(str(path))
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:].isdigit()]
    assert [row.split(" | ")[-1] for row in rows] == ["yes |", "no |", "no |", "no |"]
    assert "| fill_network | " in text and "not in the default's training split: test" in text
    del cases[hosts[1]]
    path.write_text(json.dumps({"model": "m.pt", "hosts": hosts, "cases": cases}))
    assert "bar met" not in script.summary(str(path))   # no fold table from a partial record


def test_pasted_probability_reads_each_mask_apart(monkeypatch):
    """scripts/pasted_probability.py: the pasted mask's and the own tumour's figures come from their
    own voxels (a miss by S_t2 told apart from a miss by the mask rule)."""
    module = script_module("pasted_probability")
    p = np.zeros((8, 8, 4), np.float32)
    pasted, own = np.zeros(p.shape, bool), np.zeros(p.shape, bool)
    pasted[:4], own[4:] = True, True
    p[:2], p[2:4] = 0.9, 0.6          # pasted: half over 0.7, all over 0.5
    p[4:] = 0.2                        # own: nothing over 0.5
    monkeypatch.setattr(module, "synthesize", lambda *a, **k: type("R", (), {"lesion_probability": p})())
    found = module.probabilities(None, {"pasted": p, "affine": np.eye(4), "mask": pasted, "tumour": own})
    assert found["pasted"] == pytest.approx({"mean": 0.75, "over_0.5": 1.0, "over_0.7": 0.5})
    assert found["own"] == pytest.approx({"mean": 0.2, "over_0.5": 0.0, "over_0.7": 0.0})
