"""Every bad input of docs/BAD_INPUTS.md: a clear error naming the file and the problem (a
non-zero exit in the CLI), and nothing written before damaged. Also out-of-memory handling and
a NaN loss, simulated on the CPU."""
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import smilecore.losses
from conftest import SIZES, tiny_config
from smilecore import synthesis, synthesis_placement
from smilecore.cases import find_cases
from smilecore.cli import main as cli_main
from smilecore.dataset import cache_case
from smilecore.events import PHASE_NAMES
from smilecore.modelfile import ModelFileError, load_model, model_config, save_model
from smilecore.networks import build_networks
from smilecore.synthesis import ModalityMismatch, SynthesisWarning, synthesize, synthesize_file
from smilecore.synthetic import LPS, make_case, write_cohort
from smilecore.train import CHECKPOINT_NAME, MODEL_NAME, Trainer
from smilecore.volume import VolumeError, load_label, load_nifti

ROOT = Path(__file__).resolve().parents[1]


# ---- helpers --------------------------------------------------------------------------------


@pytest.fixture()
def model(model_path):
    return load_model(model_path)


def _brain(shape=(24, 24, 8), seed=0):
    image, _, label = make_case(np.random.default_rng(seed), shape, n_lesions=1)
    return image.astype(np.float32), label


def _save(path, data, affine=LPS):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)
    return path


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "smilecore.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


# ---- image files --------------------------------------------------------------------------
def _not_nifti(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def _text(path):
    path.write_text("patient notes, not an image")


def _truncated_gz(path):
    data, _ = _brain()
    _save(path, data)
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])


def _image_2d(path):
    _save(path, np.ones((16, 16), np.float32))


def _image_4d(path):
    _save(path, np.ones((8, 8, 8, 3), np.float32))


def _nan_inf(path):
    data, _ = _brain()
    data[3, 4, 2], data[5, 5, 5] = np.nan, np.inf
    _save(path, data)


def _too_large_for_float32(path):
    data, _ = _brain()
    _save(path, data.astype(np.float64) * 1e300)


def _complex(path):
    data, _ = _brain()
    _save(path, (data + 1j).astype(np.complex64))


def _all_zero(path):
    _save(path, np.zeros((16, 16, 8), np.int16))


def _all_negative(path):
    _save(path, np.full((16, 16, 8), -3, np.int16))


def _constant(path):
    _save(path, np.full((16, 16, 8), 7, np.int16))


def _degenerate_affine(path):
    """A damaged header: the sform's third row is zero (nibabel will not write such an affine
    from a matrix, so the header fields are set directly)."""
    data, _ = _brain()
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header["sform_code"], header["qform_code"] = 1, 0
    header["srow_x"], header["srow_y"], header["srow_z"] = [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 0]
    nib.save(nib.Nifti1Image(data, None, header), path)


BAD_IMAGES = {
    "not NIfTI (PNG bytes)": (_not_nifti, "cannot be read as NIfTI"),
    "not NIfTI (text)": (_text, "cannot be read as NIfTI"),
    "truncated .nii.gz": (_truncated_gz, "cannot be read as NIfTI"),
    "2D image": (_image_2d, "expected a 3D volume, got shape \\(16, 16\\)"),
    "4D image": (_image_4d, "expected a 3D volume, got shape \\(8, 8, 8, 3\\) \\(a 4D series"),
    "NaN and Inf voxels": (_nan_inf, "contains 1 NaN voxel and 1 infinite voxel"),
    "values beyond float32": (_too_large_for_float32, "beyond the float32 range"),
    "complex voxels": (_complex, "complex-valued"),
    "all-zero volume": (_all_zero, "no brain voxels"),
    "all-negative volume": (_all_negative, "no brain voxels"),
    "constant volume": (_constant, "every brain voxel .* has the same value 7"),
    "degenerate affine": (_degenerate_affine, "affine .* is degenerate"),
}


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_image_files_are_refused_naming_the_file(kind, model, tmp_path):
    """Through the synthesis entry point (what `smile synthesize` runs): a VolumeError naming
    the file and the problem; an earlier output in the output folder is left as it was."""
    write, message = BAD_IMAGES[kind]
    path = tmp_path / "in" / "case_t2.nii.gz"
    path.parent.mkdir()
    write(path)
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "case_t2_pseudo_normal.nii.gz"
    earlier.write_bytes(b"an earlier result")
    with pytest.raises(VolumeError, match=message) as err:
        synthesize_file(path, out, model)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in out.iterdir()) == [earlier.name]
    assert earlier.read_bytes() == b"an earlier result"


