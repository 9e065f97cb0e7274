"""`smile benchmark --quick` end to end on the generated cohort, so the benchmark cannot rot."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from smilecore.benchmark import QUICK, Benchmark, BenchmarkSettings, VARIANTS
from smilecore.train import MODEL_NAME

PAPER_VARIANTS = ("GVS", "SMILE-sup", "SMILE-75", "SMILE-50")
DEFAULT_VARIANTS = (*PAPER_VARIANTS, "SMILE-sup+gated", "SMILE-sup+gated+2.5D", "SMILE-sup+median",
                    "SMILE-sup+gated+median")


@pytest.fixture(scope="module")
def quick_benchmark(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "smilecore.cli", "benchmark", str(cohort), "--out", str(out), "--quick",
           "--seeds", "0,1", "--spred-steps", "30", "--spred-base", "8"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, cmd, r.stdout


@pytest.mark.slow
def test_quick_benchmark_reports_every_variant_and_seed(quick_benchmark):
    out, _, stdout = quick_benchmark
    report = json.loads((out / "benchmark.json").read_text())
    assert set(report["runs"]) == set(DEFAULT_VARIANTS)
    for variant, by_seed in report["runs"].items():
        assert set(by_seed) == {"0", "1"}
        for r in by_seed.values():
            assert 0 < r["identity"] <= 1 and 0 <= r["dice_S"] <= 1 and r["train_seconds"] > 0
            assert r["healthiness"] <= 1
            assert {"model", "model_mask_given", "model_mask_given_no_fill", "model_S_mask_fill", "untouched",
                    "mean_fill", "smooth_fill", "best_constant"} <= set(r["known_truth"])
            assert set(r["known_truth_through_plane"]) == {"truth", "input", "model", "model_mask_given", "mean_fill"}
        row = report["summary"]["variants"][variant]
        assert row["identity"]["n"] == 2
        assert row["kt_dz_model"]["n"] == 2 and row["kt_model_S_mask_fill_psnr"]["n"] == 2
        assert row["S_mask_fill_identity"]["n"] == 2
        assert row["identity"]["mean"] == pytest.approx(np.mean([r["identity"] for r in by_seed.values()]))
    # different seeds are different trainings
    s0, s1 = (report["runs"]["SMILE-50"][k] for k in ("0", "1"))
    assert s0["known_truth"]["model"]["psnr"] != s1["known_truth"]["model"]["psnr"]
    aug = report["augmentation"]
    assert set(aug) == {"0", "1"} and set(aug["0"]) == {"real", "real+pseudo-normal", "real+pseudo-abnormal", "real+both"}
    assert all(0 <= v <= 1 for a in aug.values() for v in a.values())
    md = (out / "benchmark.md").read_text()
    for name in (*DEFAULT_VARIANTS, "Ablation", "healthy brain: changed", "mean fill", "Table 3", "real+both", report["hardware"]["cpu"],
                 "Through-plane change against known truth", "best constant", "mask given, lesion fill"):
        assert name in md
    assert md in stdout
    for figs in report["figures"].values():
        for path in figs.values():
            with Image.open(path) as im:
                assert im.width > 100 and im.height > 50


@pytest.mark.slow
def test_all_runs_share_one_split_and_budget(quick_benchmark):
    out, _, _ = quick_benchmark
    report = json.loads((out / "benchmark.json").read_text())
    steps = {}
    for run in (out / "runs").iterdir():
        split = json.loads((run / "split.json").read_text())
        assert split["test"] == report["split"]["test"] and split["val"] == report["split"]["val"]
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        steps[run.name] = [e for e in events if e["event"] == "done"][-1]["global_step"]
    # GVS trains as many steps as SMILE; the gated G as many again, on top of SMILE-sup's
    assert len(steps) == 16 and len(set(steps.values())) == 1, steps
    assert not set(report["split"]["test"]) & set(report["split"]["train"])


@pytest.mark.slow
def test_rerun_reuses_finished_runs(quick_benchmark):
    out, cmd, _ = quick_benchmark
    models = {p: p.stat().st_mtime_ns for p in (out / "runs").glob(f"*/{MODEL_NAME}")}
    models.update({p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/augmentation.json")})
    assert len(models) == 16 + 2                                 # 16 models, one augmentation result per seed
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in models} == models


@pytest.mark.slow
def test_gated_variant_starts_from_smile_sup_and_keeps_its_S(quick_benchmark):
    out, _, _ = quick_benchmark
    from smilecore.modelfile import load_model
    report = json.loads((out / "benchmark.json").read_text())
    for seed in ("0", "1"):
        start = load_model(out / "runs" / f"SMILE-sup-seed{seed}" / MODEL_NAME)
        for variant, context in (("SMILE-sup+gated", 0), ("SMILE-sup+gated+2.5D", 1)):
            gated = load_model(out / "runs" / f"{variant}-seed{seed}" / MODEL_NAME)
            assert gated.config["networks"]["G"]["kind"] == "gated" and gated.config["training"]["frozen"] == "S"
            assert gated.config["training"]["context_slices"] == context == gated.nets["G"].context
            for k, v in start.nets["S"].state_dict().items():
                assert torch.equal(v, gated.nets["S"].state_dict()[k]), k
            assert 0 <= report["runs"][variant][seed]["outside_lesion_changed"]["pooled"] <= 1
    # the 2D and the 2.5D G are measured on the same pasted lesions (the centre slices)
    assert (report["runs"]["SMILE-sup+gated"]["0"]["known_truth"]["untouched"]
            == report["runs"]["SMILE-sup+gated+2.5D"]["0"]["known_truth"]["untouched"])
    # known truth: lesions of other cases pasted into the test cases
    assert all(host != donor for host, _, donor, _ in report["known_truth_source"])


@pytest.mark.slow
def test_median_variants_train_and_are_judged_on_the_median_scaling(quick_benchmark):
    out, _, _ = quick_benchmark
    from smilecore.modelfile import load_model
    report = json.loads((out / "benchmark.json").read_text())
    runs = report["runs"]
    for seed in ("0", "1"):
        paper = load_model(out / "runs" / f"SMILE-sup-seed{seed}" / MODEL_NAME)
        median = load_model(out / "runs" / f"SMILE-sup+median-seed{seed}" / MODEL_NAME)
        gated = load_model(out / "runs" / f"SMILE-sup+gated+median-seed{seed}" / MODEL_NAME)
        assert paper.normalisation == "clip-percentile" and median.normalisation == gated.normalisation == "median"
        for k, v in median.nets["S"].state_dict().items():   # the gated G starts from the median run's S
            assert torch.equal(v, gated.nets["S"].state_dict()[k]), k
        # the same lesions on another scale: the references differ, the untouched input is still the worst
        kt_paper, kt_median = runs["SMILE-sup"][seed]["known_truth"], runs["SMILE-sup+median"][seed]["known_truth"]
        assert kt_paper["mean_fill"]["psnr"] != kt_median["mean_fill"]["psnr"]
        assert kt_median["untouched"]["psnr"] < kt_median["mean_fill"]["psnr"]
    summary = report["summary"]
    assert summary["known_truth_baselines"]["mean_fill"] == runs["SMILE-sup"]["0"]["known_truth"]["mean_fill"]
    row = summary["variants"]["SMILE-sup+median"]["kt_mean_fill_psnr"]
    assert row["n"] == 2 and row["mean"] == pytest.approx(
        np.mean([runs["SMILE-sup+median"][s]["known_truth"]["mean_fill"]["psnr"] for s in ("0", "1")]))


def test_a_variant_needs_the_one_it_starts_from(cohort, tmp_path):
    with pytest.raises(ValueError, match="starts from SMILE-sup"):
        BenchmarkSettings(data_dir=str(cohort), out_dir=str(tmp_path), variants=("GVS", "SMILE-sup+gated")).check()


def test_augmentation_sets_are_labelled_as_described(cohort, trained_run, tmp_path):
    settings = BenchmarkSettings(data_dir=str(cohort), out_dir=str(tmp_path), **QUICK)
    bench = Benchmark(settings, log=lambda *_: None)
    bench.prepare()
    from smilecore.modelfile import load_model
    sets = bench.augmentation_sets(load_model(trained_run / MODEL_NAME), seed=0)
    pn, pab = sets["pseudo-normal"], sets["pseudo-abnormal"]
    n_abnormal = sum(int(c.abnormal.sum()) for c in bench.data["clip-percentile"].train)
    assert len(pn.image) == len(pab.image) == n_abnormal
    assert not np.asarray(pn.mask).any()                                  # pseudo-normal: empty label
    assert all(np.asarray(pab.mask[i]).any() for i in range(len(pab.image)))  # every painted slice has its lesion
    assert not (np.asarray(pab.mask) & (pab.image == 0)).any()             # painted inside the brain only
    assert ((pn.image >= 0) & (pn.image <= 1)).all()


def test_unknown_variant_is_refused(cohort, tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        BenchmarkSettings(data_dir=str(cohort), out_dir=str(tmp_path), variants=("SMILE-25",)).check()
    assert "SMILE-sup+paired" in VARIANTS


def test_a_run_is_reused_only_for_the_same_training(cohort, tmp_path):
    from dataclasses import asdict, replace
    from smilecore.benchmark import _same_training
    from smilecore.train import TrainConfig
    cfg = TrainConfig(data_dir=str(cohort), out_dir=str(tmp_path), lr=1e-3)
    saved = json.loads(json.dumps(asdict(cfg)))
    del saved["channels_last"]                         # a run made before that setting existed
    assert _same_training(saved, cfg)
    assert _same_training(saved, replace(cfg, device="cpu", checkpoint_every=7))   # speed, not results
    assert _same_training(saved, replace(cfg, out_dir="relative/spelling"))       # where, not what
    assert not _same_training(saved, replace(cfg, lr=1e-4))
    assert not _same_training(saved, replace(cfg, transplant_weight=1.0))
