"""The modules' widget code, driven as a user drives it: Slicer's own Python, real MRML, real Qt widgets
(offscreen) built from the real .ui files, real model files, real training processes. The namespaces
and the few stand-ins (CTK/qMRML widgets, slicer.app) are in slicer_standins.py, which says what each
does not check. Shared helpers and the `slicer` fixture: slicer_widget_helpers.py; the trainer panel:
test_slicer_trainer_widgets.py; the stand-ins' own rules and the catalog screenshot: test_slicer_standins.py."""
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

from slicer_widget_helpers import (ROOT, _alive, _node_ids, _panel, _read_volume, _run_without_torch,  # noqa: F401
                                   _shown_texts, _site_packages_without, _slab, _ticking, _tree, _wait, slicer, standins)


# ---- module load ---------------------------------------------------------------------------------
def test_module_load_and_panels_without_torch_or_nibabel(tmp_path):
    """Slicer bundles neither: start-up, sample registration, setup() and enter() must not need them."""
    result = _run_without_torch(tmp_path, """
        import slicer_standins as standins
        standins.assemble()
        import SampleData, slicer
        calls = []
        register = SampleData.SampleDataLogic.registerCustomSampleDataSource
        SampleData.SampleDataLogic.registerCustomSampleDataSource = lambda **kw: calls.append(kw) or register(**kw)
        panels = {}
        for name in ("SMILESynthesis", "SMILETrainer"):
            module_file, _ = standins.load_module(name)
            slicer.app.startupCompleted.emit()
            widget, parent = standins.make_widget(module_file, name)
            panels[name] = widget
        combo = panels["SMILESynthesis"].ui.modelComboBox
        source = slicer.modules.sampleDataSources["SMILE"][0]
        print(json.dumps({
            "errors": [repr(e) for e in standins.slot_errors],
            "imported": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "nibabel")
                               or m in ("smilecore.modelfile", "smilecore.volume")),
            "kwargs": sorted(calls[0]), "files": [str(uri) for uri in source.uris], "nodes": list(source.nodeNames),
            "checksums": source.checksums, "models": combo.count, "blocked": combo.signalsBlocked(),
            "applyEnabled": panels["SMILESynthesis"].ui.applyButton.enabled}))
    """)
    assert result["errors"] == []
    assert result["imported"] == []
    assert "loadFileTypes" in result["kwargs"] and "loadFileType" not in result["kwargs"]  # deprecated in 5.10
    assert result["nodes"] == ["SMILE sample T2", "SMILE sample-FLAIR", "SMILE sample expert lesion"]
    assert [Path(f).name for f in result["files"]] == ["Brats18_TCIA02_370_1_t2.nii.gz",
                                                       "Brats18_TCIA02_370_1_flair.nii.gz",
                                                       "Brats18_TCIA02_370_1_seg.nii.gz"]
    import hashlib
    from urllib.parse import unquote, urlparse
    for uri, checksum in zip(result["files"], result["checksums"]):
        data = Path(unquote(urlparse(uri).path)).read_bytes()
        assert checksum == "SHA256:" + hashlib.sha256(data).hexdigest()
    assert result["models"] >= 2 and not result["blocked"]
    assert result["applyEnabled"] is False  # nothing loaded yet


def test_self_tests_skip_in_testing_mode_without_torch(tmp_path):
    result = _run_without_torch(tmp_path, """
        import os, unittest
        import slicer_standins as standins
        standins.assemble(testing=True)
        os.environ["SMILE_HOME"] = "kept"
        skipped = {}
        for name in ("SMILESynthesis", "SMILETrainer"):
            _, module = standins.load_module(name)
            try:
                module.runTest()
            except unittest.SkipTest as exc:
                skipped[name] = str(exc)
        print(json.dumps({"skipped": skipped, "home": os.environ.get("SMILE_HOME")}))
    """)
    assert set(result["skipped"]) == {"SMILESynthesis", "SMILETrainer"}
    assert all("torch, nibabel not installed" in reason for reason in result["skipped"].values())
    assert result["home"] == "kept"


