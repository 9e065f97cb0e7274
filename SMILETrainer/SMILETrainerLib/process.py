"""Background training process: start, follow, stop. Nothing here knows about MRML or qt.

Training runs as ``<python> -m smilecore.cli train ...`` in its own process (inside Slicer the
python is Slicer's own, ``PythonSlicer``), so the application stays responsive. Its console
output is read on a thread into a queue; its progress comes from the run's events.jsonl, read
incrementally. Stop kills the whole process tree: with psutil (installed with the other
dependencies) children first, then the process; without it the process group on POSIX (the process
starts a new session) and `taskkill /T /F` on Windows, where PythonSlicer.exe is a launcher that starts
the real interpreter as a child. A process still running when Python exits (Slicer closing) is stopped.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path

_RUNNING: weakref.WeakSet = weakref.WeakSet()  # started and not yet stopped, stopped at exit


def smilecore_parent() -> Path:
    import smilecore
    return Path(smilecore.__file__).resolve().parent.parent


def default_python() -> str:
    """Slicer's own python when inside Slicer, else this interpreter."""
    import shutil
    return shutil.which("PythonSlicer") or sys.executable


class EventFollower:
    """Reads complete new lines of a JSON-lines file since the last call."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # incomplete last line (or b"")
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class TrainingProcess:
    def __init__(self, args: list[str], python: str | None = None, env: dict | None = None):
        self.command = [python or default_python(), "-m", "smilecore.cli", "train", *args]
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(smilecore_parent())] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.env["PYTHONUNBUFFERED"] = "1"
        self.proc: subprocess.Popen | None = None
        self.output: queue.Queue[str] = queue.Queue()

    def start(self):
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env, text=True, bufsize=1, **kwargs)
        threading.Thread(target=self._pump, daemon=True).start()
        _RUNNING.add(self)
        return self

    def _pump(self):
        for line in self.proc.stdout:
            self.output.put(line.rstrip("\n"))
        self.proc.stdout.close()

    def output_lines(self) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(self.output.get_nowait())
            except queue.Empty:
                return lines

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0):
        """Kill the process and every process it started."""
        _RUNNING.discard(self)
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            import psutil
        except ImportError:
            psutil = None
        if psutil is not None:
            with contextlib.suppress(psutil.NoSuchProcess):  # each may end meanwhile
                parent = psutil.Process(self.proc.pid)
                for process in parent.children(recursive=True) + [parent]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()
        elif os.name == "nt":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.proc.pid)], capture_output=True)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout)


@atexit.register
def _stop_all():
    for process in list(_RUNNING):
        process.stop()
