"""A small list of trained models the user has made, so that every front end offers them.

Stored as JSON in ``$SMILE_HOME/models.json`` (default ``~/.smile``), written atomically:
``[{"name": ..., "path": ..., "modality": ..., "registered": <unix time>}, ...]``. The bundled
default model is not listed; front ends offer it first on their own.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def registry_path() -> Path:
    return Path(os.environ.get("SMILE_HOME", Path.home() / ".smile")) / "models.json"


def registered_models() -> list[dict]:
    """Entries whose model file still exists, newest first."""
    path = registry_path()
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return sorted((e for e in entries if Path(e.get("path", "")).is_file()),
                  key=lambda e: e.get("registered", 0), reverse=True)


def register_model(model_path: str | Path, name: str | None = None) -> dict:
    from .modelfile import load_model
    model_path = Path(model_path).resolve()
    model = load_model(model_path)  # refuse to list a file that is not a usable model
    entry = {"name": name or model_path.parent.name, "path": str(model_path),
             "modality": model.modality, "registered": time.time()}
    entries = [e for e in registered_models() if e["path"] != entry["path"]] + [entry]
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    from .files import write_text_atomic
    write_text_atomic(path, json.dumps(entries, indent=1), "model list")
    return entry
