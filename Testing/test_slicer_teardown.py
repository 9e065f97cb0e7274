"""The widget tests' teardown (slicer_widget_helpers._tear_down): a test that fails in the middle of a
synthesis leaves no worker running and no panel for Python's garbage collector to delete later (a
later test once segfaulted collecting a failed test's Qt objects). Checked by running two widget tests
in a pytest of their own: the first fails while its worker synthesises, the second must then find the
worker's processes dead and the first panel deleted by Qt, and collect garbage without a crash."""
import os
import subprocess
import sys
import textwrap

from slicer_widget_helpers import ROOT

TESTS = textwrap.dedent('''
    import gc, os
    import psutil
    from PyQt5 import sip
    from slicer_widget_helpers import _panel, _read_volume, _slab, _tree, _wait, slicer  # noqa: F401
    made = []

    def test_fails_while_a_synthesis_runs(slicer, tmp_path):
        _, widget = _panel(slicer, "SMILESynthesis")
        made.append(widget.parent)
        widget.ui.inputVolumeSelector.setCurrentNode(_read_volume(slicer, _slab(tmp_path, count=4)))
        widget._parameterNode.device = "cpu"
        widget.ui.applyButton.click()
        job = widget._job
        assert _wait(lambda: job.done >= 1, timeout=240)
        made.extend(_tree(job.process.proc.pid))
        assert False, "a failure in the middle of a synthesis"

    def test_the_next_test_finds_nothing_left(slicer):
        parent, processes = made[0], made[1:]
        assert processes and sip.isdeleted(parent)
        alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == []
        _panel(slicer, "SMILESynthesis")
        gc.collect()
''')


def test_a_failing_widget_test_leaves_no_worker_and_no_widget_behind(tmp_path):
    (tmp_path / "test_two.py").write_text(TESTS)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "Testing"), SMILE_HOME=str(tmp_path / "home"),
               QT_QPA_PLATFORM="offscreen")
    out = subprocess.run([sys.executable, "-m", "pytest", "test_two.py", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]  # a test failure, not a crash
    assert "1 failed, 1 passed" in out.stdout, out.stdout[-3000:]
    assert "a failure in the middle of a synthesis" in out.stdout
