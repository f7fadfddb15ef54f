"""Checkpoints: the learner's whole state saved together with the offsets it covers.

:class:`Checkpoint` is one checkpoint interval of the consumer. It is due after
``checkpoint_every_events`` messages or ``checkpoint_every_seconds``, and :meth:`Checkpoint.commit`
makes it durable in this order (:class:`CommitStep` names the points in between):

1. flush the dead letters, so a letter is never lost behind offsets that are saved, and
   write the archive of admitted events (:mod:`stream.kafka.archive`) for the same reason;
2. save each partition's state with its offset in one file per partition, replaced atomically
   (:class:`CheckpointStore`: write a temporary file, fsync, rename, fsync the directory):
   after a crash at any instant the file is the previous checkpoint or the new one, never a
   torn mix (:mod:`stream.kafka.partitions` keeps one per partition and fences off a consumer
   that lost a partition without knowing it);
3. commit the offsets to the consumer group (advisory: the files are the source of truth).

On restart the consumer restores the state and seeks every partition to the saved offset:
the events after it are applied again on top of exactly the state that had not seen them, so
none is lost or applied twice. A crash anywhere in between is therefore harmless, which the
tests prove by injecting one at each :class:`CommitStep` (:class:`CrashAt`).

>>> class Group:  # stands in for the confluent_kafka.Consumer whose offsets are committed
...     def commit(self, offsets, asynchronous):
...         print("committed", [(tp.topic, tp.partition, tp.offset) for tp in offsets])
>>> class Letters:  # stands in for stream.kafka.dead_letters.DeadLetters
...     def flush(self): print("dead letters flushed")
>>> class Store:  # stands in for stream.kafka.partitions.PartitionStore
...     topic = "events"
...     def save(self, partition, state, offset, epoch):
...         print("saved", partition, state, offset); return epoch == 1
>>> cfg = ConsumerConfig(checkpoint_every_events=2)
>>> ckpt = Checkpoint(cfg, Store(), Group(), Letters())
>>> ckpt.add(1); ckpt.due()
False
>>> ckpt.add(1); ckpt.due()
True
>>> ckpt.commit([PartitionSave(0, {"model": [1, 2]}, 2, epoch=1),
...              PartitionSave(1, {"model": [3]}, 7, epoch=0)])  # partition 1: fenced off
dead letters flushed
saved 0 {'model': [1, 2]} 2
saved 1 {'model': [3]} 7
committed [('events', 0, 2)]
[1]
>>> ckpt.due()
False
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol

from confluent_kafka import KafkaException, TopicPartition

from stream.cadence import Cadence
from stream.config import ConsumerConfig
from stream.files import replace_atomically
from stream.sealed import SealError, UnsupportedFormat, header, unseal

log = logging.getLogger(__name__)

# 2: the layered packages (the pickled classes moved) and the retrain state machine.
# 3: the learner keeps what serving needs (seen items, popularity, changed profiles).
# 4: factor tables count updates per row and keep cold-start priors.
# 5: the file is sealed (header with length and sha256, checked before unpickling); the
#    lifecycle counts rejected control messages and timed-out retrains; forgotten users
#    (salted digests), user recency and evictions; tables count removed rows.
#    The de-duplication window keeps a content fingerprint per id; profiles have vocabularies.
# 6: one checkpoint per partition (stream/kafka/partitions.py), each a partition's learner.
FORMAT_VERSION = 6
FILE_NAME = "checkpoint.pkl"

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to consume


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used."""


@dataclass
class SavedCheckpoint:
    state: Any
    offsets: Offsets
    saved_at: float


