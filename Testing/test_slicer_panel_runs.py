"""The synthesis panel's runs, for the parts of issue 22 that the longer tests of test_slicer_widgets.py
leave open: a Cancel at the latest moment (10), the engine's notes of an oblique and of a not
skull-stripped input in the panel (2), a display node for every output (11a), the engine imported by
the worker only (1). Real panel code, real Qt (offscreen), real MRML, real worker processes; shared
helpers and the `slicer` fixture: slicer_widget_helpers.py."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from slicer_widget_helpers import (ROOT, _node_ids, _panel, _read_volume, _slab, _wait, slicer,  # noqa: F401
                                   standins)

WORKER_OUTPUTS = ["out_difference.npy", "out_lesion_mask.npy", "out_pseudo_abnormal.npy", "out_pseudo_normal.npy"]


# ---- issue 22, 10: "Cancelled: no output was changed" only when true ------------------------------------
def test_a_cancel_after_the_worker_wrote_every_result_changes_nothing_and_says_so(slicer, tmp_path):
    """Cancel pressed as the last slice's progress shows and, where a worker runs the synthesis, only
    once it has written every result file and exited: the latest moment a Cancel can come. The panel
    says nothing changed, and the scene is as before. (Before the fix the engine ran in the panel's
    thread, checked Cancel only before each batch of slices, and wrote the outputs after its last
    progress call while the panel said "Cancelled: no output was changed".) Only the panel's widgets
    are used, so that the same test runs on the code before the fix."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, scene = widget.ui, slicer.mrmlScene
    ui.inputVolumeSelector.setCurrentNode(_read_volume(slicer, _slab(tmp_path, count=4)))
    ui.deviceComboBox.currentIndex = 2  # cpu
    before, written = _node_ids(scene), []

    def at_the_last_slice(value):
        if value != ui.progressBar.maximum or ui.applyButton.text != "Cancel" or written:
            return
        job = getattr(widget, "_job", None)  # the background worker, where there is one
        if job is not None:
            job.process.proc.wait(timeout=120)
            written.append(sorted(p.name for p in job.folder.glob("out_*.npy")))
        else:
            written.append("no worker")
        ui.applyButton.click()  # Cancel

    ui.progressBar.valueChanged.connect(at_the_last_slice)
    ui.applyButton.click()
    assert _wait(lambda: ui.applyButton.text == "Apply", timeout=240), ui.statusLabel.text
    assert ui.statusLabel.text == "Cancelled: no output was changed."
    assert _node_ids(scene) == before, "outputs were written, yet the panel says no output was changed"
    assert written == [WORKER_OUTPUTS]  # the Cancel came after the worker had written all its results
    assert widget._job.state == "cancelled" and widget._job.folder is None and standins.slot_errors == []
    widget.cleanup()


# ---- issue 22, 2 and 11a: the oblique and bright-tissue notes in the panel; every output displayable ------
def _oblique_head(tmp_path, count=6, first=60, degrees=30.0):
    """A tiny real volume: `count` 1 mm slices of the bundled case through the tumour, its voxel axes
    turned `degrees` about the left-right axis (an oblique acquisition), with a bright bar in the
    background apart from the brain, about 10 mL (what a scalp or skull left on gives, below the volume at
    which the engine refuses the image as not skull-stripped), as NIfTI."""
    import nibabel as nib
    image = nib.load(next((ROOT / "smilecore" / "resources" / "sample").glob("*_t2.nii.gz")))
    data = np.asarray(image.dataobj)[:, :, first:first + count].astype(np.float32)
    data[5:25, 80:160, :] = np.percentile(data[data > 0], 90)  # x 5-25 is background on these slices
    turn, t = np.eye(4), np.deg2rad(degrees)
    turn[1:3, 1:3] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    affine = turn @ image.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, first], [0, 0, 0, 1.0]])
    path = tmp_path / "oblique_head.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_the_oblique_and_bright_tissue_notes_reach_the_panel_and_the_log_and_every_output_is_displayable(
        slicer, tmp_path, caplog):
    """An oblique input with bright tissue apart from the brain and no brain mask, run by the background
    worker as Apply runs it: both engine notes are in the status area and in the log; the four outputs
    (difference included) are created with display nodes."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params = widget.ui, widget._parameterNode
    ui.inputVolumeSelector.setCurrentNode(_read_volume(slicer, _oblique_head(tmp_path)))
    ui.deviceComboBox.currentIndex = 2  # cpu
    ui.differenceCheckBox.checked = True
    assert params.makeDifference  # and no brain mask is chosen
    caplog.set_level("WARNING")
    ui.applyButton.click()
    assert _wait(lambda: ui.applyButton.text == "Apply", timeout=240), ui.statusLabel.text
    status, logged = ui.statusLabel.text, [r.getMessage() for r in caplog.records]
    assert status.startswith("Done.") and standins.slot_errors == [], status
    for note in ("the voxel axes are 30 degrees oblique", "mL of bright voxels lie apart from the brain"):
        assert "Note: volume 'oblique_head': " in status and note in status, (note, status)
        assert any(note in message for message in logged), (note, logged)
    outputs = (params.pseudoNormalVolume, params.lesionSegmentation, params.differenceVolume,
               params.pseudoAbnormalVolume)
    assert all(node is not None and node.GetDisplayNode() is not None for node in outputs), outputs
    widget.cleanup()


# ---- issue 22, 1: the engine is imported in the worker only --------------------------------------------
SCRIPT = textwrap.dedent("""
    import json, sys, time
    import slicer_standins as standins
    standins.assemble()
    from PyQt5 import QtWidgets
    import slicer
    module_file, _ = standins.load_module("SMILESynthesis")
    widget, _ = standins.make_widget(module_file, "SMILESynthesis")
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "slab")
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(sys.argv[1])
    assert storage.ReadData(node)
    widget.ui.inputVolumeSelector.setCurrentNode(node)
    widget._parameterNode.device = "cpu"
    widget.ui.applyButton.click()
    job, deadline = widget._job, time.monotonic() + 240
    while job.done < 2 and job.running and time.monotonic() < deadline:  # the worker's engine is at work
        QtWidgets.QApplication.processEvents()
        time.sleep(0.05)
    engine = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "nibabel", "smilecore"))
    print(json.dumps({"done": job.done, "state": job.state, "engine": engine, "log": job.log[-5:],
                      "torch importable": __import__("importlib.util").util.find_spec("torch") is not None}))
    widget.cleanup()
""")


def test_the_panels_process_never_imports_the_engine_while_a_synthesis_runs(tmp_path):
    """A fresh Python (nothing imported by pytest) runs the panel, reads a slab with Slicer's reader, and
    presses Apply: while the worker synthesises its second slice, neither torch, nibabel nor any engine
    module but the model list is imported in the panel's process, though torch is installed there."""
    slab = _slab(tmp_path, count=4)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "Testing"), SMILE_HOME=str(tmp_path / "home"),
               QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(slab)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["done"] >= 2 and report["state"] == "running", report
    # the model list of smilecore.registry (json and paths only) is what the model selector shows
    assert report["torch importable"] and report["engine"] == ["smilecore", "smilecore.registry"], report
