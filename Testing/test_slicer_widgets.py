"""The modules' widget code, driven as a user drives it: Slicer's own Python, real MRML, real Qt widgets
(offscreen) built from the real .ui files, real model files, real training processes. The namespaces
and the few stand-ins (CTK/qMRML widgets, slicer.app) are in slicer_standins.py, which says what each
does not check."""
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SLICER_PYTHON = ROOT.parent / "shared" / "slicer-python"
if not SLICER_PYTHON.is_dir():
    pytest.skip(f"Slicer's own Python sources are not at {SLICER_PYTHON} (a clone without ../shared)",
                allow_module_level=True)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PyQt5", reason="PyQt5 (real Qt 5.15 widgets) is part of the test extras")
pytest.importorskip("slicer", reason="the slicer-core wheel is part of the test extras")
psutil = pytest.importorskip("psutil")
import slicer_standins as standins  # noqa: E402
from smilecore.synthetic import write_cohort  # noqa: E402


@pytest.fixture()
def slicer(tmp_path, monkeypatch):
    monkeypatch.setenv("SMILE_HOME", str(tmp_path / "home"))  # the user's model list stays untouched
    restore = standins.assemble()
    standins.slot_errors.clear()
    import slicer
    yield slicer
    restore()


def _panel(slicer, name):
    module_file, _ = standins.load_module(name)
    widget, parent = standins.make_widget(module_file, name)
    return module_file, widget


def _read_volume(slicer, path):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", Path(path).name.split(".")[0])
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def _wait(until, timeout=180.0):
    """Run Qt's event loop (the trainer panel's timer fires in it) until `until()` or the timeout."""
    from PyQt5 import QtWidgets
    deadline = time.time() + timeout
    while time.time() < deadline:
        QtWidgets.QApplication.processEvents()
        if until():
            return True
        time.sleep(0.05)
    return False


def _site_packages_without(tmp_path, hidden=("torch", "nibabel", "functorch", "torchgen")) -> Path:
    """This environment's packages, less torch and nibabel, as Slicer's Python is before first use."""
    import PyQt5
    site = Path(PyQt5.__file__).resolve().parents[1]
    view = tmp_path / "site-packages"
    view.mkdir()
    for entry in site.iterdir():
        if entry.name.split("-")[0].split(".")[0].lower() not in hidden:
            (view / entry.name).symlink_to(entry)
    return view


