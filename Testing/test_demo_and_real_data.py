"""The shipped default model on the shipped sample case, and checks on the real BraTS data when
../shared/data is beside the clone."""

import nibabel as nib
import numpy as np
import pytest

from conftest import SHARED_DATA
from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.modelfile import default_model_path, load_model

# `smile demo` itself is run by test_readme.py::test_demo, as the README gives it.


def test_default_model_file_is_small_and_described():
    path = default_model_path()
    assert path.stat().st_size < 20e6
    model = load_model(path)
    assert model.modality == "t2"
    split = model.config["training"]["split"]
    assert "Brats18_TCIA02_370_1" in split["test"]
    assert "Brats18_TCIA02_370_1" not in split["train"] + split["val"]


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
