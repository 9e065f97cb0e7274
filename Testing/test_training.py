"""End to end: the four phases with a labelled fraction < 1 on a small generated cohort."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_config
from smilecore.events import read_events
from smilecore.modelfile import load_model
from smilecore.train import CHECKPOINT_NAME, MODEL_NAME, Trainer, lr_at

STEP_KEYS = {"phase", "phase_name", "epoch", "epochs", "step", "steps_per_epoch", "global_step",
             "total_steps", "losses", "eps", "pseudo_label_share", "slices_per_s", "eta_s"}


def test_all_four_phases_run_with_the_confidence_enhancer(trained_run):
    events = read_events(trained_run / "events.jsonl")
    steps = [e for e in events if e["event"] == "step"]
    assert {e["phase"] for e in steps} == {1, 2, 3, 4}
    assert all(STEP_KEYS <= set(e) for e in steps)
    assert len(steps) == steps[0]["total_steps"] == (4 + 1 + 1 + 2) * 10
    # each phase optimises its own terms
    assert {"gen_identity", "gen_adv", "seg_pn", "seg_real"} <= set(steps[0]["losses"])
    assert set(next(e for e in steps if e["phase"] == 2)["losses"]) == {"recons"}
    assert {"seg_pab", "recons_adv"} <= set(next(e for e in steps if e["phase"] == 3)["losses"])
    # the unlabelled share of the training cases is pseudo-labelled, and eps moves from 0.9
    assert any("semi" in e["losses"] for e in steps)
    assert any(e["pseudo_label_share"] > 0 for e in steps)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert epochs[0]["eps_used"] == 0.9 and any(e["eps"] != 0.9 for e in epochs)
    assert events[-1]["event"] == "done"
    model = load_model(trained_run / MODEL_NAME)
    assert model.config["training"]["labeled_fraction"] == 0.5
    assert model.config["training"]["split"]["train_unlabeled"]


def test_gvs_runs_phase_one_only(cohort, tmp_path):
    Trainer(tiny_config(cohort, tmp_path, variant="gvs", labeled_fraction=1.0, epochs=1, steps_per_epoch=2)).run()
    steps = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "step"]
    assert {e["phase"] for e in steps} == {1} and len(steps) == 2


def test_the_lesion_part_of_the_transplant_term_is_trained_and_recorded(cohort, tmp_path):
    Trainer(tiny_config(cohort, tmp_path, variant="gvs", labeled_fraction=1.0, epochs=1, steps_per_epoch=6,
                        transplant_weight=1.0, transplant_lesion_weight=2.0)).run()
    steps = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "step"]
    paired = [e["losses"] for e in steps if "transplant" in e["losses"]]
    assert paired and all("transplant_lesion" in t and t["transplant_lesion"] > 0 for t in paired)
    assert load_model(tmp_path / MODEL_NAME).config["training"]["transplant_lesion_weight"] == 2.0


def test_config_errors_are_clear(cohort, tmp_path):
    with pytest.raises(ValueError, match="needs --transplant-weight"):
        tiny_config(cohort, tmp_path, transplant_lesion_weight=1.0).check()
    with pytest.raises(ValueError, match="GVS comparison uses all labels"):
        tiny_config(cohort, tmp_path, variant="gvs", labeled_fraction=0.5).check()
    with pytest.raises(ValueError, match="3 epoch counts given for 4 phases"):
        tiny_config(cohort, tmp_path, epochs=(1, 2, 3)).check()
    with pytest.raises(FileNotFoundError, match="no BraTS cases found"):
        Trainer(tiny_config(tmp_path, tmp_path / "out")).run()


def _weights(path):
    return {n: net.state_dict() for n, net in load_model(path).nets.items()}


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_result(cohort, trained_run, tmp_path):
    """A real training process is killed with SIGKILL after a few checkpoints; `--resume`
    finishes the run and, on CPU with the same seed, ends with exactly the weights of the
    uninterrupted run (the `trained_run` fixture has the same settings). The resume runs the
    same `smile` command line in this process (torch's import is paid once); the killed process
    and the resume use the thread count trained_run used (results differ in the last bits
    between thread counts)."""
    from conftest import TRAINED_WITH_THREADS
    from smilecore.cli import main
    threads = TRAINED_WITH_THREADS["trained_run"]
    out = tmp_path / "run"
    args = ["train", str(cohort), "--out", str(out), "--quiet",
            "--labeled-fraction", "0.5", "--split", "0.6,0.2,0.2", "--epochs", "4,1,1,2",
            "--steps-per-epoch", "10", "--batch-size", "4", "--base", "8", "--depth", "3", "--lr", "1e-3",
            "--seed", "0", "--transplant-weight", "1", "--checkpoint-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "smilecore.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        events = read_events(out / "events.jsonl") if (out / "events.jsonl").exists() else []
        if any(e["event"] == "checkpoint" and e["global_step"] >= 27 for e in events):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / MODEL_NAME).exists()                      # it was stopped before the end
    killed_at = torch.load(out / CHECKPOINT_NAME, weights_only=True)["position"]["global_step"]
    assert 0 < killed_at < 80
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert main(args + ["--resume"]) == 0
    finally:
        torch.set_num_threads(before)
    starts = [e for e in read_events(out / "events.jsonl") if e["event"] == "start"]
    assert starts[-1]["resumed"] and starts[-1]["global_step"] == killed_at
    steps = [e for e in read_events(out / "events.jsonl") if e["event"] == "step"]
    assert steps[-1]["global_step"] == 80
    resumed, uninterrupted = _weights(out / MODEL_NAME), _weights(trained_run / MODEL_NAME)
    for n in "GSR":
        for k, v in uninterrupted[n].items():
            assert torch.equal(resumed[n][k], v), f"{n}.{k} differs after resume"


def test_resume_without_a_checkpoint_says_so(cohort, tmp_path, capsys):
    from smilecore.cli import main   # the command's code in this process (a `smile` process adds torch's import)
    assert main(["train", str(cohort), "--out", str(tmp_path / "none"), "--resume"]) == 1
    assert "smile train: error: --resume: no checkpoint at" in capsys.readouterr().err


def test_cosine_schedule_decays_the_learning_rate_to_zero(cohort, tmp_path):
    assert lr_at(1e-3, "cosine", 0, 100) == 1e-3 and lr_at(1e-3, "constant", 99, 100) == 1e-3
    assert lr_at(1e-3, "cosine", 50, 100) == pytest.approx(5e-4) and lr_at(1e-3, "cosine", 100, 100) == 0
    Trainer(tiny_config(cohort, tmp_path, variant="gvs", labeled_fraction=1.0, epochs=1, steps_per_epoch=6,
                        lr_schedule="cosine")).run()
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    # the last update (step 5 of 6) of G and S (phase 1 trains no R) ran at the schedule's rate
    for opt in (state["opts"]["G"], state["opts"]["S"]):
        assert opt["param_groups"][0]["lr"] == pytest.approx(lr_at(1e-3, "cosine", 5, 6))
        assert opt["param_groups"][0]["lr"] < 1e-4   # far below the start's
    assert load_model(tmp_path / MODEL_NAME).config["training"]["lr_schedule"] == "cosine"
    with pytest.raises(ValueError, match="unknown lr schedule"):
        tiny_config(cohort, tmp_path, lr_schedule="step").check()