def _run_without_torch(tmp_path, script: str) -> dict:
    view = _site_packages_without(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(view), str(ROOT / "Testing")]),
               SMILE_HOME=str(tmp_path / "home"), QT_QPA_PLATFORM="offscreen")
    preamble = "import importlib.util, json, sys\nassert importlib.util.find_spec('torch') is None\n"
    out = subprocess.run([sys.executable, "-S", "-c", preamble + textwrap.dedent(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


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
            "kwargs": sorted(calls[0]), "files": [str(source.uris[0]), str(source.uris[1])],
            "checksums": source.checksums, "models": combo.count, "blocked": combo.signalsBlocked(),
            "applyEnabled": panels["SMILESynthesis"].ui.applyButton.enabled}))
    """)
    assert result["errors"] == []
    assert result["imported"] == []
    assert "loadFileTypes" in result["kwargs"] and "loadFileType" not in result["kwargs"]  # deprecated in 5.10
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


def test_trainer_self_test_passes_and_restores_smile_home(slicer, monkeypatch):
    monkeypatch.setenv("SMILE_HOME", "the user's")
    slicer.app.testing = True
    standins.load_module("SMILESynthesis")
    _, module = standins.load_module("SMILETrainer")
    module.runTest()
    assert os.environ["SMILE_HOME"] == "the user's"


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
    # a scene saved before the choice was symbolic (the old installation's path) loads too
    assert logic.model_file("/Applications/Slicer-5.8/lib/qt-scripted-modules/smilecore/resources/"
                            + installed.name) == moved / installed.name


# ---- SMILETrainer --------------------------------------------------------------------------------
def test_trainer_panel_ranges_paths_and_dataset_summary(slicer, tmp_path):
    _, widget = _panel(slicer, "SMILETrainer")
    ui = widget.ui
    assert (ui.epochsSpinBox.minimum, ui.epochsSpinBox.maximum) == (1, 1000)
    assert (ui.batchSizeSpinBox.minimum, ui.batchSizeSpinBox.maximum) == (1, 512)
    assert (ui.learningRateSpinBox.minimum, ui.learningRateSpinBox.maximum) == (1e-6, 0.1)
    assert ui.dataDirLineEdit.currentPath not in ("", ".") and ui.outputDirLineEdit.currentPath not in ("", ".")
    small = write_cohort(tmp_path / "small", n_cases=3, shape=(24, 24, 8), unlabeled=1)
    large = write_cohort(tmp_path / "large", n_cases=5, shape=(24, 24, 8), unlabeled=0)
    ui.dataDirLineEdit.currentPath = str(small)
    assert ui.datasetInfoLabel.text.startswith(f"3 cases found in {small}")
    ui.dataDirLineEdit.currentPath = str(large)
    assert ui.datasetInfoLabel.text.startswith(f"5 cases found in {large}: 5 labelled")
    ui.modalityComboBox.currentIndex = [ui.modalityComboBox.itemText(i)
                                        for i in range(ui.modalityComboBox.count)].index("flair")
    assert widget._parameterNode.modality == "flair"
    assert "No flair image in" in ui.datasetInfoLabel.text
    assert standins.slot_errors == []
    widget.cleanup()


def _tree(pid):
    try:
        parent = psutil.Process(pid)
        return [parent] + parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(processes, grace=10.0):
    """Those still running after `grace` seconds (SIGKILL is delivered asynchronously; a zombie is dead)."""
    deadline = time.time() + grace
    while True:
        alive = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.05)


def test_trainer_panel_start_stop_resume_and_cleanup(slicer, tmp_path, monkeypatch):
    # PythonSlicer on PATH as a launcher that starts the interpreter as its child (as on Windows), so
    # that Stop has a tree to kill.
    launcher = tmp_path / "bin" / "PythonSlicer"
    launcher.parent.mkdir()
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{launcher.parent}{os.pathsep}{os.environ['PATH']}")
    data = write_cohort(tmp_path / "data", n_cases=4, shape=(24, 24, 8), unlabeled=1)
    standins.load_module("SMILESynthesis")
    _, widget = _panel(slicer, "SMILETrainer")
    ui, lib = widget.ui, widget.logic.lib
    ui.dataDirLineEdit.currentPath = str(data)
    ui.outputDirLineEdit.currentPath = str(tmp_path / "run")
    ui.epochsSpinBox.value, ui.batchSizeSpinBox.value = 3, 2
    ui.deviceComboBox.currentIndex = 2  # cpu

    ui.startButton.click()
    assert standins.slot_errors == [] and lib.running, lib.log
    assert ui.stopButton.enabled and not ui.startButton.enabled
    assert slicer.modules.plots.logic().shown == [lib.chart]
    assert _wait(lambda: lib.table is not None and lib.table.GetTable().GetNumberOfRows() >= 1
                 and (tmp_path / "run" / "checkpoint.pt").is_file()), lib.log  # written at each epoch's end
    assert ui.phaseProgressBar.value > 0 and ui.statusLabel.text.startswith("Phase")
    assert lib.chart.GetNumberOfPlotSeriesNodes() >= 3
    rows = lib.table.GetTable().GetNumberOfRows()
    slicer.mrmlScene.Clear(0)  # File > Close Scene during the training (issue 22, 7)
    assert slicer.mrmlScene.IsNodePresent(lib.table) and lib.table.GetTable().GetNumberOfRows() >= rows
    assert slicer.modules.plots.logic().shown[-1] is lib.chart and slicer.mrmlScene.IsNodePresent(lib.chart)
    assert lib.chart.GetNumberOfPlotSeriesNodes() >= 3 and widget._parameterNode is not None
    # the new scene has a new parameter node (Slicer's rule): the settings are chosen again for Resume
    ui.dataDirLineEdit.currentPath = str(data)
    ui.outputDirLineEdit.currentPath = str(tmp_path / "run")
    ui.epochsSpinBox.value, ui.batchSizeSpinBox.value = 3, 2
    ui.deviceComboBox.currentIndex = 2  # cpu
    tree = _tree(lib.process.proc.pid)
    assert len(tree) >= 2  # the launcher and the training interpreter
    ui.stopButton.click()
    assert _alive(tree) == [] and not lib.running
    assert ui.startButton.enabled and ui.resumeButton.enabled

    stopped_at = lib.last_step["global_step"]
    ui.resumeButton.click()
    assert standins.slot_errors == [] and lib.running, lib.log
    assert _wait(lambda: lib.last_step is not None and lib.last_step["global_step"] > stopped_at), lib.log
    tree = _tree(lib.process.proc.pid)
    widget.cleanup()  # what Slicer calls when it closes
    assert _alive(tree) == []


def test_stop_without_psutil_kills_the_group_or_calls_taskkill(monkeypatch, tmp_path):
    sys.path[:0] = [str(ROOT / "SMILETrainer"), str(ROOT / "SMILESynthesis")]
    try:
        from SMILESynthesisLib import background
        from SMILETrainerLib import process
    finally:
        sys.path.remove(str(ROOT / "SMILETrainer"))
        sys.path.remove(str(ROOT / "SMILESynthesis"))
    import builtins
    real_import = builtins.__import__

    def import_without_psutil(name, *args, **kwargs):  # for process.stop() only: psutil uses itself
        if name == "psutil" and sys._getframe(1).f_globals.get("__name__") == background.__name__:
            raise ImportError("psutil hidden by the test")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", import_without_psutil)
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    run = process.TrainingProcess([], python=sys.executable)
    run.command = [sys.executable, "-c", script]
    run.start()
    assert _wait(lambda: len(_tree(run.proc.pid)) >= 2, timeout=30)
    tree = _tree(run.proc.pid)
    run.stop()
    assert _alive(tree) == []

    calls = []
    windows_os = type("WindowsOs", (), {"name": "nt", "__getattr__": lambda self, a: getattr(os, a)})()
    monkeypatch.setattr(background, "os", windows_os)  # os.name for background.py only (pathlib reads it too)
    monkeypatch.setattr(background.subprocess, "run", lambda args, **kw: calls.append(args))
    fake = process.TrainingProcess([], python=sys.executable)
    fake.proc = type("P", (), {"pid": 4321, "poll": lambda self: None, "wait": lambda self, t: 0})()
    fake.stop()
    assert calls == [["taskkill", "/T", "/F", "/PID", "4321"]]  # (no console window: CREATE_NO_WINDOW)


def test_psutil_is_installed_with_the_other_dependencies(monkeypatch):
    sys.path.insert(0, str(ROOT / "SMILESynthesis"))
    try:
        from SMILESynthesisLib import dependencies
    finally:
        sys.path.remove(str(ROOT / "SMILESynthesis"))
    find_spec = dependencies.importlib.util.find_spec
    monkeypatch.setattr(dependencies.importlib.util, "find_spec", lambda n: None if n == "psutil" else find_spec(n))
    assert [r for r in dependencies.missing_pip_packages() if r.startswith("psutil")]


# ---- SMILESynthesis in the background (issue 22) ---------------------------------------------------
def _slab(tmp_path, every=3, first=45, count=8) -> Path:
    """A small real case: `count` slices of the bundled sample through the tumour, every `every`-th
    (so `every` mm thick: the engine notes slices thicker than twice the model's 1 mm), as NIfTI."""
    import nibabel as nib
    image = nib.load(next((ROOT / "smilecore" / "resources" / "sample").glob("*_t2.nii.gz")))
    data = np.asarray(image.dataobj)[:, :, first:first + every * count:every].astype(np.float32)
    affine = image.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, every, first], [0, 0, 0, 1.0]])
    path = tmp_path / "slab.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _node_ids(scene):
    return [scene.GetNthNode(k).GetID() for k in range(scene.GetNumberOfNodes())]