class CheckpointStore:
    """Saves and loads the checkpoint of one consumer in ``directory``.

    The file is sealed (:mod:`stream.sealed`): its sha256 is checked before it is
    unpickled, so a corrupt or truncated checkpoint is refused with a clear error instead of
    loading garbage. It is written owner-only (0o600): unpickling runs code, so the state
    directory must be trusted.

    >>> import tempfile
    >>> store = CheckpointStore(Path(tempfile.mkdtemp()))
    >>> store.save({"model": [1, 2]}, {("events", 0): 42})
    >>> store.load().offsets
    {('events', 0): 42}
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME

    def save(self, state: Any, offsets: Offsets) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        payload = {
            "version": FORMAT_VERSION,
            "state": state,
            "offsets": dict(offsets),
            "saved_at": time.time(),
        }
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)

        def write(f: BinaryIO) -> None:
            f.write(header(blob, FORMAT_VERSION))
            f.write(blob)

        # A full disk (or any failed write) leaves no partial file behind: it would hold the
        # space, and every restart would fail the same way. Owner-only: it is unpickled.
        replace_atomically(self.path, tmp, write, mode=0o600)

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary files of writes that never finished (a process killed while
        saving); return them. Only the consumer owning this directory saves into it."""
        stale = sorted(self.directory.glob(f"{self.path.stem}.tmp-*"))
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def load(self) -> SavedCheckpoint | None:
        """The saved checkpoint, or None when there is none yet (stale temporary files of
        unfinished saves are removed first)."""
        if self.directory.is_dir():
            self.remove_stale_temps()
        if not self.path.exists():
            return None
        unsupported = (
            f"cannot read checkpoint {self.path}: it has an unsupported format; move it away "
            "to start fresh"
        )
        try:
            blob = unseal(self.path.read_bytes(), FORMAT_VERSION)
        except UnsupportedFormat as err:
            raise CheckpointError(f"{unsupported} ({err})") from err
        except SealError as err:
            raise CheckpointError(
                f"cannot read checkpoint {self.path}: it is damaged ({err}) and was not loaded; "
                "move it away to start fresh from the consumer group's offsets, or restore a "
                "backup of it"
            ) from err
        except OSError as err:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {err}") from err
        try:
            payload = pickle.loads(blob)
        except Exception as err:
            raise CheckpointError(f"cannot read checkpoint {self.path}: {err}") from err
        if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
            raise CheckpointError(unsupported)
        return SavedCheckpoint(payload["state"], payload["offsets"], payload["saved_at"])


class CommitStep(StrEnum):
    """The points of :meth:`Checkpoint.commit` where a fault can be injected, in order."""

    BEFORE_FLUSH = "before-flush-dead-letters"
    AFTER_FLUSH = "after-flush-dead-letters"
    AFTER_ARCHIVE = "after-archive-events"
    AFTER_SAVE = "after-save-state"
    AFTER_COMMIT = "after-commit-offsets"


class Crash(BaseException):
    """A simulated process death. A BaseException, so no ``except Exception`` absorbs it."""


class FaultHook(Protocol):
    """Called by the consumer and its checkpoints at the points where a crash can happen."""

    def on_message(self, consumed: int) -> None:
        """After the ``consumed``-th message of this run is applied (or rejected)."""

    def on_step(self, step: CommitStep) -> None:
        """At ``step`` of every checkpoint commit."""


class CrashAt:
    """A :class:`FaultHook` that raises :class:`Crash` once: after ``messages`` messages of
    the run, or at ``step`` of the ``commit``-th checkpoint commit (counted from 1).

    >>> hook = CrashAt(step=CommitStep.AFTER_SAVE, commit=2)
    >>> for step in CommitStep: hook.on_step(step)  # the first commit goes through
    >>> hook.on_step(CommitStep.BEFORE_FLUSH); hook.on_step(CommitStep.AFTER_FLUSH)
    >>> hook.on_step(CommitStep.AFTER_SAVE)
    Traceback (most recent call last):
    ...
    stream.kafka.checkpoint.Crash: crash after-save-state of commit 2
    """

    def __init__(
        self, messages: int | None = None, step: CommitStep | None = None, commit: int = 1
    ) -> None:
        self.messages, self.step, self.commit = messages, step, commit
        self.crashed = False
        self._commits = 0

    def on_message(self, consumed: int) -> None:
        if not self.crashed and self.messages is not None and consumed >= self.messages:
            self._crash(f"crash after {consumed} messages")

    def on_step(self, step: CommitStep) -> None:
        if step is CommitStep.BEFORE_FLUSH:
            self._commits += 1
        if not self.crashed and step is self.step and self._commits == self.commit:
            self._crash(f"crash {step.value} of commit {self._commits}")

    def _crash(self, what: str) -> None:
        self.crashed = True
        raise Crash(what)


