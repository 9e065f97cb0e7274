"""The shipped default model on the shipped sample case, and checks on the real BraTS data when
../shared/data is beside the clone."""
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import SHARED_DATA
from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.modelfile import default_model_path, load_model, resources_dir

# The default model's Dice on the held-out sample was measured when it was trained (README);
# this floor, well below that figure, catches a broken or swapped model file.
DEMO_DICE_FLOOR = 0.5


def test_default_model_file_is_small_and_described():
    path = default_model_path()
    assert path.stat().st_size < 20e6
    model = load_model(path)
    assert model.modality == "t2"
    split = model.config["training"]["split"]
    assert "Brats18_TCIA02_370_1" in split["test"]
    assert "Brats18_TCIA02_370_1" not in split["train"] + split["val"]


@pytest.mark.slow
def test_demo_runs_on_the_bundled_case(tmp_path):
    r = subprocess.run([sys.executable, "-m", "smilecore.cli", "demo", "--out-dir", str(tmp_path), "--device", "cpu"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    stem = "Brats18_TCIA02_370_1_t2"
    sample = nib.load(resources_dir() / "sample" / f"{stem}.nii.gz")
    pn = nib.load(tmp_path / f"{stem}_pseudo_normal.nii.gz")
    assert pn.shape == sample.shape and np.allclose(pn.affine, sample.affine)
    assert (tmp_path / f"{stem}_overview.png").stat().st_size > 10_000
    dice = float(re.search(r"whole tumour\): ([0-9.]+)", r.stdout).group(1))
    assert dice > DEMO_DICE_FLOOR, r.stdout


def test_real_brats_case_is_cached_with_its_abnormal_slices(tmp_path):
    folder = SHARED_DATA / "brats"
    if not folder.is_dir():
        pytest.skip("../shared/data is not beside this clone")
    case = next(c for c in find_cases(folder) if c.case_id == "Brats18_TCIA02_370_1")
    cached = cache_case(case, tmp_path)
    seg = np.asarray(nib.load(case.seg).dataobj) > 0
    assert cached.image.shape[1:] == (240, 240)
    assert 100 < len(cached.z) <= 155
    assert int(cached.abnormal.sum()) == int(seg.any(axis=(0, 1))[cached.z].sum())