def _ticking():
    """Timestamps of a 50 ms QTimer: the moments Qt's event loop ran (a repaint can happen only then)."""
    from PyQt5 import QtCore
    ticks = [time.monotonic()]
    timer = QtCore.QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    return ticks, timer


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
    """Issue 22, 1, 8 and 11: Cancel mid-run kills the worker within 1 s with the scene unchanged; a
    Cancel on the last slice's progress says "Cancelled" only when nothing was written; cleanup cancels."""
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

    # Cancel pressed when the last slice's progress shows: either nothing was written and the panel says
    # so, or the outputs were written and it does not say "Cancelled".
    pressed_at_end = []
    ui.progressBar.valueChanged.connect(
        lambda v: v == ui.progressBar.maximum and not pressed_at_end and ui.applyButton.text == "Cancel"
        and pressed_at_end.append(ui.applyButton.click() or True))
    ui.applyButton.click()
    assert _wait(lambda: ui.applyButton.text == "Apply", timeout=240)
    assert pressed_at_end
    if ui.statusLabel.text.startswith("Cancelled"):
        assert _node_ids(scene) == before
    else:
        assert params.pseudoNormalVolume is not None

    ui.progressBar.valueChanged.disconnect()
    ui.applyButton.click()
    job = widget._job
    tree = _tree(job.process.proc.pid)
    widget.cleanup()  # the module is unloaded or Slicer closes during a synthesis
    assert _alive(tree, grace=1.0) == [] and job.state == "cancelled"


