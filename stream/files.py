"""Durable file replacement: a file is replaced whole or not at all, even across a crash.

:func:`replace_atomically` writes a temporary file, fsyncs it, renames it over the target and
fsyncs the directory (a rename is durable only once its directory entry is); a failed write
(a full disk) removes the temporary file, so no partial file holds the space.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "f.bin"
>>> replace_atomically(path, path.with_suffix(".tmp"), lambda f: f.write(b"whole"))
>>> path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
(b'whole', ['f.bin'])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_directory", "replace_atomically"]


def fsync_directory(directory: Path) -> None:
    """fsync ``directory``, so a rename into it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(
    path: Path, tmp: Path, write: Callable[[BinaryIO], object], mode: int = 0o666
) -> None:
    """Make ``path`` hold what ``write`` writes, through the temporary file ``tmp`` (in the
    same directory), created with ``mode`` (less the umask)."""
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
