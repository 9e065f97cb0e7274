"""Inputs as users bring them, not as BraTS ships them: noisy backgrounds, an intensity intercept,
heads that were not skull-stripped, clinical voxel sizes, masks of every kind (issue "Real-world
inputs"). The real-case tests degrade the bundled sample case (a real BraTS case that no network
saw) with smilecore.synthetic's helpers, the same ones scripts/real_world_inputs.py measures with."""
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import SHARED_DATA
from smilecore.metrics import dice
from smilecore.modalitycheck import T2_MIN, csf_brightness
from smilecore.modelfile import default_model_path, load_model, model_config, resources_dir, save_model
from smilecore.networks import build_networks
from smilecore.synthesis import model_spacing, resample_slices, synthesize, synthesize_file
from smilecore.synthetic import LPS, make_case, resample_case, with_noise, with_scalp
from smilecore.volume import CanonicalVolume, VolumeError, load_label, load_mask, load_nifti

SIZES = {n: {"base": 4, "depth": 3, "norm": "batch"} for n in "GSR"}
SLAB = 40  # slices around the sample's tumour: the real-case syntheses stay a few seconds each


@pytest.fixture(scope="module")
def sample():
    """The bundled sample case (1 mm, LPS): image, expert whole-tumour label, affine."""
    folder = resources_dir() / "sample"
    data, affine, _ = load_nifti(next(folder.glob("*_t2.nii.gz")))
    return data, load_label(next(folder.glob("*_seg.nii.gz")), data.shape, affine), affine


@pytest.fixture(scope="module")
def slab(sample):
    data, label, affine = sample
    z = int(np.nonzero(label.any(axis=(0, 1)))[0].mean())
    return data[:, :, z - SLAB // 2:z + SLAB // 2], label[:, :, z - SLAB // 2:z + SLAB // 2], affine


@pytest.fixture(scope="module")
def default_model():
    return load_model(default_model_path())


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "t2-model.pt"
    return load_model(save_model(path, build_networks(SIZES), model_config(SIZES, "t2")))


def _save(path, data, affine=LPS):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)
    return path


def _dice_of_S(model, data, label, affine, **kw):
    notes = []
    result = synthesize(data, affine, model, notify=notes.append, **kw)
    return dice(result.lesion_mask > 0, label > 0), notes


@pytest.fixture(scope="module")
def clean_slab_dice(default_model, slab):
    """(Dice, notes) of the default model on the slab as it is: the reference of the voxel-size and
    noise tests, synthesised once for both."""
    data, label, affine = slab
    return _dice_of_S(default_model, data, label, affine)


# ---- brain and background ---------------------------------------------------------------------
def test_on_skull_stripped_data_the_brain_is_the_papers(sample):
    data, _, affine = sample
    vol = CanonicalVolume.from_array(data, affine)
    assert vol.found.level == 0 and vol.found.noise == 0
    paper = vol.raw > 0
    assert not (paper & ~vol.brain).any() and (vol.brain & ~paper).sum() < 100   # a few filled holes
    assert vol.norm.scale == pytest.approx(np.percentile(vol.raw[vol.brain], 99.5), rel=1e-4)
    assert csf_brightness(vol.raw, vol.brain, vol.spacing) > T2_MIN      # and it reads as a T2 (modalitycheck)


def _shared_volume_checks(path: str) -> tuple:
    """(voxels > 0 outside the brain, brain voxels not > 0, the modality measure) of one volume."""
    data, affine, _ = load_nifti(path)
    vol = CanonicalVolume.from_array(data, affine, where=Path(path).parent.name)
    paper = vol.raw > 0
    return int((paper & ~vol.brain).sum()), int((vol.brain & ~paper).sum()), csf_brightness(vol.raw, vol.brain,
                                                                                             vol.spacing)


@pytest.mark.skipif(not (SHARED_DATA / "brats").is_dir(), reason="needs ../shared/data/brats (not in a user's clone)")
def test_every_shared_brats_case_is_accepted_with_the_papers_brain_and_its_modality_read():
    """No false refusal: 12 real skull-stripped cases, four modalities. The image's modality
    check (modalitycheck.py) on the same volumes: every T2 reads as T2, no T1 or T1ce does.
    The 48 volumes are shared among the CPUs (at most 2, the CI machine's): each is one core's
    work (a refusal is raised here as it was in the worker)."""
    paths = {(case.name, modality): str(case / f"{case.name}_{modality}.nii.gz")
             for case in sorted((SHARED_DATA / "brats").iterdir()) for modality in ("t2", "flair", "t1", "t1ce")}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with ProcessPoolExecutor(min(2, cpus), mp_context=multiprocessing.get_context("spawn")) as pool:
        results = dict(zip(paths, pool.map(_shared_volume_checks, paths.values())))
    for (case, modality), (stray, filled, value) in results.items():
        # a stray voxel or two apart from the brain, a few filled holes
        assert stray < 100 and filled < 2500, (case, modality)
        if modality != "flair":  # FLAIR's CSF is dark too, but its bright lesions may stretch either side
            assert (value >= T2_MIN) == (modality == "t2"), (case, modality, value)


