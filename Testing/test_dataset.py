import os
import subprocess
import sys

import numpy as np

from smilecore.cases import find_cases
from smilecore.dataset import EpochSampler, SliceSet, cache_case
from smilecore.synthetic import write_cohort


def test_cache_is_reused_until_the_source_changes(tmp_path):
    data = write_cohort(tmp_path / "data", n_cases=1, shape=(32, 32, 12))
    case = find_cases(data)[0]
    first = cache_case(case, tmp_path / "cache")
    entries = list((tmp_path / "cache").iterdir())
    mtime = (entries[0] / "image.npy").stat().st_mtime_ns
    again = cache_case(case, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == entries
    assert (entries[0] / "image.npy").stat().st_mtime_ns == mtime  # not rebuilt
    assert isinstance(again.image, np.memmap) and np.array_equal(first.image, again.image)
    # a changed source file or another setting gives a new entry
    os.utime(case.image("t2"), ns=(1, 1))
    cache_case(case, tmp_path / "cache")
    cache_case(case, tmp_path / "cache", min_brain_fraction=0.2)
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_slices_without_brain_are_dropped_and_abnormal_flagged(tmp_path):
    data = write_cohort(tmp_path / "data", n_cases=1, shape=(32, 32, 12))
    case = find_cases(data)[0]
    cached = cache_case(case, tmp_path / "cache")
    assert 0 < len(cached.z) < 12                        # the ellipsoid's caps hold too little brain
    assert cached.image.dtype == np.float16 and float(cached.image.max()) == 1.0
    assert np.array_equal(cached.abnormal, cached.mask.reshape(len(cached.z), -1).any(1))
    unlabeled = cache_case(case, tmp_path / "cache", use_label=False)
    assert unlabeled.mask is None and not unlabeled.abnormal.any()


def test_epoch_order_and_crops_are_a_function_of_seed_phase_epoch(tmp_path):
    data = write_cohort(tmp_path / "data", n_cases=2, shape=(32, 32, 12))
    cached = [cache_case(c, tmp_path / "cache") for c in find_cases(data)]
    slices = SliceSet(cached, crop=16)
    a = EpochSampler(slices, seed=0, phase=1, epoch=0).items
    assert a == EpochSampler(slices, seed=0, phase=1, epoch=0).items
    assert a != EpochSampler(slices, seed=0, phase=1, epoch=1).items
    assert EpochSampler(slices, 0, 1, 0, start=5).items == a[5:]
    item = slices[a[0]]
    assert item["image"].shape == (1, 16, 16) and item["mask"].shape == (16, 16)


def test_a_half_built_entry_of_a_killed_run_is_removed_by_the_next(tmp_path):
    data = write_cohort(tmp_path / "data", n_cases=1, shape=(32, 32, 12))
    case = find_cases(data)[0]
    cache_case(case, tmp_path / "cache")
    (entry,) = (tmp_path / "cache").iterdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                           # a pid that no longer runs
    stale = entry.with_name(f"{entry.name}.tmp{dead.pid}")
    stale.mkdir()
    (stale / "image.npy").write_bytes(b"half")
    (entry / "meta.json").unlink()                        # the entry must be rebuilt
    cache_case(case, tmp_path / "cache")
    assert not stale.exists() and entry.is_dir()
