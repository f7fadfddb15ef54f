"""The archive of admitted events: Parquet files that outlive the broker and its retention.

The consumer keeps the raw bytes of every message its learner admitted (:class:`ArchiveBuffer`)
and, at each checkpoint commit, before the checkpoint saves the offsets that cover them,
writes one file per partition named by the range of source offsets it covers
(``events-p0-000000000000-000000049999.parquet``). A file is written to a temporary name,
fsynced and renamed, so it is whole or absent. A crash after the write and before the
checkpoint leaves files the checkpoint does not cover: the restarted consumer removes them
(:meth:`EventArchive.discard_uncovered`) and archives those events again, so each admitted
event is in the archive once. Readers still de-duplicate by offset, for an archive that
outlived its checkpoint (a consumer started afresh re-archives from the beginning).

Columns: ``partition``, ``offset``, ``timestamp`` (broker, ms), ``event_index`` (the
learner's message index: its place in the live order), ``type``, ``user_id``, ``item_id``,
``ts`` and ``raw`` (the message bytes, so every event type round-trips). Each file also
holds the learner's counts at its checkpoint (metadata ``counts``).

>>> import tempfile
>>> archive = EventArchive(Path(tempfile.mkdtemp()))
>>> raw = b'{"type":"click","event_id":"c","user_id":"u","item_id":"i","ts":1.7e9}'
>>> path = archive.write(0, 0, 9, [ArchivedEvent(0, 3, 0, 3, raw)], {"consumed": 10})
>>> path.name
'events-p0-000000000000-000000000009.parquet'
>>> archive.ends(), [e.offset for e in archive.events()], archive.purge_user("u")
({0: 10}, [3], 1)
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from stream.config import Settings
from stream.files import replace_atomically

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.int64()),
        ("event_index", pa.int64()),
        ("type", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.float64()),
        ("raw", pa.binary()),
    ]
)
_NAME = re.compile(r"^events-p(\d+)-(\d{12})-(\d{12})\.parquet$")


class ArchivedEvent(NamedTuple):
    """One admitted message: where it was in the topic, and its bytes."""

    partition: int
    offset: int
    timestamp: int  # broker timestamp, ms (0: none)
    event_index: int  # the learner's index of the message (messages consumed before it)
    raw: bytes


@dataclass(frozen=True, order=True)
class ArchiveFile:
    """One file: the admitted events of ``partition`` at offsets ``first`` to ``last``."""

    partition: int
    first: int
    last: int

    @property
    def name(self) -> str:
        return f"events-p{self.partition}-{self.first:012d}-{self.last:012d}.parquet"

    @classmethod
    def parse(cls, name: str) -> ArchiveFile | None:
        m = _NAME.match(name)
        return cls(int(m[1]), int(m[2]), int(m[3])) if m else None


def _typed(raw: bytes) -> tuple[Any, Any, Any, Any]:
    """The filter columns of an admitted (so valid JSON object) message."""
    d = orjson.loads(raw)
    ts = d.get("ts")
    return d.get("type"), d.get("user_id"), d.get("item_id"), float(ts) if ts is not None else None


_FILTER_FIELDS = ("type", "user_id", "item_id", "ts")
_FILTER_SCHEMA = pa.schema([SCHEMA.field(name) for name in _FILTER_FIELDS])
_JSON_PARSE = pj.ParseOptions(explicit_schema=_FILTER_SCHEMA, unexpected_field_behavior="ignore")
_JSON_READ = pj.ReadOptions(use_threads=False, block_size=1 << 26)


def _filter_columns(raws: list[bytes]) -> list[pa.Array]:
    """The filter columns of admitted messages. Arrow's JSON reader parses them in one pass
    (a third of the per-message cost); what it refuses (a duplicate key, a number given as
    a string, a message it splits) is parsed one message at a time, as before."""
    if raws:
        try:
            table = pj.read_json(
                pa.BufferReader(b"\n".join(raws)),
                read_options=_JSON_READ,
                parse_options=_JSON_PARSE,
            )
            if table.num_rows == len(raws):
                return [table.column(name).combine_chunks() for name in _FILTER_FIELDS]
        except pa.ArrowInvalid:
            pass
    typed = [_typed(raw) for raw in raws]
    return [
        pa.array([t[k] for t in typed], type=_FILTER_SCHEMA.field(k).type)
        for k in range(len(_FILTER_FIELDS))
    ]


def _table(rows: list[ArchivedEvent], counts: dict[str, Any]) -> pa.Table:
    raws = [r.raw for r in rows]
    columns = [
        pa.array([r.partition for r in rows], type=pa.int32()),
        pa.array([r.offset for r in rows], type=pa.int64()),
        pa.array([r.timestamp for r in rows], type=pa.int64()),
        pa.array([r.event_index for r in rows], type=pa.int64()),
        *_filter_columns(raws),
        pa.array(raws, type=SCHEMA.field("raw").type),
    ]
    schema = SCHEMA.with_metadata({"counts": json.dumps(counts)})
    return pa.Table.from_arrays(columns, schema=schema)


def warm_up() -> None:
    """Build an empty file's table: pyarrow imports pandas at its first table, which a
    process would otherwise pay at its first archive write."""
    _table([], {})


class EventArchive:
    """The archive directory: write, list, read in order, forget a user."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def files(self) -> list[ArchiveFile]:
        """Every archive file, by partition then first offset."""
        if not self.directory.is_dir():
            return []
        found = (ArchiveFile.parse(p.name) for p in self.directory.iterdir())
        return sorted(f for f in found if f is not None)

    def path(self, f: ArchiveFile) -> Path:
        return self.directory / f.name

    def _replace(self, f: ArchiveFile, table: pa.Table) -> Path:
        """Write ``table`` as ``f``, atomically: a temporary file, fsync, rename, fsync dir."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(f)
        tmp = path.with_name(f".{f.name}.tmp-{os.getpid()}")
        replace_atomically(path, tmp, lambda out: pq.write_table(table, out))
        return path

    def write(
        self,
        partition: int,
        first: int,
        last: int,
        rows: list[ArchivedEvent],
        counts: dict[str, Any],
    ) -> Path:
        """Write the file of offsets ``first..last`` of ``partition`` (``rows`` admitted
        among them, with the learner's ``counts`` after them). Files an older run left
        inside this range are removed: this one holds their offsets now."""
        f = ArchiveFile(partition, first, last)
        path = self._replace(f, _table(rows, counts))
        for old in self.files():
            if old != f and old.partition == partition and first <= old.first <= old.last <= last:
                self.path(old).unlink(missing_ok=True)
        return path

    def discard_uncovered(self, offsets: dict[int, int]) -> list[ArchiveFile]:
        """Remove the files of the partitions in ``offsets`` (next offset per partition, from
        the checkpoint being restored) that start at or after it: a crash left them between
        the archive write and the checkpoint save; their events are consumed again. Also
        temporary files of writes that never finished."""
        # Only the given partitions': another consumer may be writing its own right now.
        for p in offsets if self.directory.is_dir() else ():
            for tmp in self.directory.glob(f".events-p{p}-*.tmp-*"):
                tmp.unlink(missing_ok=True)
        gone = [
            f for f in self.files() if f.partition in offsets and f.first >= offsets[f.partition]
        ]
        for f in gone:
            self.path(f).unlink(missing_ok=True)
        if gone:
            log.info("removed archive files the checkpoint does not cover: %s", gone)
        return gone

    def firsts(self) -> dict[int, int]:
        """The first archived offset, per partition."""
        firsts: dict[int, int] = {}
        for f in self.files():
            firsts.setdefault(f.partition, f.first)  # files() is by partition, then first
        return firsts

    def ends(self) -> dict[int, int]:
        """The next offset after the archive, per partition."""
        ends: dict[int, int] = {}
        for f in self.files():
            ends[f.partition] = max(ends.get(f.partition, 0), f.last + 1)
        return ends

    def tables(
        self, end_offsets: dict[int, int] | None = None
    ) -> Iterator[tuple[ArchiveFile, pa.Table]]:
        """Each file's rows below ``end_offsets`` (None: all) and not in an earlier file of
        the partition (de-duplicated by offset), by partition then offset."""
        done: dict[int, int] = {}  # partition -> next offset not yet read
        for f in self.files():
            end = f.last + 1 if end_offsets is None else end_offsets.get(f.partition, 0)
            start = done.get(f.partition, 0)
            if f.last < start or f.first >= end:
                continue
            table = pq.read_table(self.path(f))
            if f.first < start or f.last >= end:
                offsets = table.column("offset")
                keep = pc.and_(pc.greater_equal(offsets, start), pc.less(offsets, end))
                table = table.filter(keep)
            done[f.partition] = min(f.last + 1, end)
            yield f, table

    def read(self, end_offsets: dict[int, int] | None = None) -> ArchiveSlice:
        """The archived events below ``end_offsets`` (None: all) in the live order, with
        the learner's counts after them and the next offset per partition."""
        rows: list[ArchivedEvent] = []
        counts: dict[str, Any] = {}
        cut_offsets = cut_rows = 0
        ends: dict[int, int] = {}
        for f, table in self.tables(end_offsets):
            start = ends.get(f.partition, f.first)
            end = f.last + 1 if end_offsets is None else min(end_offsets[f.partition], f.last + 1)
            ends[f.partition] = end
            cols = [table.column(n).to_pylist() for n in ArchivedEvent._fields]
            rows.extend(ArchivedEvent(*r) for r in zip(*cols, strict=True))
            if end == f.last + 1:
                stored = file_counts(table)
                if stored.get("consumed", 0) >= counts.get("consumed", 0):
                    counts = stored
            else:  # cut inside a file: its non-admitted messages are not told apart
                cut_offsets += end - start
                cut_rows += table.num_rows
        if cut_offsets:
            counts = _plus_cut(counts, cut_offsets, cut_rows)
        # The learner's index is the order it consumed them in, across partitions.
        rows.sort(key=lambda e: (e.event_index, e.partition, e.offset))
        return ArchiveSlice(rows, counts, ends)

    def events(self, end_offsets: dict[int, int] | None = None) -> Iterator[ArchivedEvent]:
        """The archived events below ``end_offsets`` (None: all) in the live order."""
        return iter(self.read(end_offsets).events)

    def purge_user(self, user_id: str) -> int:
        """Rewrite (atomically, same names) every file holding events of ``user_id``
        without them; return how many were removed."""
        removed = 0
        for f in self.files():
            path = self.path(f)
            table = pq.read_table(path)
            mine = pc.fill_null(pc.equal(table.column("user_id"), user_id), False)
            n = pc.sum(mine).as_py() or 0
            if n:
                kept = table.filter(pc.invert(mine))
                self._replace(f, kept.replace_schema_metadata(table.schema.metadata))
                removed += n
        return removed


def archive_directory(settings: Settings) -> Path:
    """Where the archive is: ``settings.archive.directory``, else ``archive/`` in the state dir."""
    return settings.archive.directory or settings.consumer.state_dir / "archive"


def file_counts(table: pa.Table) -> dict[str, Any]:
    """The learner's counts stored with a file (empty when none)."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"counts")
    return json.loads(raw) if raw else {}


class ArchiveSlice(NamedTuple):
    """What :meth:`EventArchive.read` found."""

    events: list[ArchivedEvent]  # in the live order
    counts: dict[str, Any]  # the learner's counts after them (see stream.events.Counts)
    ends: dict[int, int]  # next offset after the archived ones, per partition


def _plus_cut(counts: dict[str, Any], offsets: int, admitted: int) -> dict[str, Any]:
    """``counts`` plus a range cut inside a file: ``offsets`` messages, ``admitted`` of them
    archived; the others are counted as filtered (``not_archived``: which bucket is unknown)."""
    out = dict(counts)
    others = offsets - admitted
    out["consumed"] = out.get("consumed", 0) + offsets
    out["applied"] = out.get("applied", 0) + admitted
    out["filtered"] = out.get("filtered", 0) + others
    if others:
        reasons = dict(out.get("filtered_by_reason", {}))
        reasons["not_archived"] = reasons.get("not_archived", 0) + others
        out["filtered_by_reason"] = reasons
    return out


class ArchiveBuffer:
    """The consumer's side: keeps admitted messages, writes them at each checkpoint commit.

    ``counts`` gives a partition's learner's counts (as a dict) to store with its files.
    """

    def __init__(
        self, archive: EventArchive, topic: str, counts: Callable[[int], dict[str, Any]]
    ) -> None:
        self.archive, self.topic, self._counts = archive, topic, counts
        self.kept: list[tuple[Any, int]] = []  # (confluent_kafka.Message, event index)
        # Next offset per partition after the last archived range (its files' first offset).
        self.starts: dict[int, int] = {}

    def restore(self, offsets: dict[tuple[str, int], int]) -> None:
        """Start the partitions in ``offsets`` (a restored checkpoint's) after them; drop
        their files beyond them."""
        starts = {p: o for (t, p), o in offsets.items() if t == self.topic}
        self.starts.update(starts)
        self.archive.discard_uncovered(starts)

    def drop_partitions(self, partitions: list[int]) -> None:
        """Forget what was kept of partitions this consumer no longer owns (written already
        when they were revoked after a checkpoint; applied again by their new owner if not)."""
        gone = set(partitions)
        self.kept = [(m, i) for m, i in self.kept if (m.partition() or 0) not in gone]
        for p in gone:
            self.starts.pop(p, None)

    def keep(self, msg: Any, event_index: int) -> None:
        self.kept.append((msg, event_index))

    def purge_user(self, user_id: str) -> int:
        """Forget ``user_id``: drop their kept messages and rewrite the files holding their
        events; return how many events were removed."""
        before = len(self.kept)
        self.kept = [(m, i) for m, i in self.kept if _typed(m.value())[1] != user_id]
        return before - len(self.kept) + self.archive.purge_user(user_id)

    def write(self, offsets: dict[tuple[str, int], int]) -> None:
        """Archive what was kept, up to ``offsets`` (next offset per partition), one file per
        partition that moved since the last write."""
        by_partition: dict[int, list[ArchivedEvent]] = {}
        for msg, index in self.kept:
            p = msg.partition() or 0
            event = ArchivedEvent(p, msg.offset(), max(msg.timestamp()[1], 0), index, msg.value())
            by_partition.setdefault(p, []).append(event)
        for (topic, p), end in sorted(offsets.items()):
            if topic != self.topic:
                continue
            rows = by_partition.pop(p, [])
            # Without a checkpoint the consumer read the partition from its beginning.
            start = self.starts.get(p, 0)
            if end > start:
                self.archive.write(p, start, end - 1, rows, self._counts(p))
            self.starts[p] = end
        if by_partition:  # kept messages always lie below the offsets being saved
            raise RuntimeError(f"archived events of partitions without offsets: {by_partition}")
        self.kept = []
