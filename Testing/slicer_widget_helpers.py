"""What the widget tests share: the skips (no ../shared, no test extras), the `slicer` fixture that
assembles the namespaces of slicer_standins.py, and helpers to drive panels, read real volumes, wait on
Qt's event loop and watch processes."""
import json
import os
import subprocess
import sys
import textwrap
import time
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


@pytest.fixture()
def slicer(tmp_path, monkeypatch):
    monkeypatch.setenv("SMILE_HOME", str(tmp_path / "home"))  # the user's model list stays untouched
    restore = standins.assemble()
    standins.slot_errors.clear()
    import slicer
    try:
        yield slicer
    finally:
        _tear_down()
        restore()


_made: list = []  # this test's panels (widget, parent) and QTimers, for _tear_down


def _tear_down():
    """What a test made, undone whether it passed or failed (a failing test skips its own cleanup):
    timers stopped, each panel's cleanup() run (a synthesis, batch or training still running is
    cancelled and its processes killed), and the Qt objects deleted now, in Qt's order, rather than
    by Python's garbage collector during a later test (which once crashed a run after a failure)."""
    from PyQt5 import QtCore, QtWidgets, sip
    for thing in reversed(_made):
        widget, parent = thing if isinstance(thing, tuple) else (None, thing)
        timer = getattr(widget, "_timer", None)
        for qobject in (timer, parent):
            if qobject is not None and not sip.isdeleted(qobject):
                if isinstance(qobject, QtCore.QTimer):
                    qobject.stop()
                qobject.deleteLater()
        if widget is not None:
            try:
                widget.cleanup()  # twice is harmless: each step checks what is left to do
            except Exception as exc:  # noqa: BLE001 (the test's own failure is the one to report)
                print(f"teardown: {type(widget).__name__}.cleanup() raised {exc!r}")
    _made.clear()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.DeferredDelete)
    QtWidgets.QApplication.processEvents()


def _panel(slicer, name):
    module_file, _ = standins.load_module(name)
    widget, parent = standins.make_widget(module_file, name)
    _made.append((widget, parent))
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


def _shown_texts(label):
    """Every text `label` shows for 20 ms or more, in order (a 20 ms QTimer samples it): what a
    user could read, whichever poll of the panel set it."""
    from PyQt5 import QtCore
    seen = []
    timer = QtCore.QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: seen[-1:] == [label.text] or seen.append(label.text))
    timer.start()
    _made.append(timer)
    return seen, timer


def _ticking():
    """Timestamps of a 50 ms QTimer: the moments Qt's event loop ran (a repaint can happen only then)."""
    from PyQt5 import QtCore
    ticks = [time.monotonic()]
    timer = QtCore.QTimer()
    timer.setInterval(50)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()
    _made.append(timer)
    return ticks, timer