@pytest.mark.parametrize("kind", ["truncated .nii.gz", "4D image", "NaN and Inf voxels", "constant volume"])
def test_bad_image_files_are_refused_in_training_preprocessing(kind, tmp_path):
    """The same files inside a dataset: the slice cache refuses them naming the file."""
    write, message = BAD_IMAGES[kind]
    path = tmp_path / "data" / "Case_1" / "Case_1_t2.nii.gz"
    path.parent.mkdir(parents=True)
    write(path)
    (case,) = find_cases(tmp_path / "data")
    with pytest.raises(VolumeError, match=message) as err:
        cache_case(case, tmp_path / "cache")
    assert str(path) in str(err.value)
    assert not list((tmp_path / "cache").glob("*"))   # no half-built cache entry


def test_truncated_uncompressed_nii_and_a_folder_are_refused(tmp_path):
    data, _ = _brain()
    path = _save(tmp_path / "case_t2.nii", data)
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(VolumeError, match="case_t2.nii: cannot be read as NIfTI .*damaged"):
        load_nifti(path)
    with pytest.raises(VolumeError, match="is a folder"):
        load_nifti(tmp_path)


def test_a_4d_image_with_one_volume_is_accepted(tmp_path):
    data, _ = _brain()
    loaded, _, _ = load_nifti(_save(tmp_path / "one_t2.nii.gz", data[..., None]))
    assert loaded.shape == data.shape


# ---- segmentations ------------------------------------------------------------------------
def test_image_and_segmentation_of_different_shape_or_affine(tmp_path):
    data, label = _brain()
    shifted = LPS.copy()
    shifted[:3, 3] = [2.0, 0, 0]
    seg = _save(tmp_path / "off_seg.nii.gz", label, shifted)
    with pytest.raises(VolumeError, match="off_seg.nii.gz: its affine differs from its image's"):
        load_label(seg, data.shape, LPS)
    small = _save(tmp_path / "small_seg.nii.gz", label[:-1])
    with pytest.raises(VolumeError, match=r"small_seg.nii.gz: shape \(23, 24, 8\) differs"):
        load_label(small, data.shape, LPS)
    # inside a dataset: the slice cache names the segmentation
    case_dir = tmp_path / "data" / "Case_1"
    _save(case_dir / "Case_1_t2.nii.gz", data)
    shutil.copy(seg, case_dir / "Case_1_seg.nii.gz")
    (case,) = find_cases(tmp_path / "data")
    with pytest.raises(VolumeError, match="Case_1_seg.nii.gz: its affine differs"):
        cache_case(case, tmp_path / "cache")


def test_a_lesion_mask_off_the_image_grid_is_refused(model, tmp_path):
    data, label = _brain()
    image = _save(tmp_path / "case_t2.nii.gz", data)
    shifted = LPS.copy()
    shifted[:3, 3] = [0, 3.0, 0]
    mask = _save(tmp_path / "mask.nii.gz", label, shifted)
    with pytest.raises(VolumeError, match="mask .*mask.nii.gz: not on the grid of"):
        synthesize_file(image, tmp_path / "out", model, mask_path=mask)


@pytest.mark.parametrize("values", [[0, 1, 5], [0, -1, 2], [0, 1.5, 4]])
def test_label_values_outside_brats_are_refused(values, tmp_path):
    label = np.zeros((8, 8, 8), np.float32)
    label[2:4, 2:4, 2:4], label[5:7, 5:7, 5:7] = values[1], values[2]
    seg = _save(tmp_path / "x_seg.nii.gz", label)
    with pytest.raises(VolumeError, match="x_seg.nii.gz: label values .* are not BraTS labels"):
        load_label(seg, (8, 8, 8), LPS)


# ---- data folders -------------------------------------------------------------------------
@pytest.fixture()
def small_cohort(tmp_path):
    return write_cohort(tmp_path / "data", n_cases=4, seed=2, shape=(24, 24, 8))


