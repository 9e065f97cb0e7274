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
def test_synthesis_panel_apply_review_cancel(slicer, cohort, tmp_path):
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params = widget.ui, widget._parameterNode
    assert [ui.deviceComboBox.itemText(i) for i in range(ui.deviceComboBox.count)] == ["auto", "cuda", "cpu"]
    assert ui.modelPathLineEdit.currentPath not in ("", ".")
    assert not ui.applyButton.enabled
    ui.deviceComboBox.currentIndex = 2
    assert params.device == "cpu"
    volume = _read_volume(slicer, cohort / "Synth_000" / "Synth_000_t2.nii.gz")
    ui.inputVolumeSelector.setCurrentNode(volume)
    assert ui.applyButton.enabled
    ui.modelComboBox.currentIndex = ui.modelComboBox.count - 1  # "Model file below": type a path
    ui.modelPathLineEdit.currentPath = str(tmp_path / "elsewhere.pt")
    assert params.modelPath == tmp_path / "elsewhere.pt"
    ui.modelComboBox.currentIndex = 0  # back to the bundled default model
    assert params.modelPath.name == "smile-default-t2.pt" and params.modelPath.is_file()

    ui.applyButton.click()
    assert standins.slot_errors == []
    assert ui.statusLabel.text == "Done."
    for node in (params.pseudoNormalVolume, params.lesionSegmentation, params.pseudoAbnormalVolume):
        assert node is not None and slicer.mrmlScene.IsNodePresent(node)
    assert ui.pseudoNormalSelector.currentNode() is params.pseudoNormalVolume
    segment = params.lesionSegmentation.GetSegmentation().GetNthSegment(0)
    tag = segment.GetTerminology()
    # Slicer lists Neoplasm (SCT 108369006) in this context only (SegmentationCategoryTypeModifier-DICOM-Master.json)
    assert tag.split("~")[0] == "Segmentation category and type - DICOM master list" and "^108369006^" in tag
    assert ui.reviewButton.enabled

    from SMILESynthesisLib import nodes
    data, _ = nodes.array_from_volume(volume)
    painted = np.zeros(data.shape, bool)
    painted[10:20, 12:22, 6:10] = True  # the user's edited lesion
    nodes.mask_to_segmentation(slicer.mrmlScene, painted, volume, params.lesionSegmentation)
    ui.reviewButton.click()
    assert standins.slot_errors == []
    pseudo_normal = nodes.array_from_volume(params.pseudoNormalVolume)[0]
    assert np.array_equal(pseudo_normal[~painted], data[~painted])
    assert not np.array_equal(pseudo_normal[painted], data[painted])

    before = pseudo_normal.copy()
    clicks = []
    ui.progressBar.valueChanged.connect(lambda v: clicks or clicks.append(ui.applyButton.click()))
    assert ui.applyButton.text == "Apply"
    ui.applyButton.click()  # Apply; its first progress step presses the same button, now Cancel
    assert clicks and ui.statusLabel.text.startswith("Cancelled")
    assert np.array_equal(nodes.array_from_volume(params.pseudoNormalVolume)[0], before)
    assert ui.applyButton.text == "Apply" and ui.applyButton.enabled

    picture = ui.applyButton.window().grab()
    assert picture.width() > 200 and picture.height() > 300
    if os.environ.get("SMILE_WRITE_SCREENSHOT"):  # refreshes the catalog's screenshot (docs/screenshots)
        picture.save(str(ROOT / "docs" / "screenshots" / "SMILESynthesis-panel.png"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        widget.cleanup()
    assert [str(w.message) for w in caught] == []


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
    sys.path.insert(0, str(ROOT / "SMILETrainer"))
    try:
        from SMILETrainerLib import process
    finally:
        sys.path.remove(str(ROOT / "SMILETrainer"))
    import builtins
    real_import = builtins.__import__

    def import_without_psutil(name, *args, **kwargs):  # for process.stop() only: psutil uses itself
        if name == "psutil" and sys._getframe(1).f_globals.get("__name__") == process.__name__:
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
    monkeypatch.setattr(process, "os", windows_os)  # os.name for process.py only (pathlib reads it too)
    monkeypatch.setattr(process.subprocess, "run", lambda args, **kw: calls.append(args))
    fake = process.TrainingProcess([], python=sys.executable)
    fake.proc = type("P", (), {"pid": 4321, "poll": lambda self: None, "wait": lambda self, t: 0})()
    fake.stop()
    assert calls == [["taskkill", "/T", "/F", "/PID", "4321"]]


def test_psutil_is_installed_with_the_other_dependencies(monkeypatch):
    sys.path.insert(0, str(ROOT / "SMILESynthesis"))
    try:
        from SMILESynthesisLib import dependencies
    finally:
        sys.path.remove(str(ROOT / "SMILESynthesis"))
    find_spec = dependencies.importlib.util.find_spec
    monkeypatch.setattr(dependencies.importlib.util, "find_spec", lambda n: None if n == "psutil" else find_spec(n))
    assert [r for r in dependencies.missing_pip_packages() if r.startswith("psutil")]
