"""Files: atomic writes, temporary names, stale temporaries, the output folder's lock, signals.

Every output is written to a hidden temporary name beside it (`temp_name`:
``.<final name>.tmp<pid><ext>``) and renamed into place (`os.replace`), so a kill or a full disk
leaves the earlier file whole. The pid in the name says whose a temporary is: a later run removes
those of processes that no longer exist (`remove_stale_temps`; only a SIGKILL leaves one). A run
writing into a folder holds its lock (`folder_lock`: a second live run is refused with
`FolderInUse`), and a group of renames is not cut in half by Ctrl-C, SIGTERM or SIGHUP
(`signals_deferred`). A failed write raises `write_failed`'s OSError, naming the real file.
"""
from __future__ import annotations

import errno
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import nibabel as nib


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and its message with the whitespace collapsed."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def write_failed(path: Path, exc: BaseException, what: str = "file") -> OSError:
    """The error for a write that failed (disk full, no permission, ...): it names the real
    file, and says that the file previously under that name, if any, is unchanged."""
    code = getattr(exc, "errno", None) or errno.EIO
    reason = getattr(exc, "strerror", None) or one_line(exc)
    return OSError(code, f"writing {what} {path} failed ({reason}); nothing was written under that "
                         "name, and a file already there is unchanged")


# Temporary files are named `.<final name>.tmp<pid><ext>`: the pid says whose they are, so a
# later run can remove those of a process that no longer exists (killed with SIGKILL).
_TEMP_RE = re.compile(r"^\..+\.tmp(?P<pid>\d+)(\.nii\.gz|\.[A-Za-z0-9]+)?$")


def temp_name(path: Path) -> Path:
    """A hidden temporary name beside `path`, keeping its extension (.nii.gz, .png, ...)."""
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files in `folder` left by processes that no longer run (a SIGKILL
    leaves them: nothing can clean up after it); returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not pid_alive(int(m["pid"])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # another run removed it first, or it cannot be removed: not ours to fail on
    return removed


@contextmanager
def temporary_beside(path: Path):
    """The temporary name for `path` (see `temp_name`), with stale ones of dead runs removed
    first; the temporary file is removed on any exit that leaves it (an error, Ctrl-C, the
    CLI's SIGTERM handler), so only a SIGKILL can leave one, for the next run to remove."""
    remove_stale_temps(path.parent)
    tmp = temp_name(path)
    try:
        yield tmp
    finally:
        if tmp.exists():
            tmp.unlink()


LOCK_NAME = ".smile-lock"


class FolderInUse(OSError):
    """Another live run holds the folder's lock."""


@contextmanager
def folder_lock(folder: Path, what: str = "output folder"):
    """Hold `folder` for this process: a lock file created exclusively (O_CREAT | O_EXCL, on
    every OS and file system) holding the pid. A second run refuses instead of silently
    overwriting the first one's results; a lock whose process is gone (SIGKILL) is taken over."""
    lock = Path(folder) / LOCK_NAME
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                owner = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                owner = None
            if owner is None:  # just created and not yet written, or damaged: wait for a young one
                try:
                    young = time.time() - lock.stat().st_mtime < 10
                except FileNotFoundError:
                    continue
                if young:
                    time.sleep(0.5)
                    continue
            elif pid_alive(owner):
                raise FolderInUse(f"{what} {folder} is in use by another smile run (pid {owner}); "
                                  "wait for it to end, or choose another folder") from None
            lock.unlink(missing_ok=True)
    else:
        raise FolderInUse(f"{what} {folder}: its lock {lock} cannot be taken; another run may have "
                          "started at the same moment")
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        yield lock
    finally:
        try:
            if lock.read_text().split()[:1] in ([str(os.getpid())], []):  # still ours (empty: cut short)
                lock.unlink()
        except OSError:
            pass


@contextmanager
def signals_deferred():
    """Ctrl-C, SIGTERM and SIGHUP wait until the block ends (main thread): a group of renames
    is never cut in half, so outputs stay of one run. The signals' handlers are swapped for ones
    that note them, and the first noted is raised again once the block is over (blocking them
    with pthread_sigmask is not enough: the kernel hands a process's signal to any thread that
    does not block it, such as a numpy or torch worker, and Python then runs the handler at once)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    noted: list = []
    old = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if noted:
            signal.raise_signal(noted[0])


@contextmanager
def nibabel_quiet():
    """nibabel logs "sizeof_hdr should be 348" and the like while it probes which format a file
    is, or when it converts a NIfTI-2 header to NIfTI-1 for the outputs: not the user's concern."""
    import logging
    logger = logging.getLogger("nibabel")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_text_atomic(path: str | Path, text: str, what: str = "file") -> Path:
    """Write `text` to a temporary name beside `path`, then rename it into place: a kill or a
    full disk leaves the earlier file whole and no temporary file behind."""
    path = Path(path)
    with temporary_beside(path) as tmp:
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as exc:
            raise write_failed(path, exc, what) from exc
    return path


def write_temp_like(data: np.ndarray, reference: nib.Nifti1Image, path: str | Path,
                    dtype=np.float32) -> Path:
    """Write `data` with the reference image's affine and header to a temporary name beside
    `path` and return that name; the caller renames it into place (os.replace). Nothing is
    left behind when writing fails."""
    import nibabel as nib
    path = Path(path)
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    with nibabel_quiet():  # a NIfTI-2 reference's header is converted, with a log line per output
        out = nib.Nifti1Image(np.asarray(data, dtype=dtype), reference.affine, header)
    out.header.set_slope_inter(1, 0)
    tmp = temp_name(path)
    try:
        nib.save(out, str(tmp))
    except BaseException as exc:  # also Ctrl-C and the CLI's SIGTERM: no half-written file is left
        if tmp.exists():
            tmp.unlink()
        if isinstance(exc, Exception):
            raise write_failed(path, exc, "NIfTI file") from exc
        raise
    return tmp


def save_like(data: np.ndarray, reference: nib.Nifti1Image, path: str | Path,
              dtype=np.float32) -> Path:
    """Write `data` with the reference image's affine and header, atomically (temp + rename)."""
    path = Path(path)
    remove_stale_temps(path.parent)
    tmp = write_temp_like(data, reference, path, dtype)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise write_failed(path, exc, "NIfTI file") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