# ---- SMILETrainer defects (issue 22, 7) ----------------------------------------------------------------
def test_a_training_process_that_dies_without_an_error_event_gives_an_error_dialog(slicer, tmp_path, monkeypatch):
    launcher = tmp_path / "bin" / "PythonSlicer"
    launcher.parent.mkdir()
    launcher.write_text('#!/bin/sh\necho "Killed (out of memory)"\nexit 137\n')  # as the kernel's OOM killer
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{launcher.parent}{os.pathsep}{os.environ['PATH']}")
    data = write_cohort(tmp_path / "data", n_cases=3, shape=(24, 24, 8), unlabeled=1)
    standins.load_module("SMILESynthesis")
    _, widget = _panel(slicer, "SMILETrainer")
    shown = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: shown.append((text, kw)))
    ui, lib = widget.ui, widget.logic.lib
    ui.dataDirLineEdit.currentPath = str(data)
    ui.outputDirLineEdit.currentPath = str(tmp_path / "run")
    ui.startButton.click()
    assert standins.slot_errors == [] and lib.process is not None, shown
    assert _wait(lambda: shown, timeout=30), lib.log
    text, kw = shown[0]
    assert text.startswith("Training failed: the training process ended without reporting why (exit code 137)")
    assert "Killed (out of memory)" in text and ui.statusLabel.text == "Training failed."
    assert ui.startButton.enabled and not ui.stopButton.enabled
    widget.cleanup()


def test_the_last_output_lines_of_a_process_are_read(monkeypatch):
    """The reader thread may still hold the last lines when the process has ended: they are waited for."""
    sys.path.insert(0, str(ROOT / "SMILETrainer"))
    sys.path.insert(0, str(ROOT / "SMILESynthesis"))
    try:
        from SMILETrainerLib import process
    finally:
        sys.path.remove(str(ROOT / "SMILETrainer"))
        sys.path.remove(str(ROOT / "SMILESynthesis"))
    run = process.TrainingProcess([], python=sys.executable)
    run.command = [sys.executable, "-c", "for i in range(2000): print('line', i)"]
    put = run.output.put
    monkeypatch.setattr(run.output, "put", lambda line: time.sleep(0.0005) or put(line))  # a slow reader
    run.start()
    run.proc.wait()
    lines = run.output_lines()
    assert len(lines) == 2000 and lines[-1] == "line 1999"


