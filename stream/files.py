"""Durable file replacement: after ``os.replace``, the directory entry itself must reach the disk.

>>> import tempfile
>>> fsync_directory(Path(tempfile.mkdtemp()))
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory"]


def fsync_directory(directory: Path) -> None:
    """fsync ``directory``, so a rename into it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