def test_self_tests_skip_in_testing_mode_without_tqdm_or_psutil(tmp_path):
    """Issue 22, 8: Slicer bundles neither; testing mode installs nothing, so the self-tests skip."""
    view = _site_packages_without(tmp_path, hidden=("tqdm", "psutil"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(view), str(ROOT / "Testing")]),
               SMILE_HOME=str(tmp_path / "home"), QT_QPA_PLATFORM="offscreen")
    script = textwrap.dedent("""
        import importlib.util, json, unittest
        assert importlib.util.find_spec('tqdm') is None and importlib.util.find_spec('psutil') is None
        import slicer_standins as standins
        standins.assemble(testing=True)
        skipped = {}
        for name in ("SMILESynthesis", "SMILETrainer"):
            _, module = standins.load_module(name)
            try:
                module.runTest()
            except unittest.SkipTest as exc:
                skipped[name] = str(exc)
        print(json.dumps(skipped))
    """)
    out = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    skipped = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(skipped) == {"SMILESynthesis", "SMILETrainer"}
    assert all(reason.startswith("tqdm, psutil not installed") for reason in skipped.values()), skipped


def test_metadata_and_translatable_strings_as_the_slicer_template_has_them(slicer):
    """Issue 22, 11: contributors "Name (Organisation)", a documentation link in the help, translated
    strings formatted rather than concatenated, cmake_minimum_required as the 5.10 template's."""
    import re
    for name in ("SMILESynthesis", "SMILETrainer"):
        _, module = standins.load_module(name)
        parent = module.parent
        assert parent.contributors and all(re.fullmatch(r"[^()]+ \([^()]+\)", c) for c in parent.contributors)
        assert re.search(r'<a href="https://[^"]+">[^<]+</a>', parent.helpText)
        source = (ROOT / name / f"{name}.py").read_text()
        assert not re.search(r'_\("[^"]*"\)\s*\+|\+\s*_\(', source), f"{name}: a translated string concatenated"
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert cmake.startswith("cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)")  # Slicer v5.10.0 template


