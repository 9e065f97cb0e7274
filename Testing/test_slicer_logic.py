"""Module logic on real MRML (the slicer-core wheel), outside the Slicer application."""
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import vtk

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is part of the test extras")

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "SMILESynthesis"), str(ROOT / "SMILETrainer")]

from SMILESynthesisLib import NEW, Outputs, SynthesisLogic  # noqa: E402
from SMILESynthesisLib import nodes  # noqa: E402
from SMILETrainerLib.logic import TrainerLogic, TrainingSettings, scan_dataset  # noqa: E402
from smilecore.modelfile import load_model  # noqa: E402
from smilecore.train import MODEL_NAME  # noqa: E402


@pytest.fixture()
def scene():
    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    yield s
    s.Clear(1)


@pytest.fixture(scope="module")
def model(trained_run):
    return load_model(trained_run / MODEL_NAME)


def _volume_node(scene, data_ijk, affine, name="input"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(data_ijk.transpose(2, 1, 0)))
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, affine[r, c])
    node.SetIJKToRASMatrix(m)
    return node


def _ras(array, affine):
    return nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array, np.float32), affine)).get_fdata()


def _case(cohort, k=0):
    img = nib.load(cohort / f"Synth_{k:03d}" / f"Synth_{k:03d}_t2.nii.gz")
    seg = nib.load(cohort / f"Synth_{k:03d}" / f"Synth_{k:03d}_seg.nii.gz")
    return img.get_fdata().astype(np.float32), img.affine, seg.get_fdata() > 0


def test_outputs_have_the_input_geometry_whatever_the_voxel_order(scene, model, cohort):
    data, affine, _ = _case(cohort)
    variants = {"LPS": (data, affine)}
    ras = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    variants["RAS"] = (ras.get_fdata().astype(np.float32), ras.affine)
    variants["permuted+flipped"] = (np.ascontiguousarray(np.transpose(data, (2, 0, 1))[:, ::-1]),
                                    affine[:, [2, 0, 1, 3]] @ np.array(
                                        [[1, 0, 0, 0], [0, -1, 0, data.shape[0] - 1], [0, 0, 1, 0], [0, 0, 0, 1]]))
    logic = SynthesisLogic(scene)
    results = {}
    for name, (arr, aff) in variants.items():
        node = _volume_node(scene, arr, aff, name)
        used = logic.run(node, model, Outputs(NEW, NEW, NEW, NEW))
        for role in ("pseudoNormal", "difference", "pseudoAbnormal"):
            out = getattr(used, role)
            assert np.allclose(nodes.ijk_to_ras(out), nodes.ijk_to_ras(node)), (name, role)
            assert out.GetImageData().GetDimensions() == node.GetImageData().GetDimensions()
        pn, pn_affine = nodes.array_from_volume(used.pseudoNormal)
        results[name] = _ras(pn, pn_affine)
        # the input volume is never modified
        assert np.array_equal(nodes.array_from_volume(node)[0], arr)
    for name in ("RAS", "permuted+flipped"):
        assert np.allclose(results[name], results["LPS"], atol=1e-3), name


