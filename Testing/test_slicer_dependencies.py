"""Issue 22, 8: the offer to install on first use. The module logic's ensureDependencies() with Slicer's
own slicer.util.confirmOkCancelDisplay (a real QMessageBox, answered by a timer as a user answers it),
in a Python whose site-packages lack tqdm and psutil (as Slicer's before first use). Only pip itself,
slicer.util.pip_install, is replaced: it records what it is asked to install."""
import json
import os
import subprocess
import sys
import textwrap

from slicer_widget_helpers import ROOT, _site_packages_without

SCRIPT = textwrap.dedent("""
    import importlib.util, json
    assert importlib.util.find_spec("tqdm") is None and importlib.util.find_spec("psutil") is None
    import slicer_standins as standins
    standins.assemble()
    from PyQt5 import QtCore, QtWidgets
    import slicer
    module_file, _ = standins.load_module("SMILESynthesis")
    logic = module_file.SMILESynthesisLogic()
    pip = []
    slicer.util.pip_install = pip.append
    answer, shown, result = [], [], {}

    def click():  # what the user does with the dialog
        box = QtWidgets.QApplication.activeModalWidget()
        if box is None:
            return QtCore.QTimer.singleShot(50, click)
        shown.append(QtWidgets.QMessageBox.text(box))
        box.button(QtWidgets.QMessageBox.Ok if answer[-1] else QtWidgets.QMessageBox.Cancel).click()

    def ask_twice():
        for accept in (False, True):
            answer.append(accept)
            QtCore.QTimer.singleShot(50, click)
            try:
                logic.ensureDependencies()
                result[str(accept)] = "ok"
            except Exception as exc:
                result[str(accept)] = f"{type(exc).__name__}: {exc}"
            result[f"pip after {accept}"] = list(pip)
        loop.quit()

    # from inside an event loop, as a click on Apply in Slicer: the message box's deleteLater() waits for it
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(0, ask_twice)
    loop.exec_()
    print(json.dumps({"result": result, "shown": shown}))
""")


def test_declining_installs_nothing_and_says_so_accepting_installs_the_missing_packages(tmp_path):
    view = _site_packages_without(tmp_path, hidden=("tqdm", "psutil"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(view), str(ROOT / "Testing")]),
               SMILE_HOME=str(tmp_path / "home"), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-S", "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    result, shown = report["result"], report["shown"]
    assert len(shown) == 2 and all("tqdm>=4.60\npsutil>=5" in text for text in shown), shown  # the dialog lists them
    assert result["pip after False"] == []  # declined: nothing installed
    assert result["False"] == ("DependencyError: SMILE cannot run without the Python packages tqdm>=4.60, "
                               "psutil>=5, which were not installed: you declined. Press Apply again to install them.")
    assert result["True"] == "ok" and result["pip after True"] == [["tqdm>=4.60", "psutil>=5"]]
