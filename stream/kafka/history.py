"""Event history for batch retraining and for catching a swapped model up.

The history is the archive of admitted events (:mod:`stream.kafka.archive`, when enabled),
then the events topic from the first offset after the archive up to given offsets, put
through the live learner's own gate (:class:`~stream.events.Admission`: validation,
de-duplication, known ids, bot filter). Archived events were admitted by that gate already:
they are kept as they are, with the index the learner gave them, and the gate remembers them
(ids, bot activity, profiles) so the messages after the archive are judged as live. So the
retrainer trains on exactly the events the live models learned, in the same order, with the
same profiles, also when the broker lost or expired the older part of the topic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from zlib import crc32

from confluent_kafka import KafkaException, TopicPartition

from stream.config import Settings
from stream.events import (
    Admission,
    Counts,
    Event,
    ForgottenUsers,
    InteractionEvent,
    decode_event,
)
from stream.kafka import clients
from stream.kafka.archive import EventArchive, archive_directory

log = logging.getLogger(__name__)


class HistoryCollector:
    """Admits messages like the learner and collects the admitted interaction events.

    ``indexes[k]`` is the learner's event index (messages consumed before it) of
    ``events[k]``; ``users`` and ``items`` are the profiles admitted along the way.

    >>> from stream.events import RatingEvent, UserProfileEvent, ItemProfileEvent, encode_event
    >>> history = HistoryCollector(Settings())
    >>> kw = dict(user_id="u", ts=1.7e9)
    >>> for e in (UserProfileEvent(event_id="p", **kw),
    ...           RatingEvent(event_id="r", item_id="i", rating=3, **kw),  # unknown item
    ...           ItemProfileEvent(event_id="q", item_id="i", ts=1.7e9),
    ...           RatingEvent(event_id="s", item_id="i", rating=4, **kw)):
    ...     history.process(encode_event(e))
    >>> [e.event_id for e in history.events], history.indexes, history.counts.dead_lettered
    (['s'], [3], 1)
    """

    def __init__(self, settings: Settings, forgotten: ForgottenUsers | None = None) -> None:
        self.admission = Admission.from_settings(settings)
        if forgotten is not None:  # their events are filtered, as the live learner does now
            self.admission.forgotten = forgotten
        self.events: list[InteractionEvent] = []
        self.indexes: list[int] = []
        # (partition, offset) of each event on the events topic (-1: not known).
        self.origins: list[tuple[int, int]] = []

    @property
    def counts(self) -> Counts:
        return self.admission.counts

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        return self.admission.profiles.users

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        return self.admission.profiles.items

    def process(self, raw: bytes | None, partition: int = 0, offset: int = -1) -> None:
        """Admit one message (at ``offset`` of ``partition``); keep it if it is an admitted
        interaction event."""
        event = self.admission.admit_raw(raw)
        if isinstance(event, InteractionEvent):
            self.events.append(event)
            self.indexes.append(self.admission.counts.consumed - 1)
            self.origins.append((partition, offset))

    def since(self, partition: int, offset: int) -> list[InteractionEvent]:
        """The events of ``partition`` at ``offset`` and after, in order."""
        return [
            e
            for e, (p, o) in zip(self.events, self.origins, strict=True)
            if p == partition and o >= offset
        ]

    def users_of(self, partition: int) -> set[str]:
        """The users of the events of ``partition``."""
        return {e.user_id for e, (p, _o) in zip(self.events, self.origins, strict=True)
                if p == partition}  # fmt: skip

    def add_admitted(
        self, event: Event, index: int, raw: bytes, origin: tuple[int, int] = (0, -1)
    ) -> None:
        """An event the live gate admitted as the ``index``-th message (from the archive, its
        bytes ``raw``): kept as it is, and remembered like the gate remembers it."""
        gate = self.admission
        user = getattr(event, "user_id", None)
        if user is not None and gate.forgotten.digests and user in gate.forgotten:
            return  # archived before the forget reached the archive
        gate.seen.add(event.event_id, crc32(raw))
        if isinstance(event, InteractionEvent):
            gate.bots.is_bot(event.user_id, event.ts)
            self.events.append(event)
            self.indexes.append(index)
            self.origins.append(origin)
        else:
            gate.profiles.add(event)  # type: ignore[arg-type]  # a profile

    def read_archive(self, archive: EventArchive, end_offsets: dict[int, int]) -> dict[int, int]:
        """Collect the archived events below ``end_offsets``; the counts become the live
        learner's after them. Return the next offset after the archive per partition."""
        found = archive.read(end_offsets)
        limits = self.admission.limits
        for e in found.events:
            origin = (e.partition, e.offset)
            self.add_admitted(decode_event(e.raw, limits), e.event_index, e.raw, origin)
        if found.counts:
            self.admission.counts = Counts(**found.counts)
        return found.ends


