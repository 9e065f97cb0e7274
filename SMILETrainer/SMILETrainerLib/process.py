"""Background training process: start, follow, stop. Nothing here knows about MRML or qt.

Training runs as ``<python> -m smilecore.cli train ...`` in its own process (inside Slicer the
python is Slicer's own, ``PythonSlicer``), so the application stays responsive. Starting, reading
the console output and stopping the whole process tree are SMILESynthesisLib.background's (this
module depends on SMILESynthesis): no console window on Windows, the last output lines read after
the process ends, the tree killed on Stop and when Slicer closes. Progress comes from the run's
events.jsonl, read incrementally.
"""
from __future__ import annotations

import json
from pathlib import Path

from SMILESynthesisLib.background import BackgroundProcess, default_python, smilecore_parent  # noqa: F401


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


class TrainingProcess(BackgroundProcess):
    def __init__(self, args: list[str], python: str | None = None, env: dict | None = None):
        super().__init__([python or default_python(), "-m", "smilecore.cli", "train", *args], env)