# ---- SMILESynthesis ------------------------------------------------------------------------------
def test_synthesis_panel_model_choice_is_symbolic_and_clearing_works(slicer, cohort, tmp_path):
    """Issue 22, 3 and 4: the bundled model is kept as "default", never its install path; combo box and
    path field agree; clearing the field (which the real ctkPathLineEdit reports only through
    validInputChanged) goes back to the bundled model."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params = widget.ui, widget._parameterNode
    combo, field = ui.modelComboBox, ui.modelPathLineEdit
    assert [ui.deviceComboBox.itemText(i) for i in range(ui.deviceComboBox.count)] == ["auto", "cuda", "cpu"]
    assert params.modelPath == "default" and combo.currentIndex == 0 and field.currentPath == ""
    assert not ui.applyButton.enabled
    ui.deviceComboBox.currentIndex = 2
    assert params.device == "cpu"
    volume = _read_volume(slicer, cohort / "Synth_000" / "Synth_000_t2.nii.gz")
    ui.inputVolumeSelector.setCurrentNode(volume)
    assert ui.applyButton.enabled

    combo.currentIndex = combo.count - 1  # "Model file below": the user types a path
    assert combo.currentIndex == combo.count - 1 and params.modelPath == "default"
    field.currentPath = str(tmp_path / "elsewhere.pt")
    assert params.modelPath == str(tmp_path / "elsewhere.pt") and combo.currentIndex == combo.count - 1
    field.clearByUser()  # select all, Delete: the real widget emits no currentPathChanged for ""
    assert field.currentPath == "" and params.modelPath == "default" and combo.currentIndex == 0

    field.currentPath = str(tmp_path / "elsewhere.pt")
    combo.currentIndex = 0  # back to the bundled default model
    assert params.modelPath == "default" and field.currentPath == ""
    params.modelPath = str(tmp_path / "other.pt")  # a scene with another file: the panel shows it
    assert combo.currentIndex == combo.count - 1 and field.currentPath == str(tmp_path / "other.pt")
    from SMILESynthesisLib.logic import bundled_model_path
    field.currentPath = str(bundled_model_path())  # the bundled file by its path is still "default"
    assert params.modelPath == "default" and combo.currentIndex == 0

    # the brain mask selector (issue 22, 5): a segmentation or a volume, passed to the worker
    assert set(ui.brainMaskSelector.nodeTypes) == {"vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode"}
    from SMILESynthesisLib import nodes
    data, _ = nodes.array_from_volume(volume)
    brain = nodes.mask_to_segmentation(slicer.mrmlScene, data > 0, volume, name="brain")
    ui.brainMaskSelector.setCurrentNode(brain)
    assert params.brainMask is brain
    waits = tmp_path / "waits"  # a worker that only waits: the job is looked at, then cancelled
    waits.write_text("#!/bin/sh\nsleep 60\n")
    waits.chmod(0o755)
    job = widget.logic.startJob(params, python=str(waits))
    assert np.array_equal(np.load(job.folder / "brain.npy"), data > 0)
    assert json.loads((job.folder / "job.json").read_text())["model"] == str(bundled_model_path())
    assert job.cancel() and job.folder is None

    # an output set to the input volume is refused with a message (issue 22, 4)
    ui.pseudoNormalSelector.setCurrentNode(volume)
    assert params.pseudoNormalVolume is None and ui.pseudoNormalSelector.currentNode() is None
    assert "cannot be the input volume" in ui.statusLabel.text
    assert standins.slot_errors == []
    widget.cleanup()


def test_a_scene_saved_with_the_default_model_synthesises_from_another_installation(slicer, tmp_path,
                                                                                  monkeypatch):
    """Issue 22, 3: the saved scene holds "default", not the install path; loaded where the engine is in
    another folder, the model is that installation's bundled file."""
    _, widget = _panel(slicer, "SMILESynthesis")
    scene = slicer.mrmlScene
    from SMILESynthesisLib import logic
    installed = logic.bundled_model_path()
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    text = (tmp_path / "scene.mrml").read_text()
    assert "default" in text and str(installed.parent) not in text
    moved = tmp_path / "Slicer-5.12" / "qt-scripted-modules" / "smilecore" / "resources"
    moved.mkdir(parents=True)
    (moved / installed.name).symlink_to(installed)
    monkeypatch.setattr(logic, "engine_resources", lambda: moved)
    widget.cleanup()
    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded.Connect()
    node = loaded.GetFirstNodeByClass("vtkMRMLScriptedModuleNode")
    module_file = sys.modules["SMILESynthesis"]
    params = module_file.SMILESynthesisParameterNode(node)
    assert params.modelPath == "default" and logic.model_file(params.modelPath) == moved / installed.name
    # and it synthesises: the reloaded scene's model choice, loaded from the moved installation, on a
    # small real case read into the reloaded scene
    volume = loaded.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "slab")
    storage = loaded.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(_slab(tmp_path, count=4)))
    assert storage.ReadData(volume)
    synthesis = logic.SynthesisLogic(loaded)
    model = synthesis.load_model(params.modelPath, "cpu")
    assert model.path.resolve() == installed.resolve()
    used = synthesis.run(volume, model, logic.plan_outputs({"pseudoNormal": True}, {}))
    normal = slicer.util.arrayFromVolume(used.pseudoNormal)
    assert normal.shape == slicer.util.arrayFromVolume(volume).shape and normal.max() > 0
    assert loaded.GetNodeByID(used.pseudoNormal.GetID()) is used.pseudoNormal
    # a scene saved before the choice was symbolic (the old installation's path) loads too
    assert logic.model_file("/Applications/Slicer-5.8/lib/qt-scripted-modules/smilecore/resources/"
                            + installed.name) == moved / installed.name