def test_a_noisy_background_or_an_intercept_finds_the_same_brain(sample):
    data, _, affine = sample
    clean = CanonicalVolume.from_array(data, affine)
    shifted = CanonicalVolume.from_array(data + 1, affine)            # scl_inter = +1
    assert shifted.found.level == 1 and np.array_equal(shifted.brain, clean.brain)
    assert np.allclose(shifted.image, clean.image, atol=1e-6)
    for everywhere in (False, True):                                   # SD 2 % of V99.5
        noisy = CanonicalVolume.from_array(with_noise(data, everywhere=everywhere), affine)
        assert noisy.found.noise > 0
        assert dice(noisy.brain, clean.brain) > 0.99
        assert not (noisy.brain & ~clean.brain).any()                 # no background counted as brain
        assert np.all(noisy.image[~noisy.brain] == 0)                 # the networks see no noise outside


@pytest.mark.parametrize("head", ["scalp beyond a skull", "joined at the neck", "larger than a brain"])
def test_a_head_that_was_not_skull_stripped_is_refused_naming_the_fix(sample, head, tmp_path):
    data, _, affine = sample
    image = {"scalp beyond a skull": lambda: with_scalp(data),
             "joined at the neck": lambda: with_scalp(data, joined_slices=25),
             "larger than a brain": lambda: np.where(ndimage.binary_dilation(data > 0, iterations=20), 300.0,
                                                     0) + data}[head]()
    path = _save(tmp_path / "head_t2.nii.gz", image.astype(np.float32), affine)
    with pytest.raises(VolumeError, match="head_t2.nii.gz: .*not to be skull-stripped.*HD Brain Extraction.*"
                                          "--brain-mask"):
        CanonicalVolume.from_array(image, affine, where=f"image {path}")


