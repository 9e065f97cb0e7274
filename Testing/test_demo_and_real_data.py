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
    """Five U-Nets of width 16 (G, S, R, S_flair, S_t2) and the fill network, all in float16: under
    24 MB. The bundled sample is its held-out test case, for every network that saw labels."""
    import torch

    from smilecore.networks import RECIPE_SEGMENTORS
    path = default_model_path()
    assert path.stat().st_size < 24e6
    model = load_model(path)
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for name in model.nets for v in stored[name].values() if v.is_floating_point())
    assert model.modality == "t2"
    split = model.config["training"]["split"]
    assert "Brats18_TCIA02_370_1" in split["test"]
    assert "Brats18_TCIA02_370_1" not in split["train"] + split["val"]
    for role in RECIPE_SEGMENTORS:
        assert set(model.recipe(role)["training"]["cases"]) <= set(split["train"]), role


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