def test_trainer_dataset_summary_after_install_lr_schedule_and_hidden_console(slicer, tmp_path, monkeypatch):
    _, widget = _panel(slicer, "SMILETrainer")
    ui = widget.ui
    import SMILETrainerLib
    scan = SMILETrainerLib.scan_dataset

    def without_nibabel(*args):
        raise ModuleNotFoundError("No module named 'nibabel'", name="nibabel")
    monkeypatch.setattr(SMILETrainerLib, "scan_dataset", without_nibabel)
    small = write_cohort(tmp_path / "small", n_cases=3, shape=(24, 24, 8), unlabeled=1)
    ui.dataDirLineEdit.currentPath = str(small)
    assert ui.datasetInfoLabel.text == "The dataset summary needs nibabel, which Start installs (with your consent)."
    monkeypatch.setattr(SMILETrainerLib, "scan_dataset", scan)  # Start installed it
    started = []
    monkeypatch.setattr(widget.logic, "ensureDependencies", lambda: None)
    monkeypatch.setattr(widget.logic, "start", lambda params, resume: started.append(widget.logic.settings(params)))
    monkeypatch.setattr(widget.logic, "showPlot", lambda: None)
    from smilecore.train import LR_SCHEDULES
    assert [ui.lrScheduleComboBox.itemText(i) for i in range(ui.lrScheduleComboBox.count)] == list(LR_SCHEDULES)
    ui.lrScheduleComboBox.currentIndex = 1
    assert widget._parameterNode.lrSchedule == "cosine"
    ui.startButton.click()
    widget._timer.stop()
    assert ui.datasetInfoLabel.text.startswith(f"3 cases found in {small}")
    args = started[0].cli_args()
    assert args[args.index("--lr-schedule") + 1] == "cosine"
    assert standins.slot_errors == []
    widget.cleanup()

    # Windows: no console window (hidden as slicer.util.launchConsoleProcess hides it, and none created)
    from SMILESynthesisLib import background
    calls = []

    class StartupInfo:
        dwFlags, wShowWindow = 0, 1
    windows_os = type("WindowsOs", (), {"name": "nt", "__getattr__": lambda self, a: getattr(os, a)})()
    monkeypatch.setattr(background, "os", windows_os)
    monkeypatch.setattr(background.subprocess, "STARTUPINFO", StartupInfo, raising=False)
    monkeypatch.setattr(background.subprocess, "Popen", lambda *a, **kw: calls.append(kw) or (_ for _ in ()).throw(
        OSError("not started by the test")))
    with pytest.raises(OSError):
        background.BackgroundProcess(["PythonSlicer.exe", "-c", "pass"]).start()
    info = calls[0]["startupinfo"]
    assert info.dwFlags & 1 and info.wShowWindow == 0  # STARTF_USESHOWWINDOW, SW_HIDE
    assert calls[0]["creationflags"] & 0x08000000 and calls[0]["creationflags"] & 0x00000200  # NO_WINDOW, GROUP


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
        path = _slab(tmp_path / f"case{k}", first=first, count=3)
        names.append(_read_volume(slicer, path.rename(path.with_name(f"case{k}.nii.gz"))).GetName())
    assert params.inputVolume.GetName() == "case0"  # the input selector took the first volume loaded
    params.modelPath, params.device, params.makeDifference = str(model_path), "cpu", False
    seen = []
    ui.progressBar.valueChanged.connect(lambda v: seen.append(ui.statusLabel.text))
    ticks, timer = _ticking()
    ui.batchButton.click()
    assert standins.slot_errors == [] and ui.batchButton.text == "Cancel batch" and not ui.applyButton.enabled
    assert _wait(lambda: ui.batchButton.text == "Run batch", timeout=300), ui.statusLabel.text
    timer.stop()
    ticks.append(time.monotonic())
    assert np.diff(ticks).max() < 0.5, f"the event loop stalled for {np.diff(ticks).max():.2f} s"
    assert ui.statusLabel.text == "Batch done: 3 cases; failed: none. Summary: table 'SMILE batch summary'."
    for k in range(3):
        assert any(text.startswith(f"Batch: case {k + 1} of 3 (case{k}): slice") for text in seen), seen
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
    assert _wait(lambda: batch.index == 1 and batch.job is not None and batch.job.done >= 1, timeout=300)
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
    widget.cleanup()


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


# ---- the stand-ins as strict as the real widgets (issue 22, 9) ---------------------------------------------
def _combo(scene, types, **options):
    combo = standins.qMRMLNodeComboBox()
    combo.setNodeTypes(types)
    for name, value in options.items():
        getattr(combo, "set" + name[0].upper() + name[1:])(value)
    if scene is not None:
        combo.setMRMLScene(scene)
    return combo


