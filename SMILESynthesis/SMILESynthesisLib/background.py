"""A Python process in the background: start it with no console window, read its output on a thread,
stop it with every process it started. Nothing here knows about MRML or qt; the synthesis job
(job.py) and the training (SMILETrainerLib/process.py) are built on it.

Inside Slicer the python is Slicer's own, ``PythonSlicer`` (a launcher that starts the real
interpreter as its child), so that the application stays responsive. On Windows the console window
is hidden as `slicer.util.launchConsoleProcess` hides it (STARTUPINFO with SW_HIDE), and the process
is started without a console (CREATE_NO_WINDOW) in its own process group, so that no window can
be closed by the user to kill the work and Ctrl-C in Slicer's console does not reach it. Stop kills
the whole process tree: with psutil (installed with the other dependencies) children first, then
the process; without it the process group on POSIX (the process starts a new session) and
`taskkill /T /F` on Windows. A process still running when Python exits (Slicer closing) is stopped.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path

from .i18n import tr as _

_RUNNING: weakref.WeakSet = weakref.WeakSet()  # started and not yet stopped, stopped at exit

# Windows process-creation values (winbase.h); subprocess defines them on Windows only.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW = 0x00000001
SW_HIDE = 0


def smilecore_parent() -> Path:
    """The folder that holds the engine package, found without importing it (torch, nibabel)."""
    import importlib.util
    spec = importlib.util.find_spec("smilecore")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(_("the SMILE engine (smilecore) is missing from this installation"))
    return Path(spec.origin).resolve().parent.parent


def default_python() -> str:
    """Slicer's own python when inside Slicer (sys.executable is then the application), else this
    interpreter."""
    import shutil
    return shutil.which("PythonSlicer") or sys.executable


def popen_options() -> dict:
    """Keyword arguments of subprocess.Popen: hidden console and own process group on Windows (as
    slicer.util.launchConsoleProcess hides it), a new session elsewhere (so that the group can be killed)."""
    if os.name == "nt":
        info = subprocess.STARTUPINFO()
        info.dwFlags |= STARTF_USESHOWWINDOW
        info.wShowWindow = SW_HIDE
        return {"startupinfo": info, "creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


class BackgroundProcess:
    def __init__(self, command: list[str], env: dict | None = None):
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(smilecore_parent())] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.env["PYTHONUNBUFFERED"] = "1"
        self.proc: subprocess.Popen | None = None
        self.output: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self):
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env, text=True, bufsize=1,
                                     **popen_options())
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        _RUNNING.add(self)
        return self

    def _pump(self):
        for line in self.proc.stdout:
            self.output.put(line.rstrip("\n"))
        self.proc.stdout.close()

    def output_lines(self, wait: float = 5.0) -> list[str]:
        """The lines written since the last call. Once the process has ended, its last lines may still
        be in the pipe: they are waited for (up to `wait` seconds), so that none is missed."""
        if self.proc is not None and self.proc.poll() is not None and self._reader is not None:
            self._reader.join(wait)  # once: a grandchild that keeps the pipe open delays one poll only
            self._reader = None
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
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.proc.pid)], capture_output=True,
                           creationflags=CREATE_NO_WINDOW)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout)


@atexit.register
def _stop_all():
    for process in list(_RUNNING):
        process.stop()