def test_a_case_missing_the_chosen_modality_is_named(small_cohort, tmp_path):
    (small_cohort / "Synth_001" / "Synth_001_t2.nii.gz").unlink()        # the case keeps only its seg
    shutil.copy(small_cohort / "Synth_002" / "Synth_002_t2.nii.gz",     # this one has flair, not t2
                small_cohort / "Synth_002" / "Synth_002_flair.nii.gz")
    (small_cohort / "Synth_002" / "Synth_002_t2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="cases without a t2 image: Synth_001, Synth_002"):
        Trainer(tiny_config(small_cohort, tmp_path / "run")).run()
    case = {c.case_id: c for c in find_cases(small_cohort)}["Synth_002"]
    with pytest.raises(FileNotFoundError, match="Synth_002: no t2 image .*found modalities: flair"):
        case.image("t2")


def test_an_empty_or_missing_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="empty: no BraTS cases found"):
        Trainer(tiny_config(tmp_path / "empty", tmp_path / "run")).run()
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        Trainer(tiny_config(tmp_path / "nowhere", tmp_path / "run")).run()


def test_a_labelled_fraction_with_no_labelled_case(tmp_path):
    data = write_cohort(tmp_path / "data", n_cases=3, seed=2, shape=(24, 24, 8), unlabeled=3)
    with pytest.raises(ValueError, match="labeled fraction 0.5: none of the 3 cases has a segmentation"):
        Trainer(tiny_config(data, tmp_path / "run")).run()


# ---- geometry -----------------------------------------------------------------------------
def test_a_volume_smaller_than_the_network_multiple_is_padded_and_works(model):
    """Slices of 5 x 6 pixels for U-Nets with 3 down-samplings (a multiple of 8): the U-Net
    zero-pads each slice to 8 x 8 and crops its output back."""
    assert model.nets["G"].unet.multiple == 8
    data = np.random.default_rng(0).uniform(10, 100, (5, 6, 3)).astype(np.float32)
    result = synthesize(data, LPS, model)
    for name, array in result.arrays().items():
        assert array.shape == data.shape and np.isfinite(array).all(), name
    assert not result.notes