def test_the_node_combo_box_stand_in_lists_and_selects_as_slicers(slicer):
    """The rules of qMRMLNodeComboBox.cxx and qMRMLSortFilterProxyModel.cxx (Slicer v5.10.0), over a real
    QComboBox: filters by IsA, showChildNodeTypes, hideChildNodeTypes and the hidden flag; the first listed
    node selected when None is not enabled; a removed current node replaced as QComboBox replaces a row."""
    scene = slicer.vtkMRMLScene()
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hidden").SetHideFromEditors(True)
    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image")
    scalar = ["vtkMRMLScalarVolumeNode"]
    exact = _combo(scene, scalar, showChildNodeTypes=False)
    assert exact.nodeCount() == 1 and exact.currentNode() is image  # labels not listed, hidden not listed
    assert _combo(scene, scalar).currentNode() is labels  # subclasses listed (IsA), first one selected
    assert _combo(scene, scalar, hideChildNodeTypes=["vtkMRMLLabelMapVolumeNode"]).currentNode() is image
    assert _combo(scene, scalar, noneEnabled=True).currentNode() is None
    changes = []
    exact.currentNodeChanged.connect(changes.append)
    exact.setCurrentNode(labels)  # not listed: no node, silently
    assert exact.currentNode() is None and changes == [None]

    empty = slicer.vtkMRMLScene()
    plain, with_actions = _combo(empty, scalar), _combo(empty, scalar, addEnabled=True)
    first = empty.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "first")
    assert plain.currentNode() is first  # QComboBox selects a first row
    assert with_actions.currentNode() is None  # the action rows were there first: nothing selected
    empty.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "second")
    assert plain.currentNode() is first

    outputs = slicer.vtkMRMLScene()
    a, b, c = (outputs.AddNewNodeByClass("vtkMRMLScalarVolumeNode", n) for n in "abc")
    output = _combo(outputs, scalar, noneEnabled=True, addEnabled=True, renameEnabled=True)
    output.setCurrentNode(b)
    outputs.RemoveNode(b)
    assert output.currentNode() is c  # the row now at its place
    outputs.RemoveNode(c)
    assert output.currentNode() is a  # its place is the separator: the last listed node
    later = _combo(None, scalar)
    later.setCurrentNode(a)  # asked for before the scene is set
    later.setMRMLScene(outputs)
    assert later.currentNode() is a


def test_the_synthesis_panel_under_the_strict_stand_ins(slicer):
    """What the stricter qMRMLNodeComboBox stand-in exposed: a label map first in the scene was taken as the
    input (the real selector lists scalar volumes only and showed none); a deleted output node was replaced,
    as the real selector does, by another volume, which the next Apply would have overwritten."""
    scene = slicer.mrmlScene
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image")
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params = widget.ui, widget._parameterNode
    assert params.inputVolume is image and ui.inputVolumeSelector.currentNode() is image
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another case")
    output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image pseudo-normal")
    ui.pseudoNormalSelector.setCurrentNode(output)
    assert params.pseudoNormalVolume is output
    scene.RemoveNode(output)
    assert params.pseudoNormalVolume is None and ui.pseudoNormalSelector.currentNode() is None
    assert other is not None and params.inputVolume is image and standins.slot_errors == []
    widget.cleanup()


def test_the_catalog_screenshot_is_a_result_beside_the_panel():
    """Issue 22, 10: the PNG named by the screenshot URL (CMakeLists.txt, SMILE.s4ext) is what
    scripts/catalog_screenshot.py writes: the panel (light) left, the overview of a run on the bundled
    case (brain slices on black) right, under 300 KB. The one before showed the panel alone, "Cancelled"."""
    import re

    from PIL import Image
    url = re.search(r'EXTENSION_SCREENSHOTURLS "([^"]+)"', (ROOT / "CMakeLists.txt").read_text())[1]
    s4ext = (ROOT / "SMILE.s4ext").read_text()
    assert f"screenshoturls {url}\n" in s4ext
    path = ROOT / url.split("/main/", 1)[1]
    assert path.is_file() and path.stat().st_size < 300 * 1024
    grey = np.asarray(Image.open(path).convert("L"), float)
    height, width = grey.shape
    panel, figure = grey[: int(height * 0.8), : int(width * 0.4)], grey[: int(height * 0.8), int(width * 0.55):]
    assert (panel > 200).mean() > 0.5 and (figure < 16).mean() > 0.3
    assert 0.05 < ((figure > 60) & (figure < 250)).mean()  # grey tissue, not an empty black box