# ---- SMILESynthesis in the background (issue 22) ---------------------------------------------------
def test_synthesis_runs_in_the_background_with_per_slice_progress_and_notes(slicer, tmp_path, caplog):
    """Issue 22, 1 and 2: the event loop runs at least every 0.5 s throughout; nodes appear only at the
    end; the thick-slice note is in the panel and in the log."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params, scene = widget.ui, widget._parameterNode, slicer.mrmlScene
    volume = _read_volume(slicer, _slab(tmp_path))
    ui.inputVolumeSelector.setCurrentNode(volume)
    ui.deviceComboBox.currentIndex = 2  # cpu
    before = _node_ids(scene)
    during = []
    ui.progressBar.valueChanged.connect(lambda v: during.append((v, ui.progressBar.maximum, _node_ids(scene))))
    ticks, timer = _ticking()
    caplog.set_level("WARNING")
    ui.applyButton.click()
    ticks.append(time.monotonic())
    assert ui.applyButton.text == "Cancel"
    assert _wait(lambda: ui.applyButton.text == "Apply", timeout=240), ui.statusLabel.text
    timer.stop()
    ticks.append(time.monotonic())
    assert standins.slot_errors == []
    gaps = np.diff(ticks)
    assert gaps.max() < 0.5, f"the event loop stalled for {gaps.max():.2f} s"
    assert ui.statusLabel.text.startswith("Done."), ui.statusLabel.text
    assert "slices are 3.0 mm thick" in ui.statusLabel.text  # the engine's note, in the panel
    assert any("slices are 3.0 mm thick" in r.getMessage() for r in caplog.records)  # and in the log
    shown = sorted({v for v, _, _ in during if v > 0})
    assert during and during[-1][1] == 8 and len(shown) >= 4, during  # slice by slice (a poll may see two)
    assert all(ids == before for _, _, ids in during)  # no node while running
    for node in (params.pseudoNormalVolume, params.lesionSegmentation, params.pseudoAbnormalVolume):
        assert node is not None and scene.IsNodePresent(node)
    assert params.pseudoNormalVolume.GetDisplayNode() is not None  # created with its display nodes
    assert ui.pseudoNormalSelector.currentNode() is params.pseudoNormalVolume
    views = slicer.app.layoutManager()  # input and pseudo-normal side by side
    assert views.layouts == [slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView] and views.resets == 1
    assert views.sliceWidget("Red").mrmlSliceCompositeNode().GetBackgroundVolumeID() == volume.GetID()
    assert (views.sliceWidget("Yellow").mrmlSliceCompositeNode().GetBackgroundVolumeID()
            == params.pseudoNormalVolume.GetID())
    segment = params.lesionSegmentation.GetSegmentation().GetNthSegment(0)
    tag = segment.GetTerminology()
    # Slicer lists Neoplasm (SCT 108369006) in this context only (SegmentationCategoryTypeModifier-DICOM-Master.json)
    assert tag.split("~")[0] == "Segmentation category and type - DICOM master list" and "^108369006^" in tag
    assert ui.reviewButton.enabled

    from SMILESynthesisLib import nodes
    data, _ = nodes.array_from_volume(volume)
    painted = np.zeros(data.shape, bool)
    painted[100:120, 100:125, 2:5] = True  # the user's edited lesion
    painted &= data > 0
    nodes.mask_to_segmentation(scene, painted, volume, params.lesionSegmentation)
    ui.reviewButton.click()
    assert _wait(lambda: ui.applyButton.text == "Apply", timeout=240), ui.statusLabel.text
    assert standins.slot_errors == [] and ui.statusLabel.text.startswith("Done."), ui.statusLabel.text
    pseudo_normal = nodes.array_from_volume(params.pseudoNormalVolume)[0]
    assert np.array_equal(pseudo_normal[~painted], data[~painted])
    assert not np.array_equal(pseudo_normal[painted], data[painted])

    picture = ui.applyButton.window().grab()  # the catalog's screenshot: scripts/catalog_screenshot.py
    assert picture.width() > 200 and picture.height() > 300
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        widget.cleanup()
    assert [str(w.message) for w in caught] == []


def test_synthesis_cancel_stops_the_process_within_a_second_and_changes_nothing(slicer, tmp_path):
    """Issue 22, 1 and 11b: Cancel mid-run kills the worker within 1 s with the scene unchanged; cleanup
    cancels. A Cancel at the latest moment (10): test_slicer_panel_runs.py."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params, scene = widget.ui, widget._parameterNode, slicer.mrmlScene
    volume = _read_volume(slicer, _slab(tmp_path, count=4))
    ui.inputVolumeSelector.setCurrentNode(volume)
    ui.deviceComboBox.currentIndex = 2  # cpu
    before = _node_ids(scene)

    ui.applyButton.click()
    job = widget._job
    assert _wait(lambda: job.done >= 1, timeout=240), (job.state, job.log)
    tree = _tree(job.process.proc.pid)
    assert tree
    pressed = time.monotonic()
    ui.applyButton.click()  # Cancel
    assert _alive(tree, grace=1.0) == [] and time.monotonic() - pressed < 1.0
    assert ui.statusLabel.text == "Cancelled: no output was changed." and ui.applyButton.text == "Apply"
    _wait(lambda: False, timeout=0.5)
    assert _node_ids(scene) == before and params.pseudoNormalVolume is None

    ui.applyButton.click()
    job = widget._job
    tree = _tree(job.process.proc.pid)
    widget.cleanup()  # the module is unloaded or Slicer closes during a synthesis
    assert _alive(tree, grace=1.0) == [] and job.state == "cancelled"