def read_history(
    bootstrap_servers: str,
    settings: Settings,
    end_offsets: dict[int, int],
    on_progress: Callable[[int], Any] | None = None,
    timeout: float = 600.0,
    forgotten: ForgottenUsers | None = None,
) -> HistoryCollector:
    """Read the history up to ``end_offsets`` (exclusive): the archive (when enabled), then
    the events topic from where it ends, filtered like the live learner (``forgotten`` users'
    events are left out, wherever they lie). An archive started on a consumer that had
    already checkpointed begins later: the topic gives what is before."""
    collector = HistoryCollector(settings, forgotten)
    deadline = time.monotonic() + timeout
    if not settings.archive.enabled:
        _read_topic(bootstrap_servers, settings, collector, {}, end_offsets, on_progress, deadline)
        return collector
    archive = EventArchive(archive_directory(settings))
    firsts = archive.firsts()
    heads = {p: min(end, firsts[p]) for p, end in end_offsets.items() if firsts.get(p, 0) > 0}
    _read_topic(bootstrap_servers, settings, collector, {}, heads, on_progress, deadline)
    starts = collector.read_archive(archive, end_offsets)
    _read_topic(bootstrap_servers, settings, collector, starts, end_offsets, on_progress, deadline)
    return collector


def _read_topic(
    bootstrap_servers: str,
    settings: Settings,
    collector: HistoryCollector,
    starts: dict[int, int],
    end_offsets: dict[int, int],
    on_progress: Callable[[int], Any] | None,
    deadline: float,
) -> None:
    """Put the events topic's messages from ``starts`` (default 0) up to ``end_offsets``
    through ``collector``."""
    topic = settings.topics.events
    todo = {p: end for p, end in end_offsets.items() if end > starts.get(p, 0)}
    if not todo:
        return
    consumer = clients.reader(
        bootstrap_servers, "history", kafka=settings.kafka, partition_eof=True, bulk=True
    )
    firsts = _first_offsets(consumer, topic, starts, todo)
    todo = {p: end for p, end in todo.items() if end > firsts[p]}
    consumer.assign([TopicPartition(topic, p, firsts[p]) for p in sorted(todo)])
    process = collector.process
    try:
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"history not read in time; missing {todo}")
            for msg in consumer.consume(5000, 0.5):
                if not clients.is_data(msg, source="history read"):
                    continue
                p, offset = msg.partition() or 0, msg.offset() or 0
                end = todo.get(p)
                if end is None or offset >= end:
                    continue
                process(msg.value(), p, offset)
                if offset + 1 >= end:
                    del todo[p]
            if on_progress is not None:
                on_progress(collector.counts.consumed)
    finally:
        consumer.close()


def _first_offsets(
    consumer: Any, topic: str, starts: dict[int, int], todo: dict[int, int]
) -> dict[int, int]:
    """Where to start reading each partition of ``todo``: after the archive, or at the
    topic's first offset when the broker no longer holds the ones before (logged as an
    error: that part of the history is lost)."""
    out = {}
    for p, end in todo.items():
        start = starts.get(p, 0)
        try:
            low, _high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        except KafkaException as err:
            log.warning("history: no watermarks of %s[%d]: %s", topic, p, err)
            low = start
        if low > start:
            log.error(
                "history: offsets %d..%d of %s[%d] are neither archived nor in the topic",
                start,
                min(low, end) - 1,
                topic,
                p,
            )
        out[p] = max(low, start)
    return out
