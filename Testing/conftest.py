"""Shared fixtures: a small procedural cohort written as real NIfTI files, and one tiny model
trained through all four phases on it (session-scoped, so the suite trains it once)."""
import os
from pathlib import Path

import pytest
import torch

from smilecore.modelfile import model_config, save_model
from smilecore.networks import build_networks
from smilecore.synthetic import write_cohort
from smilecore.train import Trainer, TrainConfig

# Under pytest-xdist (-n N) the N workers run side by side: each gets an equal share of the usable
# cores (affinity and a container's quota, as synthesis counts them), never more than an
# OMP_NUM_THREADS the user set, for its own torch and for the processes its tests start (they
# inherit it); torch's default, every core in every worker, would oversubscribe the machine.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    from smilecore.precision import usable_cpus
    _share = max(1, usable_cpus() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        _share = min(_share, int(os.environ["OMP_NUM_THREADS"]))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    torch.set_num_threads(_share)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_config(data_dir, out_dir, **overrides) -> TrainConfig:
    settings = dict(data_dir=str(data_dir), out_dir=str(out_dir), labeled_fraction=0.5, split=(0.6, 0.2, 0.2),
                    epochs=(4, 1, 1, 2), steps_per_epoch=10, batch_size=4, base=8, depth=3, lr=1e-3,
                    checkpoint_every=5, seed=0)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """7 cases, 40 x 40 x 16 voxels; every third stored RAS; the last one without a label."""
    return write_cohort(tmp_path_factory.mktemp("cohort"), n_cases=7, seed=1, shape=(40, 40, 16), unlabeled=1)


# torch's thread count each session-trained run used: CPU results differ in the last bits
# between thread counts, and the kill -9 test resumes to trained_run's exact weights
TRAINED_WITH_THREADS: dict[str, int] = {}


@pytest.fixture(scope="session")
def trained_run(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    TRAINED_WITH_THREADS["trained_run"] = torch.get_num_threads()
    Trainer(tiny_config(cohort, out, transplant_weight=1.0)).run()
    return out


SIZES = {n: {"base": 4, "depth": 3, "norm": "batch"} for n in "GSR"}  # tiny networks for input checks


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """An untrained (randomly initialised) T2 model: enough to exercise every input path."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "t2-model.pt"
    return save_model(path, build_networks(SIZES), model_config(SIZES, "t2"))