def test_lesion_segmentation_edit_and_resynthesis_round_trip(scene, model, cohort):
    data, affine, truth = _case(cohort)
    node = _volume_node(scene, data, affine)
    logic = SynthesisLogic(scene)
    used = logic.run(node, model, Outputs(NEW, NEW, None, NEW))
    seg = used.lesion
    assert seg.IsA("vtkMRMLSegmentationNode") and seg.GetSegmentation().GetNumberOfSegments() == 1
    segment = seg.GetSegmentation().GetNthSegment(0)
    assert segment.GetName() == "Lesion"
    tag = vtk.reference("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag) and "Neoplasm" in str(tag)
    # the reviewer replaces S's lesion by the expert mask (as an edit in Segment Editor would)
    nodes.mask_to_segmentation(scene, truth, node, seg)
    assert np.array_equal(nodes.segmentation_to_mask(scene, seg, node), truth)
    again = logic.run(node, model, Outputs(used.pseudoNormal, seg, None, used.pseudoAbnormal), mask_segmentation=seg)
    assert again.pseudoNormal is used.pseudoNormal and again.lesion is seg    # nodes reused
    pn = nodes.array_from_volume(again.pseudoNormal)[0]
    assert np.array_equal(pn[~truth], data[~truth])                          # input outside the mask
    # painting a lesion in healthy tissue gives a pseudo-abnormal that differs there
    painted = np.zeros_like(truth)
    painted[8:14, 24:30, 6:10] = True
    painted &= ~truth & (data > 0)
    paint_seg = nodes.mask_to_segmentation(scene, painted, node)
    pab_before = nodes.array_from_volume(again.pseudoAbnormal)[0]
    after = logic.run(node, model, Outputs(None, None, None, NEW), mask_segmentation=paint_seg)
    pab_after = nodes.array_from_volume(after.pseudoAbnormal)[0]
    assert not np.allclose(pab_after[painted], pab_before[painted])


def test_cancel_leaves_no_half_filled_node(scene, model, cohort):
    from smilecore.synthesis import SynthesisCancelled
    data, affine, _ = _case(cohort)
    node = _volume_node(scene, data, affine)
    before = scene.GetNumberOfNodes()
    with pytest.raises(SynthesisCancelled):
        SynthesisLogic(scene).run(node, model, Outputs(NEW, NEW, NEW, NEW), cancel=lambda: True)
    assert scene.GetNumberOfNodes() == before


def test_a_volume_named_for_another_modality_is_refused_before_any_node_changes(scene, model, cohort):
    from smilecore.synthesis import ModalityMismatch
    data, affine, _ = _case(cohort)
    node = _volume_node(scene, data, affine, "Brats18_X_flair")
    before = scene.GetNumberOfNodes()
    with pytest.raises(ModalityMismatch, match="volume 'Brats18_X_flair' is flair .*trained on t2"):
        SynthesisLogic(scene).run(node, model, Outputs(NEW, NEW, NEW, NEW))
    assert scene.GetNumberOfNodes() == before
    # stating the modality (the image really is T2) runs it, and notes reach the caller
    told = []
    oblique = _volume_node(scene, data, np.array([[1, 0, 0, 0], [0, 0.6, -0.8, 0], [0, 0.8, 0.6, 0], [0, 0, 0, 1.0]])
                           @ affine, "Brats18_X_flair oblique")
    logic = SynthesisLogic(scene)
    used = logic.run(oblique, model, Outputs(NEW, None, None, None), modality="t2", notify=told.append)
    assert used.pseudoNormal is not None and len(told) == 1 and "oblique" in told[0] and logic.notes == told


def test_dataset_scan_reports_counts_and_problems(cohort, tmp_path):
    report = scan_dataset(cohort)
    assert len(report.cases) == 7 and len(report.labeled) == 6 and report.unlabeled == ["Synth_006"]
    assert report.usable and "7 cases found" in report.summary()
    assert scan_dataset(cohort, "flair").missing_modality == report.cases


def _settings(cohort, out, **kw):
    s = dict(data_dir=str(cohort), out_dir=str(out), labeled_fraction=0.5, epochs=1, batch_size=2, lr=1e-3,
             base=4, depth=2, steps_per_epoch=2, device="cpu", extra=["--split", "0.6,0.2,0.2"])
    s.update(kw)
    return TrainingSettings(**s)


def _wait(logic, until, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        logic.poll()
        if until():
            return True
        time.sleep(0.1)
    return False


def test_trainer_runs_a_real_process_and_fills_the_table(scene, cohort, tmp_path, monkeypatch):
    monkeypatch.setenv("SMILE_HOME", str(tmp_path / "home"))
    logic = TrainerLogic(scene)
    logic.start(_settings(cohort, tmp_path / "run"))
    assert _wait(logic, lambda: logic.finished is not None), logic.log
    assert logic.finished["event"] == "done", logic.log
    table = logic.table.GetTable()
    assert table.GetNumberOfRows() == 4                                   # one row per epoch, 4 phases
    assert [table.GetValueByName(r, "phase").ToDouble() for r in range(4)] == [1, 2, 3, 4]
    assert table.GetColumnByName("recons") is not None and table.GetColumnByName("eps") is not None
    assert logic.chart.GetNumberOfPlotSeriesNodes() >= 4
    from smilecore.registry import registered_models
    assert registered_models()[0]["path"] == str((tmp_path / "run" / MODEL_NAME).resolve())


def test_stop_kills_the_process_tree_and_resume_continues(scene, cohort, tmp_path, monkeypatch):
    psutil = pytest.importorskip("psutil")
    monkeypatch.setenv("SMILE_HOME", str(tmp_path / "home"))
    logic = TrainerLogic(scene)
    settings = _settings(cohort, tmp_path / "run", steps_per_epoch=400, extra=["--split", "0.6,0.2,0.2",
                                                                             "--checkpoint-every", "1"])
    proc = logic.start(settings)
    assert _wait(logic, lambda: logic.last_step is not None and logic.last_step["global_step"] >= 3), logic.log
    pid = proc.proc.pid
    logic.stop()
    assert not logic.running and not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    stopped_at = logic.last_step["global_step"]
    assert stopped_at < 1600
    logic.start(settings, resume=True)
    assert _wait(logic, lambda: logic.last_step is not None and logic.last_step["global_step"] > stopped_at + 1)
    logic.stop()
    starts = [e for e in __import__("smilecore.events", fromlist=["x"]).read_events(tmp_path / "run" / "events.jsonl")
              if e["event"] == "start"]
    assert starts[-1]["resumed"] and starts[-1]["global_step"] >= 1


# ---- issue 22: output checks, brain mask, the background job ------------------------------------
def test_an_output_that_is_the_input_is_refused_before_any_work(scene, model, cohort):
    from SMILESynthesisLib import OutputIsInput
    data, affine, _ = _case(cohort)
    node = _volume_node(scene, data, affine)
    before = scene.GetNumberOfNodes()
    for outputs in (Outputs(node, NEW, None, None), Outputs(None, None, node, None), Outputs(None, None, None, node)):
        with pytest.raises(OutputIsInput, match="cannot be the input volume 'input'"):
            SynthesisLogic(scene).run(node, model, outputs)
    assert scene.GetNumberOfNodes() == before and np.array_equal(nodes.array_from_volume(node)[0], data)


def test_a_brain_mask_segmentation_or_volume_reaches_the_engine(scene, model, cohort):
    data, affine, _ = _case(cohort)
    node = _volume_node(scene, data, affine)
    brain = np.zeros(data.shape, bool)
    brain[5:35, 5:35, 3:13] = True
    logic = SynthesisLogic(scene)
    as_segmentation = nodes.mask_to_segmentation(scene, brain, node, name="brain")
    as_volume = _volume_node(scene, brain.astype(np.float32), affine, "brain volume")
    for mask_node in (as_segmentation, as_volume):
        used = logic.run(node, model, Outputs(NEW, None, None, None), brain_mask=mask_node)
        pn = nodes.array_from_volume(used.pseudoNormal)[0]
        assert np.array_equal(pn[~brain], data[~brain])  # outside the given brain: left as it is
    elsewhere = _volume_node(scene, brain[:, :, :8].astype(np.float32), affine, "cropped mask")
    with pytest.raises(ValueError, match="not on the grid of input volume"):
        logic.run(node, model, Outputs(NEW, None, None, None), brain_mask=elsewhere)


def test_the_job_writes_its_inputs_for_the_worker_and_fails_clearly_when_it_dies(scene, cohort, tmp_path):
    from SMILESynthesisLib import SynthesisJob, job
    data, affine, truth = _case(cohort)
    node = _volume_node(scene, data, affine)
    brain = nodes.mask_to_segmentation(scene, truth | (data > 0), node, name="brain")
    dies = tmp_path / "dies.py"  # a "python" that ends at once without an event, as a crashed worker
    dies.write_text("import sys\nprint('Segmentation fault (core dumped)')\nsys.exit(139)\n")
    launcher = tmp_path / "python"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "{dies}"\n')
    launcher.chmod(0o755)
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # as in the application
    before = scene.GetNumberOfNodes()
    run = SynthesisJob(SynthesisLogic(scene), node, Outputs(NEW, NEW, None, NEW), brain_mask=brain,
                       python=str(launcher))
    run.start()
    folder = run.folder
    assert sorted(p.name for p in folder.iterdir()) == ["affine.npy", "brain.npy", "data.npy", "job.json"]
    assert run.model == job.model_file("default") and run.model.is_file()
    deadline = time.time() + 60
    while run.running and time.time() < deadline:
        run.poll()
        time.sleep(0.05)
    assert run.state == job.FAILED and "exit code 139" in run.error and "Segmentation fault" in run.error
    assert not folder.exists() and scene.GetNumberOfNodes() == before


# ---- batch (issue 22, 6) -----------------------------------------------------------------------------
def _drive(batch, timeout=240):
    deadline = time.time() + timeout
    while batch.running and time.time() < deadline:
        batch.poll()
        time.sleep(0.05)
    return batch


def test_a_batch_over_a_folder_runs_every_file_and_a_failing_case_is_a_row(scene, cohort, model_path, tmp_path):
    """A folder of two real cases and one damaged file: three rows, the damaged one with its error; the
    two others have outputs, a lesion volume in mL and a time; the volumes SMILE wrote are not cases."""
    import shutil
    from SMILESynthesisLib.batch import BatchRun, folder_cases, loaded_cases
    folder = tmp_path / "cases"
    folder.mkdir()
    for k in (0, 1):
        shutil.copy(cohort / f"Synth_{k:03d}" / f"Synth_{k:03d}_t2.nii.gz", folder / f"case{k}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not a case")
    cases = folder_cases(folder)
    assert [c.name for c in cases] == ["broken", "case0", "case1"]
    wanted = {"pseudoNormal": True, "lesion": True, "difference": False, "pseudoAbnormal": True}
    batch = _drive(BatchRun(SynthesisLogic(scene), cases, wanted, model=model_path, device="cpu").start())
    assert batch.state == "done" and batch.failed == ["broken"]
    table = batch.table.GetTable()
    assert [table.GetColumn(k).GetName() for k in range(4)] == ["case", "lesion volume (mL)", "time (s)", "notes"]
    assert table.GetNumberOfRows() == 3
    assert [table.GetValue(r, 0).ToString() for r in range(3)] == ["broken", "case0", "case1"]
    assert "broken.nii.gz: not readable as a volume" in table.GetValue(0, 3).ToString()
    for r, k in ((1, 0), (2, 1)):
        node = cases[r].volume
        data, _ = nodes.array_from_volume(node)
        truth = nib.load(cohort / f"Synth_{k:03d}" / f"Synth_{k:03d}_t2.nii.gz").get_fdata()
        assert np.allclose(np.sort(data.ravel()), np.sort(truth.ravel().astype(np.float32)))  # the file's voxels
        seconds, ml = table.GetValue(r, 2).ToDouble(), table.GetValue(r, 1).ToDouble()
        assert seconds > 0 and ml >= 0 and ml == pytest.approx(batch.rows[r]["lesion_ml"], abs=1e-3)
    assert np.isnan(table.GetValue(0, 1).ToDouble())
    made = [scene.GetNthNodeByClass(k, "vtkMRMLScalarVolumeNode")
            for k in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
    names = sorted(n.GetName() for n in made)
    assert names == sorted(["case0", "case1"] + [f"case{k} {s}" for k in (0, 1) for s in ("pseudo-normal",
                                                                                          "pseudo-abnormal")])
    assert [c.name for c in loaded_cases(scene)] == ["case0", "case1"]  # its own outputs are not cases
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")  # a label map is not an image
    assert [c.name for c in loaded_cases(scene, exclude=[cases[1].volume])] == ["case1"]
