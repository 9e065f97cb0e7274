import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from smilecore.modelfile import load_model
from smilecore.synthesis import SynthesisCancelled, synthesize, synthesize_file
from smilecore.train import MODEL_NAME
from smilecore.volume import VolumeError


@pytest.fixture(scope="module")
def model(trained_run):
    return load_model(trained_run / MODEL_NAME)


def _case(cohort, k=0):
    d = cohort / f"Synth_{k:03d}"
    return d / f"Synth_{k:03d}_t2.nii.gz", d / f"Synth_{k:03d}_seg.nii.gz", d / f"Synth_{k:03d}_t2healthy.nii.gz"


def test_outputs_keep_the_input_geometry(cohort, model, tmp_path):
    image, _, _ = _case(cohort)
    written = synthesize_file(image, tmp_path, model)
    ref = nib.load(image)
    for name in ("pseudo_normal", "lesion_probability", "lesion_mask", "pseudo_abnormal", "difference"):
        out = nib.load(written[name])
        assert out.shape == ref.shape and np.allclose(out.affine, ref.affine), name
    assert written["overview"].stat().st_size > 1000
    prob = nib.load(written["lesion_probability"]).get_fdata()
    assert prob.min() >= 0 and prob.max() <= 1


def test_lps_input_and_its_ras_reorientation_give_the_same_result(cohort, model, tmp_path):
    image, _, _ = _case(cohort)
    img = nib.load(image)
    lps = img.get_fdata().astype(np.float32)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    ras = nib.as_closest_canonical(img)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    a = synthesize(lps, img.affine, model)
    b = synthesize(ras.get_fdata().astype(np.float32), ras.affine, model)
    # same anatomy, opposite voxel order along x and y
    assert np.allclose(a.pseudo_normal, b.pseudo_normal[::-1, ::-1], atol=1e-3)
    assert np.array_equal(a.lesion_mask, b.lesion_mask[::-1, ::-1])
    # a permuted voxel order too (z, x, y)
    perm = np.transpose(lps, (2, 0, 1))
    affine = img.affine[:, [2, 0, 1, 3]]
    c = synthesize(perm, affine, model)
    assert np.allclose(np.transpose(c.pseudo_normal, (1, 2, 0)), a.pseudo_normal, atol=1e-3)


def test_normal_slices_come_back_nearly_unchanged(cohort, model):
    """Axial slices without lesion (the label is empty there) are returned almost as they were."""
    image, seg, _ = _case(cohort, 1)
    img = nib.load(image)
    data = img.get_fdata().astype(np.float32)
    label = nib.load(seg).get_fdata() > 0
    normal = [z for z in range(data.shape[2]) if not label[:, :, z].any() and (data[:, :, z] > 0).sum() > 50]
    assert normal, "the test case has no normal slice"
    result = synthesize(data, img.affine, model)
    brain = data[:, :, normal] > 0
    scale = np.percentile(data[data > 0], 99.5)
    change = np.abs(result.pseudo_normal[:, :, normal] - data[:, :, normal])[brain] / scale
    assert np.median(change) < 0.05, np.median(change)
    assert np.array_equal(result.pseudo_normal[data <= 0], data[data <= 0])  # background untouched


def test_a_user_mask_drives_the_blend_and_R(cohort, model):
    image, seg, _ = _case(cohort, 0)
    img = nib.load(image)
    data = img.get_fdata().astype(np.float32)
    mask = nib.load(seg).get_fdata() > 0
    result = synthesize(data, img.affine, model, mask=mask)
    assert result.mask_source == "user"
    assert np.array_equal(result.lesion_mask > 0, mask)
    assert np.array_equal(result.pseudo_normal[~mask], data[~mask])   # input outside M
    assert not np.array_equal(result.pseudo_normal[mask], data[mask])  # G inside M
    # a lesion painted where there was none changes the pseudo-abnormal there
    painted = np.zeros_like(mask)
    painted[10:16, 10:16, 6:10] = True
    other = synthesize(data, img.affine, model, mask=painted)
    assert not np.allclose(other.pseudo_abnormal[painted], result.pseudo_abnormal[painted])
    # R paints at the mask and its rim (4 px in-plane) only: farther away, the input exactly
    from scipy import ndimage
    rim = ndimage.binary_dilation(painted, np.ones((9, 9, 1), bool))
    assert np.array_equal(other.pseudo_abnormal[~rim], data[~rim])
    assert not np.array_equal(other.pseudo_abnormal[rim & ~painted], data[rim & ~painted])
    with pytest.raises(VolumeError, match="mask shape"):
        synthesize(data, img.affine, model, mask=mask[:-1])


