"""The one temp-then-rename helper: readers see a file or folder whole, or not at all.

Everything that writes a local output (videos, frame folders, model folders, store objects, reports)
writes a hidden temporary sibling (`.name.tmp-<12 hex>`, same folder, so the rename stays on one
file system) and renames it into place only when it is complete. A failed write leaves no
temporary behind and an existing target as it was. A killed process can leave a temporary:
`TEMP_NAME` matches them, for whoever sweeps (see `pipeline.dataset.storage.remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{12}(\.[A-Za-z0-9]+)?$")


def temp_sibling(path: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh hidden name next to `path` (not created). `suffix` keeps an extension for writers
    that choose their format by it (PyAV)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(
    path: str | os.PathLike, *, suffix: str = "", folder: bool = False, replace: bool = False
) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; on success it is renamed to `path`.

    `folder=False`: the caller writes a file at the yielded path; it replaces any existing file.
    `folder=True`: the yielded path is a new empty folder; it takes the place of `path` if `path` does
    not exist or is an empty folder, else FileExistsError (a complete folder is never clobbered,
    which is what lets concurrent builders of one folder race safely) unless `replace=True`: then the
    old folder is moved aside, the new one renamed in, and the old one deleted (put back if the
    rename fails). On any error the temporary is removed and `path` is as it was. The parent folder
    is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path, suffix)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if folder and replace and path.is_dir():
            old = temp_sibling(path, ".old")
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)  # put the previous one back
                raise
            shutil.rmtree(old, ignore_errors=True)
        elif folder:
            try:
                os.rename(tmp, path)  # POSIX: replaces an empty folder, fails on a non-empty one
            except OSError as e:
                if path.is_dir():
                    raise FileExistsError(f"{path}: already exists and is not empty") from e
                raise
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write `data` to the local file `path` atomically (fsync'd before the rename by default)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to the local file `path` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


_SCRATCH = re.compile(r"^pix2video-(\d+)-")  # a local scratch folder, with the pid of the process it is for


@contextmanager
def local_scratch() -> Iterator[str]:
    """A folder of this process's own in the temporary folder (TMPDIR), removed on the way out. Its name
    carries this process's pid, so a later process can tell the folders of killed ones (OOM, a lost
    Ray worker) from live ones: `sweep_dead_scratch`."""
    with tempfile.TemporaryDirectory(prefix=f"pix2video-{os.getpid()}-") as folder:
        yield folder


def _gone(pid: int) -> bool:
    """No process `pid` on this machine (a live one, or another user's, is not gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def sweep_dead_scratch(folder: str | None = None) -> int:
    """Remove the scratch folders (`local_scratch`) in `folder` (the temporary folder) whose process no
    longer runs on this machine; how many. Another live process's folder is never touched."""
    folder = folder or tempfile.gettempdir()
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    dead = [n for n in names if (m := _SCRATCH.match(n)) and _gone(int(m.group(1)))]
    for name in dead:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    return len(dead)
