"""Checkpoints: the learner's whole state saved together with the offsets it covers.

A checkpoint is one pickle file replaced atomically (write to a temporary file, fsync,
rename, fsync the directory), so after a crash at any instant the file on disk is either the
previous checkpoint or the new one, never a torn mix. On restart the consumer restores the
learner and seeks every partition to the saved offset: the events after it are applied
again on top of exactly the state that had not seen them, so none is lost or applied twice.

>>> import tempfile
>>> store = CheckpointStore(Path(tempfile.mkdtemp()))
>>> store.save({"model": [1, 2]}, {("events", 0): 42})
>>> store.load().offsets
{('events', 0): 42}
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
FILE_NAME = "checkpoint.pkl"


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used."""


@dataclass
class Checkpoint:
    state: Any
    offsets: dict[tuple[str, int], int]
    saved_at: float


class CheckpointStore:
    """Saves and loads the checkpoint of one consumer in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME

    def save(self, state: Any, offsets: dict[tuple[str, int], int]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        payload = {
            "version": FORMAT_VERSION,
            "state": state,
            "offsets": dict(offsets),
            "saved_at": time.time(),
        }
        with open(tmp, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self) -> Checkpoint | None:
        """The saved checkpoint, or None when there is none yet."""
        if not self.path.exists():
            return None
        try:
            with open(self.path, "rb") as f:
                payload = pickle.load(f)
        except Exception as err:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {err}") from err
        if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {self.path} has an unsupported format; move it away to start fresh"
            )
        return Checkpoint(payload["state"], payload["offsets"], payload["saved_at"])
