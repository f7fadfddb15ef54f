"""A consumer fenced off a partition (another claimed it since) archives nothing of it: the
new owner archives the partition from its checkpoint on, and its files stay as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.config import ConsumerConfig
from stream.kafka.archive import ArchiveBuffer, EventArchive
from stream.kafka.checkpoint import Checkpoint, PartitionSave
from stream.kafka.partitions import PartitionStore

RAW = b'{"type":"click","event_id":"e%d","user_id":"u","item_id":"i","ts":1.7e9}'


class Message:
    """The four accessors of a confluent_kafka.Message the archive reads."""

    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def value(self) -> bytes:
        return RAW % self._o


class Group:
    def __init__(self) -> None:
        self.committed: list[Any] = []

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        self.committed += [(tp.partition, tp.offset) for tp in offsets]


class Letters:
    def flush(self) -> None:
        pass


def test_a_fenced_off_partition_is_not_archived_by_its_old_owner(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "state", "events")
    archive = EventArchive(tmp_path / "archive")
    old_epochs = {p: store.claim(p) for p in (0, 1)}
    buffer = ArchiveBuffer(archive, "events", lambda p: {"consumed": 4})
    for p in (0, 1):
        for offset in range(4):
            buffer.keep(Message(p, offset), offset)
    # Another consumer claims partition 1 and archives its first offsets itself.
    new_epoch = store.claim(1)
    theirs = ArchiveBuffer(archive, "events", lambda p: {"consumed": 2})
    for offset in range(2):
        theirs.keep(Message(1, offset), offset)
    theirs.write({("events", 1): 2})
    assert store.save(1, {"theirs": True}, 2, new_epoch)
    group = Group()
    ckpt = Checkpoint(ConsumerConfig(), store, group, Letters(), archive=buffer)  # type: ignore[arg-type]
    fenced = ckpt.commit([PartitionSave(p, {"mine": p}, 4, old_epochs[p]) for p in (0, 1)])
    assert fenced == [1] and group.committed == [(0, 4)]
    assert [(f.partition, f.first, f.last) for f in archive.files()] == [(0, 0, 3), (1, 0, 1)]
    assert sorted((e.partition, e.offset) for e in archive.events()) == [
        *[(0, o) for o in range(4)],
        (1, 0),
        (1, 1),
    ]
    loaded = store.load(1)
    assert loaded is not None and loaded.state == {"theirs": True}
