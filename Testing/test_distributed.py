"""Data-parallel training with torchrun: 2 CPU processes (gloo) against one process."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from smilecore.events import read_events
from smilecore.modelfile import load_model
from smilecore.networks import build_networks
from smilecore.synthetic import write_cohort
from smilecore.train import CHECKPOINT_NAME, MODEL_NAME

pytestmark = pytest.mark.slow  # torchrun processes training end to end

# BatchNorm normalises each process's share of the batch on its own, and terms that average
# over a subset of the batch (labelled slices only, unlabelled only, paired slices) are averaged
# per process (see distributed.py), so the one-process comparison uses U-Nets without
# normalisation, an all-labelled cohort and no paired term: every loss is then a plain mean
# over the global batch.
ARGS = ["--labeled-fraction", "1", "--norm", "none", "--transplant-weight", "0", "--split", "0.6,0.2,0.2",
        "--epochs", "2,1,1,1", "--steps-per-epoch", "4", "--batch-size", "4", "--base", "4", "--depth", "2",
        "--lr", "1e-3", "--seed", "0", "--checkpoint-every", "1", "--quiet", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(cohort, out, processes: int, extra=(), popen=False):
    """`smile train` under torchrun with `processes` workers; the one-process reference runs the
    same command line in this process (a process start and torch's import saved)."""
    args = ["train", str(cohort), "--out", str(out), *ARGS, *extra]
    if processes == 1:
        from smilecore.cli import main
        assert main(args) == 0
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
           "-m", "smilecore.cli", *args]
    if popen:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _epochs(out):
    return [e for e in read_events(out / "events.jsonl") if e["event"] == "epoch"]


def _weights(path):
    return {n: net.state_dict() for n, net in load_model(path).nets.items()}


@pytest.fixture(scope="module")
def labelled_cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("labelled"), n_cases=5, seed=2, shape=(40, 40, 12))


@pytest.fixture(scope="module")
def runs(labelled_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    _train(labelled_cohort, base / "one", 1)
    _train(labelled_cohort, base / "two", 2)
    return base


def _updates(path):
    """Each network's weights minus its initial weights (same seed), flattened."""
    torch.manual_seed(0)
    init = build_networks({n: {"base": 4, "depth": 2, "norm": "none"} for n in "GSR"})
    return {n: torch.cat([(v - init[n].state_dict()[k]).flatten() for k, v in net.state_dict().items()])
            for n, net in load_model(path).nets.items()}


def test_two_processes_see_the_same_samples_and_reach_the_same_weights(runs):
    one, two = runs / "one", runs / "two"
    assert [e["slices"] for e in _epochs(one)] == [e["slices"] for e in _epochs(two)] == [16] * 5
    assert [e["global_step"] for e in read_events(two / "events.jsonl") if e["event"] == "done"] == [20]
    assert len([e for e in read_events(two / "events.jsonl") if e["event"] == "start"]) == 1   # process 0 alone logs
    # 20 Adam steps magnify float rounding (Adam moves even near-zero gradients by about lr), so
    # compare what training changed: the same updates up to a few per cent (a semantic slip, such
    # as each process normalising its own share, gives tens of per cent)
    a, b = _updates(one / MODEL_NAME), _updates(two / MODEL_NAME)
    for n in "GSR":
        assert float((a[n] - b[n]).norm() / a[n].norm()) < 0.03, n
    eps = [[e["eps"] for e in _epochs(r)] for r in (one, two)]
    assert eps[0] == pytest.approx(eps[1])
    ckpt = torch.load(two / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert ckpt["position"]["phase_index"] == 4


def test_killed_two_process_run_resumes_to_the_uninterrupted_result(labelled_cohort, runs, tmp_path):
    cohort = labelled_cohort
    out = tmp_path / "run"
    proc = _train(cohort, out, 2, popen=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        events = read_events(out / "events.jsonl") if (out / "events.jsonl").exists() else []
        if any(e["event"] == "checkpoint" and e["global_step"] >= 9 for e in events):
            break
        time.sleep(0.05)
    # torchrun starts its workers in sessions of their own: kill the whole tree at once
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in tree)
    assert not (out / MODEL_NAME).exists()
    killed_at = torch.load(out / CHECKPOINT_NAME, weights_only=True)["position"]["global_step"]
    assert 0 < killed_at < 20
    _train(cohort, out, 2, extra=["--resume"])
    starts = [e for e in read_events(out / "events.jsonl") if e["event"] == "start"]
    assert starts[-1]["resumed"] and starts[-1]["global_step"] == killed_at
    a, b = _weights(runs / "two" / MODEL_NAME), _weights(out / MODEL_NAME)
    for n in "GSR":
        for k, v in a[n].items():
            assert torch.allclose(b[n][k], v, atol=1e-6), f"{n}.{k} differs after resume"


def test_batch_that_does_not_divide_among_processes_is_refused(cohort, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "smilecore.cli", "train", str(cohort), "--out", str(tmp_path / "x"), *ARGS, "--batch-size", "3"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "does not divide among 2 processes" in r.stderr
