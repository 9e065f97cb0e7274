"""The SMILE Trainer panel driven as a user drives it (real Qt widgets from its .ui, real MRML, real
training processes); shared helpers and the `slicer` fixture: slicer_widget_helpers.py."""
import os
import sys
import time

import pytest

from slicer_widget_helpers import (ROOT, _alive, _panel, _tree, _wait, slicer,  # noqa: F401 (slicer: the fixture)
                                   standins)
from smilecore.synthetic import write_cohort


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


def test_trainer_self_test_passes_and_restores_smile_home(slicer, monkeypatch):
    monkeypatch.setenv("SMILE_HOME", "the user's")
    slicer.app.testing = True
    standins.load_module("SMILESynthesis")
    _, module = standins.load_module("SMILETrainer")
    module.runTest()
    assert os.environ["SMILE_HOME"] == "the user's"
