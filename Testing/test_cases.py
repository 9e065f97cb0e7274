import nibabel as nib
import numpy as np
import pytest

from smilecore.cases import canonical_modality, find_cases, split_cases


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)


def test_finds_every_brats_naming_scheme(tmp_path):
    _touch(tmp_path / "Brats18_2013_2_1" / "Brats18_2013_2_1_t2.nii.gz")
    _touch(tmp_path / "Brats18_2013_2_1" / "Brats18_2013_2_1_flair.nii.gz")
    _touch(tmp_path / "Brats18_2013_2_1" / "Brats18_2013_2_1_seg.nii.gz")
    _touch(tmp_path / "BraTS2021_00012" / "BraTS2021_00012_t2.nii.gz")
    _touch(tmp_path / "BraTS2021_00012" / "BraTS2021_00012_t1ce.nii.gz")
    _touch(tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2w.nii.gz")
    _touch(tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii")
    _touch(tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz")
    (tmp_path / "notes.txt").write_text("not a case")
    cases = {c.case_id: c for c in find_cases(tmp_path)}
    assert sorted(cases) == ["BraTS-GLI-00001-000", "BraTS2021_00012", "Brats18_2013_2_1"]
    assert cases["Brats18_2013_2_1"].labeled and cases["BraTS-GLI-00001-000"].labeled
    assert not cases["BraTS2021_00012"].labeled
    assert cases["BraTS-GLI-00001-000"].image("T2").name.endswith("-t2w.nii.gz")
    assert cases["BraTS-GLI-00001-000"].image("t1ce").name.endswith("-t1c.nii")
    assert cases["Brats18_2013_2_1"].image("t2f").name.endswith("_flair.nii.gz")
    with pytest.raises(FileNotFoundError, match="BraTS2021_00012: no flair image"):
        cases["BraTS2021_00012"].image("flair")


def test_real_2023_case_is_found_unlabelled():
    from conftest import SHARED_DATA
    folder = SHARED_DATA / "brats2023_unlabeled"
    if not folder.is_dir():
        pytest.skip("../shared/data is not beside this clone")
    (case,) = find_cases(folder)
    assert case.case_id == "BraTS-GLI-00001-000" and not case.labeled
    assert set(case.images) == {"t1", "t1ce", "t2", "flair"}


def test_modality_aliases():
    assert canonical_modality("T2w") == "t2" and canonical_modality("FLAIR") == "flair"
    assert canonical_modality("t1n") == "t1" and canonical_modality("t1c") == "t1ce"
    with pytest.raises(ValueError, match="unknown modality 'pd'"):
        canonical_modality("pd")


def _cases(tmp_path, n_labeled, n_unlabeled=0):
    for k in range(n_labeled + n_unlabeled):
        cid = f"Brats18_X_{k}"
        _touch(tmp_path / cid / f"{cid}_t2.nii.gz")
        if k < n_labeled:
            _touch(tmp_path / cid / f"{cid}_seg.nii.gz")
    return find_cases(tmp_path)


def test_split_is_by_case_seeded_and_removes_labels(tmp_path):
    cases = _cases(tmp_path, 20, 2)
    a = split_cases(cases, seed=3, labeled_fraction=0.5)
    b = split_cases(cases, seed=3, labeled_fraction=0.5)
    assert a.summary() == b.summary()
    ids = [c.case_id for part in (a.train, a.val, a.test) for c in part]
    assert len(ids) == len(set(ids)) == 22
    assert (len(a.train), len(a.val), len(a.test)) == (12, 8, 2)  # 10/8/2 of the labelled + 2 unlabelled
    # half of the 10 labelled training cases lose their label; both unlabelled cases train too
    assert len(a.unlabeled_train_ids) == 5 + 2
    assert split_cases(cases, seed=4).summary() != a.summary()


def test_split_refuses_a_fraction_that_keeps_no_label(tmp_path):
    with pytest.raises(ValueError, match="none of the 3 cases has a segmentation"):
        split_cases(_cases(tmp_path / "none", 0, 3), labeled_fraction=0.5)
    # labelled cases exist, but all of them are held out for val/test
    cases = _cases(tmp_path / "held", 2, 2)
    with pytest.raises(ValueError, match="keeps no labelled training case"):
        split_cases(cases, labeled_fraction=0.5, val_ids=("Brats18_X_0",), test_ids=("Brats18_X_1",))


def test_named_test_cases_are_held_out(tmp_path):
    cases = _cases(tmp_path, 6)
    s = split_cases(cases, test_ids=("Brats18_X_2",), fractions=(1, 0, 0))
    assert [c.case_id for c in s.test] == ["Brats18_X_2"] and not s.val and len(s.train) == 5