class _Flushable(Protocol):
    def flush(self) -> None: ...


class _Archiver(Protocol):  # stream.kafka.archive.ArchiveBuffer
    def write(self, offsets: Offsets) -> None: ...

    def drop_partitions(self, partitions: list[int]) -> None: ...


class _Committer(Protocol):  # a confluent_kafka.Consumer
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> Any: ...


class _Saver(Protocol):  # stream.kafka.partitions.PartitionStore
    topic: str

    def save(self, partition: int, state: Any, offset: int, epoch: int) -> bool: ...

    def holds(self, partition: int, epoch: int) -> bool: ...


class PartitionSave(NamedTuple):
    """What one partition's checkpoint saves: its state, next offset and lease epoch."""

    partition: int
    state: Any
    offset: int
    epoch: int


class Checkpoint:
    """When to checkpoint, and the ordered steps that make a checkpoint durable.

    Built by the consumer when it starts (no I/O here): ``group`` is its Kafka consumer and
    ``dead_letters`` its dead-letter producer.
    """

    def __init__(
        self,
        config: ConsumerConfig,
        store: _Saver,
        group: _Committer,
        dead_letters: _Flushable,
        faults: FaultHook | None = None,
        archive: _Archiver | None = None,
    ) -> None:
        self.store = store
        self._archive = archive  # written before the offsets that cover it are saved
        self.cadence = Cadence(config.checkpoint_every_events, config.checkpoint_every_seconds)
        self._group, self._dead_letters, self._faults = group, dead_letters, faults

    def add(self, messages: int) -> None:
        """Count messages applied since the last commit."""
        self.cadence.add(messages)

    def due(self) -> bool:
        return self.cadence.due()

    def commit(self, saves: list[PartitionSave]) -> list[int]:
        """Dead letters durable, then each partition's state + offset on disk, then offsets
        committed. Returns the partitions whose save was fenced off (claimed by another
        consumer since): nothing of theirs was saved or committed."""
        self._step(CommitStep.BEFORE_FLUSH)
        self._dead_letters.flush()
        self._step(CommitStep.AFTER_FLUSH)
        topic = self.store.topic
        if self._archive is not None:
            # A partition claimed by another consumer since is archived by its new owner from
            # its checkpoint on; archiving it here too would duplicate (or replace) its files.
            gone = [s.partition for s in saves if not self.store.holds(s.partition, s.epoch)]
            if gone:
                self._archive.drop_partitions(gone)
            self._archive.write(
                {(topic, s.partition): s.offset for s in saves if s.partition not in gone}
            )
        self._step(CommitStep.AFTER_ARCHIVE)
        fenced = [
            s.partition
            for s in saves
            if not self.store.save(s.partition, s.state, s.offset, s.epoch)
        ]
        self._step(CommitStep.AFTER_SAVE)
        commits = [TopicPartition(topic, s.partition, s.offset) for s in saves]
        commits = [tp for tp in commits if tp.partition not in fenced]
        if commits:
            try:
                self._group.commit(offsets=commits, asynchronous=False)
            except KafkaException as err:
                # The checkpoint on disk is the source of truth; the group offset is advisory.
                log.warning("offset commit failed (checkpoint saved): %s", err)
        self._step(CommitStep.AFTER_COMMIT)
        self.cadence.reset()
        return fenced

    def _step(self, step: CommitStep) -> None:
        if self._faults is not None:
            self._faults.on_step(step)
