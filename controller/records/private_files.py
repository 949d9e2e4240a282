"""Files that hold health data (the store's photos, exports, reports, certificates): written 0600,
whole or not at all, and never through a name another local user could have planted.

The temporary file is made by ``tempfile.mkstemp`` in the target's own folder (O_EXCL with a random
name, so a file or symlink waiting at a predictable name is never reused or followed), synced, then
renamed over the target, and the folder is synced so the rename itself survives a power cut. A
target that is a symlink is refused rather than replaced: it means someone pointed the file
elsewhere, and the clinician must see that.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from controller.errors import GivreError


class UnsafeTarget(GivreError):
    """A file holding health data would be written somewhere another user controls."""


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: 0600, on disk, complete or not there at all."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.is_symlink():
        raise UnsafeTarget(f"{path}: is a symbolic link; Givre writes health data only to a plain file",
                           "Remove the link or choose another file name")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (its directory entry is only on disk once the folder is synced)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def folder_warning(folder: Path) -> str | None:
    """One line if another user could add, replace or remove files in ``folder`` (group- or
    world-writable): the store and its photos would no longer be the practice's alone. None otherwise
    (and for a folder that is not there yet: Givre creates it 0700)."""
    try:
        mode = file_mode(folder)
    except OSError:
        return None
    who = " and ".join(name for bit, name in ((stat.S_IWGRP, "its group"), (stat.S_IWOTH, "every user")) if mode & bit)
    if not who:
        return None
    return (f"warning: {folder} (the record store's folder) is writable by {who} (mode {mode:04o}): another account could "
            f"replace or remove patient records. Run `chmod go-w {folder}` or move the store (--db) to a private folder")
