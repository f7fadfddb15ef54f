"""The state store of a consumer group: one checkpoint per partition, and who may write it.

Events are keyed by user, so a partition holds every event of its users. Each partition's
learner (its users, their de-duplication window and bot-filter state, and its copy of the
shared item model) is checkpointed on its own, with that partition's offset, in a directory
shared by every consumer of the group: ``<state_dir>/partitions/<topic>-<p>/``. A partition
moved to another consumer is restored there from its checkpoint and read on from its offset,
never from the beginning, and it leaves the old owner.

A consumer that took too long between two polls is out of the group without knowing it; a
new owner may be applying its partitions already. Its checkpoint would then overwrite a
newer one. :class:`PartitionStore` fences it off with a lease per partition: claiming a
partition (at assignment) increases the partition's epoch, and a save goes through only
while the saver's epoch is still the partition's epoch (checked and written under an
exclusive file lock, so two processes on one host cannot interleave).

>>> import tempfile
>>> store = PartitionStore(Path(tempfile.mkdtemp()), "events")
>>> first = store.claim(0); second = store.claim(0)  # a new owner claimed it
>>> store.save(0, {"users": 1}, 42, epoch=first)  # the old owner is fenced off
False
>>> store.save(0, {"users": 2}, 43, epoch=second), store.load(0).offsets
(True, {('events', 0): 43})
>>> store.partitions()
[0]
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stream.kafka.checkpoint import CheckpointStore, SavedCheckpoint

__all__ = ["PartitionStore"]

LEASE_FILE = "lease"


class PartitionStore:
    """Per-partition checkpoints of ``topic`` under ``<state_dir>/partitions``."""

    def __init__(self, state_dir: Path, topic: str) -> None:
        self.root = Path(state_dir) / "partitions"
        self.topic = topic
        self._pattern = re.compile(re.escape(topic) + r"-(\d+)")

    def directory(self, partition: int) -> Path:
        return self.root / f"{self.topic}-{partition}"

    def checkpoints(self, partition: int) -> CheckpointStore:
        return CheckpointStore(self.directory(partition))

    def partitions(self) -> list[int]:
        """The partitions with a saved checkpoint."""
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            m = self._pattern.fullmatch(d.name)
            if m and self.checkpoints(int(m.group(1))).path.exists():
                found.append(int(m.group(1)))
        return sorted(found)

    def load(self, partition: int) -> SavedCheckpoint | None:
        """The partition's checkpoint (None: none yet). Under the lease's lock: no save is
        half done, so the temporary files it removes are stale ones."""
        with self._lease(partition):
            return self.checkpoints(partition).load()

    def claim(self, partition: int) -> int:
        """Take the partition over: its new epoch. An earlier owner's saves fail from now."""
        with self._lease(partition) as lease:
            epoch = _read_epoch(lease) + 1
            _write_epoch(lease, epoch)
        return epoch

    def holds(self, partition: int, epoch: int) -> bool:
        """Whether ``epoch`` is still the partition's (no one claimed it since)."""
        with self._lease(partition) as lease:
            return _read_epoch(lease) == epoch

    def save(self, partition: int, state: Any, offset: int, epoch: int) -> bool:
        """Save ``state`` with the partition's next ``offset`` if ``epoch`` still holds the
        partition; False (nothing written) when another consumer claimed it since."""
        with self._lease(partition) as lease:
            if _read_epoch(lease) != epoch:
                return False
            self.checkpoints(partition).save(state, {(self.topic, partition): offset})
        return True

    @contextmanager
    def _lease(self, partition: int) -> Iterator[int]:
        """The partition's lease file, opened and locked exclusively (a file descriptor)."""
        directory = self.directory(partition)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LEASE_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock


def _read_epoch(fd: int) -> int:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).strip()
    return int(text) if text else 0


def _write_epoch(fd: int, epoch: int) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, str(epoch).encode())
    os.fsync(fd)