def _rotation_x(degrees):
    a = np.radians(degrees)
    r = np.eye(4)
    r[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return r


def test_an_oblique_acquisition_works_and_a_strong_tilt_is_reported(model):
    """An oblique volume is processed along the voxel axis nearest to axial, without
    resampling: the result equals that of the same voxels with the nearest axial affine.
    Above 25 degrees the user is told that the slices are tilted."""
    data, _ = _brain()
    straight = synthesize(data, LPS, model)
    mild = synthesize(data, _rotation_x(15) @ LPS, model)
    assert not mild.notes
    assert np.array_equal(mild.pseudo_normal, straight.pseudo_normal)
    with pytest.warns(SynthesisWarning, match="40 degrees oblique"):
        strong = synthesize(data, _rotation_x(40) @ LPS, model)
    assert np.array_equal(strong.pseudo_normal, straight.pseudo_normal)
    told = []
    synthesize(data, _rotation_x(40) @ LPS, model, notify=told.append)
    assert len(told) == 1 and "resample the image to axial" in told[0]


def test_a_sagittally_stored_acquisition_gives_the_axial_result(model):
    """Voxel axes stored as (S, L, P), as a sagittal acquisition might be: the same result."""
    data, _ = _brain()
    ref = synthesize(data, LPS, model)
    stored = np.ascontiguousarray(np.transpose(data, (2, 0, 1)))
    result = synthesize(stored, LPS[:, [2, 0, 1, 3]], model)
    assert np.allclose(np.transpose(result.pseudo_normal, (1, 2, 0)), ref.pseudo_normal, atol=1e-5)


# ---- model files --------------------------------------------------------------------------
def test_a_model_of_another_modality_is_refused(model, model_path, tmp_path):
    data, _ = _brain()
    flair = _save(tmp_path / "Brats18_X_flair.nii.gz", data)
    out = tmp_path / "out"
    with pytest.raises(ModalityMismatch, match="Brats18_X_flair.nii.gz is flair .*from its name.* but model "
                                               "file .*t2-model.pt was trained on t2") as err:
        synthesize_file(flair, out, model)
    assert "--modality t2" in str(err.value)
    assert not out.exists()                                           # refused before any work
    # the user states the modality: it overrides the name, both ways
    written = synthesize_file(flair, out, model, modality="T2", overview=False)
    assert written["pseudo_normal"].is_file()
    plain = _save(tmp_path / "scan.nii.gz", data)
    with pytest.raises(ModalityMismatch, match="is t1ce \\(stated\\)"):
        synthesize_file(plain, tmp_path / "o2", model, modality="t1c")
    with pytest.raises(ModalityMismatch):
        synthesize(data, LPS, model, modality="flair")
    # no modality in the name and none stated: the model's is assumed
    assert synthesize_file(plain, tmp_path / "o3", model, overview=False)


def test_a_model_with_nan_weights_is_refused(tmp_path):
    nets = build_networks(SIZES)
    with torch.no_grad():
        nets["S"].unet.head.weight[0, 0, 0, 0] = float("nan")
    path = save_model(tmp_path / "diverged.pt", nets, model_config(SIZES, "t2"))
    with pytest.raises(ModelFileError, match="diverged.pt: weights hold NaN or infinite values .*S.unet.head.weight"):
        load_model(path)


# ---- output folder and full disk ------------------------------------------------------------
def test_an_output_folder_that_cannot_be_written(model, tmp_path, monkeypatch):
    data, _ = _brain()
    image = _save(tmp_path / "case_t2.nii.gz", data)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    ran = []
    monkeypatch.setattr(synthesis, "synthesize", lambda *a, **k: ran.append(1))
    with pytest.raises(OSError, match="output folder .*a_file/out cannot be written"):
        synthesize_file(image, blocker / "out", model)
    # a folder without write permission (root may write anyway: then simulate the refusal)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            def refuse(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied")
            monkeypatch.setattr(synthesis.tempfile, "NamedTemporaryFile", refuse)
        with pytest.raises(OSError, match="output folder .*locked cannot be written \\(Permission denied\\)"):
            synthesize_file(image, locked, model)
    finally:
        locked.chmod(0o700)
    assert not ran                                                    # refused before any work


def _disk_full_after(n_ok, real_save, kind="nib"):
    """A save function that works `n_ok` times, then writes half a file and fails with ENOSPC."""
    calls = []

    def save(obj, path, *args, **kwargs):
        calls.append(str(path))
        if len(calls) <= n_ok:
            return real_save(obj, path, *args, **kwargs)
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    return save, calls


def test_disk_full_while_writing_outputs_keeps_the_earlier_outputs(model, tmp_path, monkeypatch):
    data, _ = _brain()
    image = _save(tmp_path / "case_t2.nii.gz", data)
    out = tmp_path / "out"
    first = synthesize_file(image, out, model)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) == 6
    save, calls = _disk_full_after(2, nib.save)
    monkeypatch.setattr(nib, "save", save)
    with pytest.raises(OSError, match="writing NIfTI file .*case_t2_\\w+.nii.gz failed "
                                      "\\(No space left on device\\)") as err:
        synthesize_file(image, out, model, mask_path=None, batch_size=2)
    assert err.value.errno == errno.ENOSPC
    named = str(err.value).split("writing NIfTI file ")[1].split(" failed")[0]   # the third output written
    assert Path(calls[2]).name.startswith("." + Path(named).name), (named, calls)
    # outputs appear together: none was replaced, every earlier file is whole, no temp file left
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(calls) == 3 and all(Path(c).name.startswith(".") for c in calls)
    assert nib.load(first["pseudo_normal"]).shape == data.shape


def test_disk_full_while_writing_a_checkpoint_keeps_the_last_one(cohort, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(cohort, out, epochs=1, steps_per_epoch=10, checkpoint_every=5))
    save, calls = _disk_full_after(1, torch.save)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="checkpoint.pt failed \\(No space left on device\\); nothing was written"):
        trainer.run()
    monkeypatch.undo()
    assert len(calls) == 2
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [CHECKPOINT_NAME, "events.jsonl", "split.json"]
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert state["position"]["global_step"] == 5                       # the one written before
    fresh = Trainer(tiny_config(cohort, out, epochs=1, steps_per_epoch=10, checkpoint_every=5))
    fresh.load_checkpoint(out / CHECKPOINT_NAME)
    assert fresh.position["global_step"] == 5