def test_progress_and_cancel(cohort, model):
    image, _, _ = _case(cohort)
    img = nib.load(image)
    data = img.get_fdata().astype(np.float32)
    seen = []
    synthesize(data, img.affine, model, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and len(seen) > 1
    with pytest.raises(SynthesisCancelled):
        synthesize(data, img.affine, model, cancel=lambda: True)


def test_cli_synthesize_and_its_errors(cohort, trained_run, tmp_path):
    image, seg, _ = _case(cohort)
    cmd = [sys.executable, "-m", "smilecore.cli", "synthesize", str(image), "--model",
           str(trained_run / MODEL_NAME), "--out-dir", str(tmp_path / "out"), "--mask", str(seg)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "Synth_000_t2_reviewed_pseudo_normal.nii.gz").exists()  # review mode's names
    bad = tmp_path / "broken_t2.nii.gz"
    bad.write_bytes(image.read_bytes()[:200])                       # truncated file
    r = subprocess.run(cmd[:4] + [str(bad)] + cmd[5:7] + ["--out-dir", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "broken_t2.nii.gz" in r.stderr and "Traceback" not in r.stderr


def _help(argv, capsys) -> str:
    """What `smile ARGV` prints, from the command's code in this process (test_readme runs
    `smile --help` as a process)."""
    from smilecore.cli import main
    with pytest.raises(SystemExit) as end:
        main(argv)
    assert end.value.code == 0
    return capsys.readouterr().out


def test_help_explains_every_command(capsys):
    assert all(c in _help(["--help"], capsys) for c in ("train", "synthesize", "demo"))
    text = _help(["train", "--help"], capsys)
    assert "--labeled-fraction" in text and "--resume" in text and "--crop" in text


def test_a_model_can_be_trained_after_a_synthesis(cohort, model):
    """Synthesis re-lays the weights (channels-last) outside inference mode, so they stay trainable."""
    img = nib.load(cohort / "Synth_000" / "Synth_000_t2.nii.gz")
    synthesize(img.get_fdata().astype(np.float32), img.affine, model, channels_last=True)
    S = model.nets["S"]
    S(torch.rand(2, 1, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in S.parameters())
    S.zero_grad()


def test_volumes_are_scaled_as_the_model_file_says(cohort, model, monkeypatch):
    import smilecore.synthesis as synthesis
    from smilecore.volume import CanonicalVolume
    seen = []
    real = CanonicalVolume.from_array.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("normalisation"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(synthesis.CanonicalVolume, "from_array", classmethod(spy))
    img = nib.load(_case(cohort)[0])
    data, affine = img.get_fdata().astype(np.float32), img.affine
    assert model.normalisation == "clip-percentile"      # files before the setting: the paper's scaling
    model.config["normalisation"]["method"] = "median"
    try:
        synthesize(data, affine, model, notify=lambda m: None)
    finally:
        model.config["normalisation"]["method"] = "clip-percentile"
    assert seen == ["median"]


def test_R_runs_only_on_the_slices_it_paints(cohort, model):
    """R's output is used only within FILL_GROW px of the lesion in-plane, so it runs only on the
    slices with lesion; elsewhere the pseudo-abnormal is the input exactly, as before."""
    image, seg, _ = _case(cohort, 0)
    img = nib.load(image)
    data = img.get_fdata().astype(np.float32)
    mask = nib.load(seg).get_fdata() > 0
    seen = []
    R = model.nets["R"]

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = R.unet   # synthesis reads the networks' input multiple from it

        def forward(self, x, m):
            seen.append(int(x.shape[0]))
            return R(x, m)
    model.nets["R"] = Counting()
    try:
        result = synthesize(data, img.affine, model, mask=mask, batch_size=4, notify=lambda m: None)
    finally:
        model.nets["R"] = R
    with_lesion = mask.any(axis=(0, 1))
    assert 0 < with_lesion.sum() < mask.shape[2] and sum(seen) == with_lesion.sum()
    assert np.array_equal(result.pseudo_abnormal[:, :, ~with_lesion], data[:, :, ~with_lesion])
    assert not np.array_equal(result.pseudo_abnormal[:, :, with_lesion], data[:, :, with_lesion])


def test_outputs_do_not_depend_on_how_many_slices_are_composed_at_once(cohort, model, monkeypatch):
    """The blend runs a few slices at a time (memory); every step is in-plane, so one slice at a
    time gives the same outputs to the bit."""
    from smilecore import synthesis_blend
    image, seg, _ = _case(cohort, 0)
    img = nib.load(image)
    data = img.get_fdata().astype(np.float32)
    mask = nib.load(seg).get_fdata() > 0
    runs = []
    for chunk in (synthesis_blend.CHUNK_SLICES, 1):
        monkeypatch.setattr(synthesis_blend, "CHUNK_SLICES", chunk)
        runs.append(synthesize(data, img.affine, model, mask=mask, notify=lambda m: None).arrays())
    for name, array in runs[0].items():
        assert np.array_equal(array, runs[1][name]), name


def test_outputs_do_not_depend_on_the_batch_size(cohort, model, monkeypatch):
    """Each block of BOX_BLOCK slices runs in its own brain box (synthesis_grid.block_boxes), not a
    batch's: batches of 16, of 3 (straddling blocks) and of 1 give the same outputs. Here the lowest
    block holds a smaller brain than the rest, so the blocks' boxes differ."""
    from smilecore import synthesis_grid
    monkeypatch.setattr(synthesis_grid, "BOX_BLOCK", 4)
    image, _, _ = _case(cohort, 0)
    img = nib.load(image)
    data = np.pad(img.get_fdata().astype(np.float32), ((32, 32), (32, 32), (0, 0)))
    data[:52, :, :4] = 0
    data[:, :52, :4] = 0
    grids = []
    real_grid = synthesis_grid.network_grid
    monkeypatch.setattr("smilecore.synthesis.network_grid", lambda *a, **k: grids.append(real_grid(*a, **k)) or grids[-1])
    runs = [synthesize(data, img.affine, model, batch_size=b, notify=lambda m: None).arrays() for b in (16, 3, 1)]
    boxes = {(b[1].start, b[1].stop, b[2].start, b[2].stop) for b in grids[0].blocks}
    assert len(grids[0].blocks) > 2 and len(boxes) > 1
    for run in runs[1:]:
        for name, array in runs[0].items():
            np.testing.assert_allclose(run[name], array, atol=1e-4 * float(np.abs(data).max()), err_msg=name)