def test_the_synthesis_self_test_runs_in_the_background_process(slicer, tmp_path, monkeypatch):
    """Issue 22 (self-tests): the in-Slicer test exercises the path the panel uses, a background worker
    polled while Qt's events run, not a synthesis in Slicer's main thread. Here on a slab of the bundled
    case (slicer.util.loadVolume needs the application's IO manager)."""
    slicer.app.testing = True
    _, module = standins.load_module("SMILESynthesis")
    from SMILESynthesisLib import background, logic
    slab = _slab(tmp_path, count=4)
    monkeypatch.setattr(slicer.util, "loadVolume", lambda path: _read_volume(slicer, slab))
    started = []
    start = background.BackgroundProcess.start
    monkeypatch.setattr(background.BackgroundProcess, "start", lambda self: started.append(self.command) or start(self))

    def in_this_thread(*args, **kwargs):
        raise AssertionError("the self-test synthesised in Slicer's main thread")
    monkeypatch.setattr(logic.SynthesisLogic, "run", in_this_thread)
    module.runTest()
    assert len(started) == 2 and all(command[1].endswith("worker.py") for command in started)  # apply, review
    views = slicer.app.layoutManager()
    assert views.layouts == [slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView] * 2


# ---- batch (issue 22, 6) -----------------------------------------------------------------------------
def test_batch_over_three_loaded_volumes_and_cancel_mid_batch(slicer, tmp_path, model_path):
    """Three small real volumes (slabs of the bundled case) and a small untrained model: three sets of
    outputs and a three-row summary table, per-case progress, the event loop never stalled; a second
    batch runs on the same three (not on the outputs of the first) and Cancel during its second case
    keeps the first case's outputs and names the cases not done."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params, scene = widget.ui, widget._parameterNode, slicer.mrmlScene
    names = []
    for k, first in enumerate((40, 50, 60)):
        (tmp_path / f"case{k}").mkdir()
        path = _slab(tmp_path / f"case{k}", first=first, count=20)
        names.append(_read_volume(slicer, path.rename(path.with_name(f"case{k}.nii.gz"))).GetName())
    assert params.inputVolume.GetName() == "case0"  # the input selector took the first volume loaded
    params.modelPath, params.device, params.makeDifference = str(model_path), "cpu", False
    seen, sampler = _shown_texts(ui.statusLabel)
    ticks, timer = _ticking()
    ui.batchButton.click()
    assert standins.slot_errors == [] and ui.batchButton.text == "Cancel batch" and not ui.applyButton.enabled
    assert _wait(lambda: ui.batchButton.text == "Run batch", timeout=300), ui.statusLabel.text
    timer.stop()
    sampler.stop()
    ticks.append(time.monotonic())
    assert np.diff(ticks).max() < 0.5, f"the event loop stalled for {np.diff(ticks).max():.2f} s"
    assert ui.statusLabel.text == "Batch done: 3 cases; failed: none. Summary: table 'SMILE batch summary'."
    # per-case progress, with per-slice steps, as the status line showed it (sampled every 20 ms; the
    # panel polls every 100 ms): at least two of the three cases, in order, and at least one slice
    # step. 20 slices a case: with 3, an idle machine ran every case between two polls (CI at a49e8c6)
    shown = [k for k in range(3) if any(text.startswith(f"Batch: case {k + 1} of 3 (case{k}): ") for text in seen)]
    assert len(shown) >= 2 and any(": slice " in text for text in seen), seen
    firsts = [next(i for i, text in enumerate(seen) if f"(case{k})" in text) for k in shown]
    assert firsts == sorted(firsts), seen
    table = scene.GetFirstNodeByName("SMILE batch summary").GetTable()
    assert table.GetNumberOfRows() == 3
    assert [table.GetValue(r, 0).ToString() for r in range(3)] == names
    assert all(table.GetValue(r, 2).ToDouble() > 0 and table.GetValue(r, 1).ToDouble() >= 0 for r in range(3))
    for name in names:
        for suffix in ("pseudo-normal", "lesion", "pseudo-abnormal"):
            assert scene.GetFirstNodeByName(f"{name} {suffix}") is not None, (name, suffix)
        assert scene.GetFirstNodeByName(f"{name} difference") is None  # not asked for
    assert ui.batchButton.enabled and ui.applyButton.enabled and not widget._timer.isActive()

    ui.batchButton.click()  # again: the same three cases, not the outputs of the first batch
    batch = widget._batch
    assert batch.count == 3
    # during the second case: its worker started (a case can end between two polls once it has begun
    # its slices, so waiting for a slice done as well missed it on a fast machine)
    assert _wait(lambda: batch.index == 1 and batch.job is not None and batch.job.state == "running", timeout=300)
    tree = _tree(batch.job.process.proc.pid)
    ui.batchButton.click()  # Cancel
    assert _alive(tree, grace=1.0) == []
    assert ui.statusLabel.text == ("Batch cancelled: 1 of 3 cases done; not done: case1, case2. "
                                   "Summary: table 'SMILE batch summary_1'.")
    table = batch.table.GetTable()
    assert table.GetNumberOfRows() == 3 and table.GetValue(2, 3).ToString() == "not done: the batch was cancelled"
    assert scene.GetFirstNodeByName("case0 pseudo-normal_1") is not None  # the case done keeps its outputs
    assert scene.GetFirstNodeByName("case1 pseudo-normal_1") is None
    assert ui.batchButton.text == "Run batch" and standins.slot_errors == []

    ui.batchButton.click()  # a third batch, and File > Close Scene during it: its nodes are going
    batch = widget._batch
    assert _wait(lambda: batch.job is not None and batch.job.process is not None, timeout=60)
    tree = _tree(batch.job.process.proc.pid)
    scene.Clear(0)
    assert _alive(tree, grace=1.0) == [] and batch.state == "cancelled"
    assert ui.statusLabel.text == "Cancelled: the scene was closed." and ui.batchButton.text == "Run batch"
    assert standins.slot_errors == []
    widget.cleanup()