def test_disk_full_while_writing_a_model_file_keeps_the_earlier_one(tmp_path, monkeypatch):
    path = save_model(tmp_path / MODEL_NAME, build_networks(SIZES), model_config(SIZES, "t2"))
    before = path.read_bytes()
    save, _ = _disk_full_after(0, torch.save)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="smile-model.pt failed \\(No space left on device\\)"):
        save_model(path, build_networks(SIZES), model_config(SIZES, "t2"))
    monkeypatch.undo()
    assert path.read_bytes() == before and load_model(path)
    assert [p.name for p in tmp_path.iterdir()] == [MODEL_NAME]


# ---- training failures ----------------------------------------------------------------------
def test_a_nan_loss_stops_training_naming_the_term_and_keeps_the_last_checkpoint(cohort, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(cohort, out, checkpoint_every=5))
    real = smilecore.losses.L_mse

    def L_mse(a, b):  # G's identity term turns NaN from the 8th step on
        value = real(a, b)
        return value * float("nan") if trainer.position["global_step"] >= 7 else value
    monkeypatch.setattr(smilecore.losses, "L_mse", L_mse)
    with pytest.raises(FloatingPointError) as err:
        trainer.run()
    message = str(err.value)
    assert "gen_identity = nan" in message and "update of G" in message
    assert f"phase 1 ({PHASE_NAMES[1]})" in message
    assert "epoch 1, step 8 (global step 8)" in message
    assert f"the last good checkpoint, {out / CHECKPOINT_NAME} (global step 5), is kept" in message
    assert "lower --lr" in message
    monkeypatch.undo()
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert state["position"]["global_step"] == 5
    for net in state["nets"].values():
        assert all(torch.isfinite(v).all() for v in net.values() if v.is_floating_point())
    resumed = Trainer(tiny_config(cohort, out, checkpoint_every=5))
    resumed.load_checkpoint(out / CHECKPOINT_NAME)                   # loadable and intact
    assert resumed.position == {"phase_index": 0, "epoch": 0, "step": 5, "global_step": 5}
    assert not (out / MODEL_NAME).exists()


def test_a_nan_loss_before_any_checkpoint_says_so(cohort, tmp_path, monkeypatch):
    monkeypatch.setattr(smilecore.losses, "L_ce", lambda *a: torch.tensor(float("inf")))
    with pytest.raises(FloatingPointError, match="seg_pn = inf.*update of S.*no checkpoint had been written yet"):
        Trainer(tiny_config(cohort, tmp_path / "run")).run()


def _oom_above(net, limit, monkeypatch, log=None):
    """Make `net` raise CUDA's out-of-memory error for batches larger than `limit`."""
    forward = net.forward

    def guarded(*args):
        if log is not None:
            log.append(len(args[0]))
        if len(args[0]) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return forward(*args)
    monkeypatch.setattr(net, "forward", guarded)


def test_out_of_memory_in_synthesis_halves_the_batch_with_the_same_result(model, monkeypatch):
    data, _ = _brain((24, 24, 12))
    normal = synthesize(data, LPS, model, batch_size=8)
    sizes = []
    _oom_above(model.nets["G"], 3, monkeypatch, sizes)
    told = []
    result = synthesize(data, LPS, model, batch_size=8, notify=told.append)
    assert sizes[:3] == [8, 4, 2] and max(sizes[2:]) == 2                # halved until it fits, then kept
    assert len(told) == 2 and "retrying with 2 slices per batch" in told[-1] and "simulated" in told[0]
    assert result.notes == told
    for name, array in normal.arrays().items():
        assert np.allclose(getattr(result, name), array, atol=1e-5), name