@pytest.mark.slow
def test_the_cli_refuses_a_head_and_works_with_its_brain_mask(slab, tmp_path, capsys):
    from smilecore.cli import main
    data, label, affine = slab
    image = _save(tmp_path / "head_t2.nii.gz", with_scalp(data), affine)
    brain = _save(tmp_path / "brain.nii.gz", (data > 0).astype(np.uint8), affine)
    run = ["synthesize", str(image), "--out-dir", str(tmp_path / "out")]
    # the refusal from the command's code in this process (test_bad_inputs runs refusals in `smile` processes)
    assert main(run) == 1 and not list(tmp_path.glob("out/*.nii.gz"))
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert line.startswith("smile synthesize: error: image ") and "head_t2.nii.gz" in line and "skull" in line
    done = subprocess.run([sys.executable, "-m", "smilecore.cli", *run, "--brain-mask", str(brain)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    pn = nib.load(out / "head_t2_pseudo_normal.nii.gz").get_fdata()
    lesion = nib.load(out / "head_t2_lesion_mask.nii.gz").get_fdata() > 0
    scalp = data <= 0
    assert np.array_equal(pn[scalp], with_scalp(data)[scalp])        # the scalp is left as it was
    assert not lesion[scalp].any() and dice(lesion, label) > 0.8


# ---- voxel size ---------------------------------------------------------------------------------
def test_models_record_their_spacing_and_older_files_mean_1_mm(trained_run, tiny_model):
    from smilecore.train import MODEL_NAME
    assert load_model(trained_run / MODEL_NAME).config["spacing_mm"] == [1.0, 1.0, 1.0]
    legacy = dict(tiny_model.config)
    legacy.pop("spacing_mm")
    assert model_spacing(type(tiny_model)(tiny_model.nets, legacy)) == (1.0, 1.0, 1.0)


def test_resampling_slices_keeps_structures_in_place():
    x, y = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    image = np.stack([np.exp(-((x - 22.5) ** 2 + (y - 11.5) ** 2) / 30.0)] * 3, axis=2).astype(np.float32)
    fine = resample_slices(image, (80, 60))                              # to 0.5 mm
    centre = np.unravel_index(np.argmax(fine[:, :, 1]), (80, 60))
    assert abs((centre[0] + 0.5) / 2 - 23.0) <= 0.5 and abs((centre[1] + 0.5) / 2 - 12.0) <= 0.5
    assert np.abs(resample_slices(fine, (40, 30)) - image).max() < 0.03  # and back (antialiasing blurs a little)


@pytest.mark.slow
def test_clinical_voxel_sizes_keep_the_dice_of_the_1_mm_case(default_model, slab, clean_slab_dice):
    """The issue's bar: 0.5 x 0.5 x 1 mm within 0.03 of 1 mm; 0.5 x 0.5 x 5 mm within 0.03 of
    1 x 1 x 5 mm (Dice of S against the expert label at each resolution)."""
    data, label, affine = slab
    scores = {}
    image, lab, aff = resample_case(data, label, affine, 1.0, 1)
    assert np.array_equal(image, data) and np.array_equal(lab, label > 0) and np.allclose(aff, affine)
    scores[1.0, 1] = clean_slab_dice[0]                                  # 1 mm: the slab itself
    for in_plane, thick in ((1.0, 1), (0.5, 1), (1.0, 5), (0.5, 5)):
        image, lab, aff = resample_case(data, label, affine, in_plane, thick)
        if (in_plane, thick) == (1.0, 1):
            notes = clean_slab_dice[1]
        else:
            scores[in_plane, thick], notes = _dice_of_S(default_model, image, lab, aff)
        assert any("resampled to the model's 1.00 x 1.00 mm" in n for n in notes) == (in_plane != 1.0)
        assert any("5.0 mm thick" in n for n in notes) == (thick == 5)
    assert scores[1.0, 1] > 0.8
    assert abs(scores[0.5, 1] - scores[1.0, 1]) <= 0.03, scores
    assert abs(scores[0.5, 5] - scores[1.0, 5]) <= 0.03, scores


@pytest.mark.slow
def test_a_noisy_background_keeps_the_dice_of_the_clean_case(default_model, slab, clean_slab_dice):
    data, label, affine = slab
    clean = clean_slab_dice[0]
    noisy, _ = _dice_of_S(default_model, with_noise(data), label, affine)
    shifted, _ = _dice_of_S(default_model, data + 1, label, affine)
    assert abs(noisy - clean) <= 0.03 and abs(shifted - clean) <= 0.005, (clean, noisy, shifted)


# ---- lesion masks -------------------------------------------------------------------------------
def _case(shape=(32, 32, 12)):
    image, _, label = make_case(np.random.default_rng(3), shape, n_lesions=1)
    return image.astype(np.float32), label > 0


def test_a_probability_mask_counts_from_one_half(tmp_path):
    image, label = _case()
    prob = ndimage.gaussian_filter(label.astype(np.float32), 1.5)
    path = _save(tmp_path / "prob.nii.gz", prob)
    assert np.array_equal(load_mask(path, image.shape, LPS), prob >= 0.5)
    assert (prob > 0).sum() > 1.5 * (prob >= 0.5).sum()                  # "> 0" would be far larger


def test_a_mask_on_the_same_grid_in_another_voxel_order_or_5_um_off_is_accepted(tmp_path):
    image, label = _case()
    ras = np.diag([1.0, 1.0, 1.0, 1.0])
    ras[:3, 3] = [-(image.shape[0] - 1), -(image.shape[1] - 1), 0]       # the same voxel centres as LPS
    flipped = _save(tmp_path / "ras.nii.gz", label[::-1, ::-1].astype(np.uint8), ras)
    assert np.array_equal(load_mask(flipped, image.shape, LPS), label)
    nudged = LPS.copy()
    nudged[:3, 3] += 0.005
    assert np.array_equal(load_mask(_save(tmp_path / "nudged.nii.gz", label.astype(np.uint8), nudged),
                                    image.shape, LPS), label)
    moved = LPS.copy()
    moved[:3, 3] += 0.5
    with pytest.raises(VolumeError, match="moved.nii.gz: not on the grid of the image .*0.5 mm apart"):
        load_mask(_save(tmp_path / "moved.nii.gz", label.astype(np.uint8), moved), image.shape, LPS)


@pytest.mark.parametrize("kind, message", [
    ("another image", ".*distinct values .* is this an image rather than a mask"),
    ("negative values", "has negative values"),
])
def test_an_image_given_as_a_mask_is_refused(kind, message, tmp_path):
    image, label = _case()
    other = {"another image": lambda: _case((32, 32, 12))[0] * 3 + 7,
             "negative values": lambda: label.astype(np.float32) - 0.5}[kind]()
    with pytest.raises(VolumeError, match=f"mask .*m.nii.gz: {message}"):
        load_mask(_save(tmp_path / "m.nii.gz", other), image.shape, LPS, what="mask")


@pytest.mark.parametrize("kind, message", [
    ("the whole brain", "covers 100 % of the brain .*is it a brain mask"),
    ("outside the brain", "lie outside the brain: the mask does not belong to this image"),
])
def test_a_mask_that_is_no_lesion_is_refused_before_any_output(tiny_model, kind, message, tmp_path):
    image, label = _case()
    brain = image > 0
    mask = {"the whole brain": brain, "outside the brain": ~brain | label}[kind]
    img = _save(tmp_path / "case_t2.nii.gz", image)
    m = _save(tmp_path / "m.nii.gz", mask.astype(np.uint8))
    with pytest.raises(VolumeError, match=message):
        synthesize_file(img, tmp_path / "out", tiny_model, mask_path=m)
    assert not list(tmp_path.glob("out/*.nii.gz"))


def test_mask_voxels_outside_the_brain_are_ignored_with_a_note(tiny_model):
    image, label = _case()
    mask = label.copy()
    mask[0, 0, :3] = True                                               # three voxels in the background
    notes = []
    result = synthesize(image, LPS, tiny_model, mask, notify=notes.append)
    assert any("3 of the lesion mask's" in n and "outside the brain" in n for n in notes)
    assert np.array_equal(result.pseudo_normal[~(image > 0)], image[~(image > 0)])
