"""Where a model file came from, recorded without the paths of the machine that made it.

A model file is shared (the default model ships with the extension), so its training record
names files by their base name and content hash, folders by their name, and the command that
ran with every absolute path reduced to its base name; the source is named by its git commit
and version. Used by train.Trainer and scripts/finetune_segmentor.py.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from . import __version__


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path | None) -> dict | None:
    """A file as {"file": its base name, "sha256": its content's hash} (None for None)."""
    if path is None:
        return None
    return {"file": Path(path).name, "sha256": sha256_of(path)}


def folder_name(path: str | Path) -> str:
    """A folder's own name, without the path to it ("." becomes the current folder's name)."""
    return Path(path).resolve().name


def without_machine_paths(arg: str) -> str:
    """A command-line argument with an absolute path (or one from ~) reduced to its base name,
    also as the value of ``--option=PATH``; other arguments as they are."""
    if arg.startswith("-") and "=" in arg:
        option, value = arg.split("=", 1)
        return f"{option}={without_machine_paths(value)}"
    if os.path.isabs(arg) or arg.startswith("~"):
        return Path(arg).name
    return arg


def command_name() -> str:
    """The program that is running: "python -m PACKAGE" for ``python -m``, else the name it was
    started by (a console script such as "smile", or a script's path as typed)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        name = spec.name[:-len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return f"python -m {name}"
    started = sys.argv[0] if sys.argv and sys.argv[0] else ""
    return without_machine_paths(started) if started not in ("", "-c") else f"python {started}".strip()


def _git(root: Path, *args: str) -> str | None:
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              env=env, stdin=subprocess.DEVNULL)
    except Exception:  # no git, a hung git, an unreadable folder: no commit, never a failed run
        return None
    return done.stdout if done.returncode == 0 else None


def source_commit(package: Path | None = None) -> tuple[str | None, bool | None]:
    """(the git commit of the checkout smilecore lives in, whether its files differ from that
    commit); (None, None) where smilecore is not the top of a git checkout (an installed copy)."""
    package = Path(package or Path(__file__).parent).resolve()
    root = package.parent
    out = _git(root, "rev-parse", "--show-toplevel", "HEAD")
    lines = out.splitlines() if out else []
    try:
        same = len(lines) == 2 and Path(lines[0]).resolve() == root
    except OSError:
        same = False
    if not same:
        return None, None
    status = _git(root, "status", "--porcelain", "--", package.name)
    return lines[1].strip(), (None if status is None else bool(status.strip()))


def provenance(script: str | None = None, arguments: list[str] | None = None) -> dict:
    """{"script": the command that ran, "arguments": its arguments (absolute paths reduced to
    base names), "commit": the smilecore source's git commit or None, "source_modified": whether
    that source differs from the commit, "smilecore_version"}. Defaults: this process's command
    line."""
    commit, modified = source_commit()
    arguments = sys.argv[1:] if arguments is None else arguments
    return {"script": script or command_name(),
            "arguments": [without_machine_paths(str(a)) for a in arguments],
            "commit": commit, "source_modified": modified, "smilecore_version": __version__}