def test_out_of_memory_for_one_slice_on_a_gpu_falls_back_to_the_cpu(model, monkeypatch):
    """Simulated: the 'GPU' runs out of memory for any batch; after halving to one slice the
    model moves to the CPU, finishes there, and is moved back afterwards."""
    data, _ = _brain((24, 24, 12))
    normal = synthesize(data, LPS, model, batch_size=4, precision="fp32")   # both runs alike on a bf16 CPU
    state = {"gpu": True}
    moves = []

    def move(m, device):
        moves.append(str(device))
        state["gpu"] = len(moves) > 1       # the first move is the fallback, the second the return
    monkeypatch.setattr(synthesis_placement, "_is_accelerator", lambda device: state["gpu"])
    monkeypatch.setattr(synthesis_placement, "_move", move)
    forward = model.nets["S"].forward

    def on_gpu(x):
        if state["gpu"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(x)
    monkeypatch.setattr(model.nets["S"], "forward", on_gpu)
    told = []
    result = synthesize(data, LPS, model, batch_size=4, notify=told.append, precision="fp32")
    assert moves == ["cpu", "cpu"]                                     # to the CPU, then back home
    assert "continuing on the CPU" in told[-1] and len(told) == 3      # 4 -> 2 -> 1 -> CPU
    for name, array in normal.arrays().items():
        assert np.allclose(getattr(result, name), array, atol=1e-5), name


def test_when_moving_the_model_back_runs_out_of_memory_it_stays_whole_on_the_cpu(model, monkeypatch):
    """Seen on a real GPU: moving the networks back one by one can run out of memory half-way;
    the model must then be wholly on the CPU, not split over two devices."""
    data, _ = _brain()
    state = {"gpu": True}
    moves = []

    def move(m, device):
        moves.append(str(device))
        if len(moves) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        state["gpu"] = False
    monkeypatch.setattr(synthesis_placement, "_is_accelerator", lambda device: state["gpu"])
    monkeypatch.setattr(synthesis_placement, "_move", move)
    _oom_above(model.nets["G"], 0, monkeypatch)
    forward = model.nets["G"].forward
    monkeypatch.setattr(model.nets["G"], "forward", lambda x: forward(x) if state["gpu"] else
                        type(model.nets["G"]).forward(model.nets["G"], x))
    told = []
    result = synthesize(data, LPS, model, batch_size=1, notify=told.append)
    assert moves == ["cpu", "cpu", "cpu"]           # to the CPU, back home (fails), wholly to the CPU
    assert "the model stays on the CPU" in told[-1] and np.isfinite(result.pseudo_normal).all()


def test_out_of_memory_for_one_slice_on_the_cpu_is_a_clear_error(model, monkeypatch):
    data, _ = _brain()
    _oom_above(model.nets["R"], 0, monkeypatch)
    with pytest.raises(RuntimeError, match="volume: out of memory on cpu even for one slice of 24 x 24 pixels"):
        synthesize(data, LPS, model, batch_size=2, notify=lambda m: None)


def test_out_of_memory_in_training_names_a_batch_size_that_fits(cohort, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(cohort, tmp_path / "run", batch_size=8))
    _oom_above(trainer.nets["G"], 2, monkeypatch)
    with pytest.raises(torch.cuda.OutOfMemoryError) as err:
        trainer.run()
    message = str(err.value)
    assert "out of GPU memory in training at phase 1, epoch 1, step 1, with batch size 8" in message
    assert "batch size 2 fits a trial of the largest phase: start the run again with --batch-size 2" in message
    _oom_above(trainer.nets["G"], 0, monkeypatch)
    with pytest.raises(torch.cuda.OutOfMemoryError, match="even one slice does not fit: .*--crop"):
        Trainer.run(trainer)


# ---- the command line ---------------------------------------------------------------------
def test_cli_bad_inputs_exit_non_zero_naming_the_file(model_path, tmp_path, capsys):
    """The first through a real `smile` process (exit status, stderr, no traceback); the rest
    through the same main() in process (a process start with torch costs seconds each)."""
    data, _ = _brain()
    text = tmp_path / "notes_t2.nii.gz"
    _text(text)
    four_d = tmp_path / "series_t2.nii.gz"
    _image_4d(four_d)
    flair = _save(tmp_path / "Brats18_X_flair.nii.gz", data)
    good = _save(tmp_path / "good_t2.nii.gz", data)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "empty").mkdir()
    runs = {
        "not NIfTI": (["synthesize", text, "--model", model_path, "--out-dir", tmp_path / "o"],
                      ["notes_t2.nii.gz: cannot be read as NIfTI"]),
        "4D": (["synthesize", four_d, "--model", model_path, "--out-dir", tmp_path / "o"],
               ["series_t2.nii.gz: expected a 3D volume"]),
        "other modality": (["synthesize", flair, "--model", model_path, "--out-dir", tmp_path / "o"],
                           ["Brats18_X_flair.nii.gz is flair", "t2-model.pt was trained on t2"]),
        "unwritable output": (["synthesize", good, "--model", model_path, "--out-dir", blocker / "o"],
                              ["output folder", "a_file/o cannot be written"]),
        "empty data folder": (["train", tmp_path / "empty", "--out", tmp_path / "run", "--quiet"],
                              ["empty: no BraTS cases found"]),
    }
    for k, (name, (args, expected)) in enumerate(runs.items()):
        if k == 0:
            r = _run_cli(*args)
            returncode, stderr = r.returncode, r.stderr
        else:
            returncode, stderr = cli_main([str(a) for a in args]), capsys.readouterr().err
        assert returncode == 1, (name, stderr)
        assert all(e in stderr for e in expected), (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)
    assert not (tmp_path / "o").exists()


