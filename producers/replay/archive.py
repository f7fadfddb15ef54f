"""The archive of admitted events (:mod:`stream.kafka.archive`), replayed: a directory of
``events-p*.parquet`` files, whose events come out in the order the consumer applied them.

Each record is the archived message's JSON as a dict, so it is keyed by its user and paced
by its ``ts`` like the events of a file.

>>> import tempfile
>>> from stream.kafka.archive import ArchivedEvent, EventArchive
>>> tmp = Path(tempfile.mkdtemp())
>>> raw = b'{"type":"user_profile","event_id":"p","user_id":"u","ts":1.7e9}'
>>> _ = EventArchive(tmp).write(0, 0, 0, [ArchivedEvent(0, 0, 0, 0, raw)], {})
>>> list(records(tmp))
[{'type': 'user_profile', 'event_id': 'p', 'user_id': 'u', 'ts': 1700000000.0}]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from producers.replay.files import ReplayError
from stream.kafka.archive import EventArchive
from stream.kafka.publisher import Record

__all__ = ["check", "records"]


def check(path: Path) -> None:
    """Raise :class:`ReplayError` unless ``path`` is a directory holding archive files."""
    if not path.is_dir() or not EventArchive(path).files():
        raise ReplayError(f"{path}: not an archive directory (no events-p*-*.parquet files)")


def records(path: Path) -> Iterator[Record]:
    for event in EventArchive(path).events():
        yield orjson.loads(event.raw)
