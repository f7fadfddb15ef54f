"""Event history for batch retraining and for catching a swapped model up.

The history is the events topic itself, read from the beginning up to given offsets and put
through the live learner's own gate (:class:`~stream.events.Admission`: validation,
de-duplication, known ids, bot filter). So the retrainer trains on exactly the events the
live models learned, in the same order, with the same profiles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from stream.config import Settings
from stream.events import Admission, Counts, InteractionEvent
from stream.kafka import clients

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

    def __init__(self, settings: Settings) -> None:
        self.admission = Admission.from_settings(settings)
        self.events: list[InteractionEvent] = []
        self.indexes: list[int] = []

    @property
    def counts(self) -> Counts:
        return self.admission.counts

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        return self.admission.profiles.users

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        return self.admission.profiles.items

    def process(self, raw: bytes | None) -> None:
        """Admit one message; keep it if it is an admitted interaction event."""
        event = self.admission.admit_raw(raw)
        if isinstance(event, InteractionEvent):
            self.events.append(event)
            self.indexes.append(self.admission.counts.consumed - 1)


def read_history(
    bootstrap_servers: str,
    settings: Settings,
    end_offsets: dict[int, int],
    on_progress: Callable[[int], Any] | None = None,
    timeout: float = 600.0,
) -> HistoryCollector:
    """Read the events topic from the start up to ``end_offsets`` (exclusive) and filter it."""
    topic = settings.topics.events
    collector = HistoryCollector(settings)
    todo = {p: end for p, end in end_offsets.items() if end > 0}
    if not todo:
        return collector
    consumer = clients.reader(
        bootstrap_servers, "history", kafka=settings.kafka, partition_eof=True, bulk=True
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
    process, deadline = collector.process, time.monotonic() + timeout
    try:
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"history not read within {timeout}s; missing {todo}")
            for msg in consumer.consume(5000, 0.5):
                if not clients.is_data(msg, source="history read"):
                    continue
                p, offset = msg.partition() or 0, msg.offset() or 0
                end = todo.get(p)
                if end is None or offset >= end:
                    continue
                process(msg.value())
                if offset + 1 >= end:
                    del todo[p]
            if on_progress is not None:
                on_progress(collector.counts.consumed)
    finally:
        consumer.close()
    return collector