def test_cli_train_failures_exit_non_zero_in_process(cohort, tmp_path, monkeypatch, capsys):
    """Through `smile train`'s own main() (in process, so that the failure can be simulated):
    a NaN loss and a full disk end with exit status 1 and the message."""
    args = ["train", str(cohort), "--out", str(tmp_path / "run"), "--quiet", "--labeled-fraction", "0.5",
            "--split", "0.6,0.2,0.2", "--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "2",
            "--base", "4", "--depth", "2", "--checkpoint-every", "2"]
    monkeypatch.setattr(smilecore.losses, "L_ce", lambda *a: torch.tensor(float("nan")))
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "smile train: error: loss term(s) " in err and "seg_pn = nan" in err and "update of S" in err
    monkeypatch.undo()
    save, _ = _disk_full_after(0, torch.save)
    monkeypatch.setattr(torch, "save", save)
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "smile train: error: [Errno 28] writing file" in err and "checkpoint.pt failed" in err


# ---- the Slicer trainer panel: problems reported before training -------------------------------
def test_dataset_scan_reports_problems_before_training(tmp_path):
    # inside Slicer every module of the extension is on sys.path; the trainer's logic uses
    # SMILESynthesisLib's background process
    modules = [str(ROOT / "SMILETrainer"), str(ROOT / "SMILESynthesis")]
    sys.path[:0] = modules
    try:
        from SMILETrainerLib.logic import scan_dataset
    finally:
        for m in modules:
            sys.path.remove(m)
    data = write_cohort(tmp_path / "data", n_cases=5, seed=2, shape=(24, 24, 8))
    (data / "Synth_000" / "Synth_000_t2.nii.gz").write_bytes(b"garbage")
    _image_4d(data / "Synth_001" / "Synth_001_t2.nii.gz")
    shifted = LPS.copy()
    shifted[:3, 3] = 5
    seg = data / "Synth_002" / "Synth_002_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(seg).dataobj), shifted), seg)
    (data / "Synth_003" / "Synth_003_t2.nii.gz").unlink()
    report = scan_dataset(data)
    assert not report.usable
    assert set(report.problems) == {"Synth_000", "Synth_001", "Synth_002"}
    assert report.missing_modality == ["Synth_003"]
    summary = report.summary()
    for expected in ("Synth_000: Synth_000_t2.nii.gz is unreadable", "Synth_001: Synth_001_t2.nii.gz is not a 3D",
                     "Synth_002: Synth_002_seg.nii.gz is not on the grid", "No t2 image in: Synth_003"):
        assert expected in summary, summary
    (tmp_path / "empty").mkdir()
    assert "No BraTS cases found" in scan_dataset(tmp_path / "empty").summary()
    assert not scan_dataset(tmp_path / "empty").usable
    missing = scan_dataset(tmp_path / "nowhere")
    assert not missing.usable and "does not exist" in missing.summary()
    unlabeled = write_cohort(tmp_path / "unl", n_cases=2, seed=2, shape=(24, 24, 8), unlabeled=2)
    assert "No labelled case" in scan_dataset(unlabeled).summary() and not scan_dataset(unlabeled).usable


def test_a_failed_png_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import errno
    from PIL import Image
    from smilecore.overview import save_png
    target = tmp_path / "figure.png"
    save_png(Image.new("RGB", (4, 4), "white"), target)
    before = target.read_bytes()

    def full_disk(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError):
        save_png(Image.new("RGB", (4, 4), "black"), target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["figure.png"]
