"""`smile evaluate` end to end on the generated cohort, and the known-truth set."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.evaluate import SpredSettings, mean_fill, train_spred, transplant_set
from smilecore.train import MODEL_NAME


def test_transplant_set_has_known_truth(cohort, tmp_path):
    cases = [cache_case(c, tmp_path) for c in find_cases(cohort) if c.labeled]
    t = transplant_set(cases, n=8, seed=0, min_lesion=10)
    assert len(t.image) == 8
    for img, truth, lesion, (rc, _, dc, _) in zip(t.image, t.truth, t.lesion, t.source):
        assert rc != dc and lesion.any()
        assert np.array_equal(img[~lesion], truth[~lesion])   # outside the lesion: the healthy slice
        assert not np.array_equal(img[lesion], truth[lesion])
        assert (truth[lesion] > 0).all()                      # pasted inside the brain only
    assert transplant_set(cases, n=8, seed=0, min_lesion=10).source == t.source
    filled = mean_fill(t.image, t.lesion)
    assert np.array_equal(filled[~t.lesion], t.image[~t.lesion])
    assert np.ptp(filled[0][t.lesion[0]]) == 0                # one flat value per lesion


def test_spred_is_trained_once_and_cached(cohort, tmp_path):
    cases = [cache_case(c, tmp_path) for c in find_cases(cohort) if c.labeled]
    settings = SpredSettings(base=4, depth=2, steps=3, batch_size=2, crop=None)
    a = train_spred(cases, settings, tmp_path)
    assert len(list(tmp_path.glob("spred-*.pt"))) == 1
    b = train_spred(cases, settings, tmp_path)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert np.array_equal(v.numpy(), w.numpy()), k
    # the same cases scaled by the brain's median are another Spred (it judges models of that scaling)
    median = [cache_case(c, tmp_path, normalisation="median") for c in find_cases(cohort) if c.labeled]
    assert {c.normalisation for c in median} == {"median"} and {c.normalisation for c in cases} == {"clip-percentile"}
    train_spred(median, settings, tmp_path)
    assert len(list(tmp_path.glob("spred-*.pt"))) == 2
    with pytest.raises(ValueError, match="scaled differently"):
        train_spred(cases + median, settings, tmp_path)


@pytest.mark.slow
def test_cli_evaluate_reports_every_metric(trained_run, cohort, tmp_path):
    from smilecore.cli import main   # in this process (test_cli_and_writes runs a `smile evaluate` process)
    out = tmp_path / "report.json"
    assert main(["evaluate", str(trained_run / MODEL_NAME), "--data", str(cohort), "--spred-steps", "20",
                 "--spred-base", "8", "--transplants", "6", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                 "--figure", str(tmp_path / "kt.png")]) == 0
    report = json.loads(out.read_text())
    assert (tmp_path / "kt.png").stat().st_size > 1000 and report["figure"] == str(tmp_path / "kt.png")
    assert 0 < report["identity"] <= 1 and report["abnormal_slices"] > 0
    assert report["healthiness"] == report["healthiness"]     # not NaN: Spred found lesions in I
    assert 0 <= report["dice_S"] <= 1 and set(report["dice_S_per_case"]) == set(report["test_cases"])
    syn = report["synthesis"]                                        # what `smile synthesize` gives on each test file
    assert set(syn["per_case"]) == set(report["test_cases"]) and 0 <= syn["dice"] <= 1
    assert all(e["segmentor"] == "S" and 0 <= e["far_changed"] <= 1 for e in syn["per_case"].values())
    kt = report["known_truth"]
    assert set(kt) == {"model", "model_mask_given", "model_mask_given_no_fill", "model_S_mask_fill",
                       "untouched", "mean_fill", "smooth_fill", "best_constant"}
    assert kt["mean_fill"]["psnr"] > kt["untouched"]["psnr"]  # the baseline does remove something
    assert kt["best_constant"]["psnr"] >= kt["mean_fill"]["psnr"]
    # with the mask given, G never sees the lesion's own values: better than leaving it
    assert kt["model_mask_given"]["psnr"] > kt["untouched"]["psnr"]
    assert 0 < report["S_mask_fill"]["identity"] <= 1
    per_host = report["known_truth_per_case"]                  # default: lesions of other cases only
    assert set(per_host) <= set(report["test_cases"]) and sum(e["transplants"] for e in per_host.values()) == 6
    assert all(e["same_case"] == 0 and host not in e["donor_cases"] for host, e in per_host.items())
    hb = report["healthy_brain"]
    assert set(hb["per_case"]) == set(report["test_cases"])
    assert all(0 <= hb["pooled"][k] <= 1 for k in ("changed_share", "mean_abs_change"))
    normal = report["normal_anatomy_called_lesion"]                 # issue 23: bright tissue, healthy-ised brain
    assert set(normal["per_case"]) == set(report["test_cases"])
    assert all(0 <= normal[k]["mean"] <= normal[k]["worst"] <= 1 for k in ("bright_tissue", "healthy_ised"))
    assert set(report["known_truth_through_plane"]) == {"truth", "input", "model", "model_mask_given", "mean_fill"}
    assert report["known_truth_through_plane"]["mean_fill"] < report["known_truth_through_plane"]["input"]
    dz = report["through_plane_change"]
    assert set(dz) == {"pseudo_normal_lesion", "input_lesion", "input_healthy", "pseudo_normal_healthy"}
    assert all(0 <= v < 1 for v in dz.values())


def test_lesion_slabs_keep_the_volume_shape_of_the_lesion(cohort, tmp_path):
    from smilecore.evaluate import transplant_slabs
    cases = [cache_case(c, tmp_path) for c in find_cases(cohort) if c.labeled]
    slabs = transplant_slabs(cases, n=2, length=3, seed=0, min_lesion=5)
    assert slabs.image.ndim == 4 and slabs.image.shape[1] == 3
    for img, truth, lesion, (rc, rz, dc, dz) in zip(slabs.image, slabs.truth, slabs.lesion, slabs.source):
        assert np.array_equal(img[~lesion], truth[~lesion]) and lesion.any()
        recipient = next(c for c in cases if c.case_id == rc)
        start = int(np.nonzero(recipient.z == rz)[0][0])
        assert list(recipient.z[start:start + 3]) == [rz, rz + 1, rz + 2]   # adjacent slices
        assert not recipient.abnormal[start:start + 3].any()                 # healthy truth


def test_known_truth_on_training_cases_ranks_runs_without_the_test_cases(trained_run, cohort, tmp_path):
    model = trained_run / MODEL_NAME
    script = Path(__file__).resolve().parents[1] / "scripts" / "known_truth_on_training_cases.py"
    r = subprocess.run([sys.executable, str(script), str(cohort), str(model), str(model), "--n", "6",
                        "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    head, *rows = r.stdout.strip().splitlines()
    assert head.startswith("6 lesions pasted into") and "mean fill (told the mask)" in head
    figures = [float(row.split("no mask ")[1].split(" dB")[0]) for row in rows]
    assert len(figures) == 2 and figures[0] == figures[1] and 0 < figures[0] < 60   # the same model, the same figure
    hosts = int(head.split("pasted into ")[1].split()[0])
    assert 1 <= hosts <= len(json.loads((trained_run / "split.json").read_text())["train"])
