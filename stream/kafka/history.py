"""Event history for batch retraining and for catching a swapped model up.

The history is the events topic itself, read from the beginning up to given offsets and put
through the same validation, de-duplication and filters as the live learner
(:class:`HistoryCollector` is a :class:`~stream.learner.learner.FeedbackLearner` that collects
interaction events instead of learning them). So the retrainer trains on exactly the events
the live models learned, in the same order.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from stream.config import Settings
from stream.events import (
    ClickEvent,
    DwellEvent,
    ImpressionEvent,
    InteractionEvent,
    RatingEvent,
)
from stream.kafka.broker import quiet_client_config
from stream.learner import FeedbackLearner

log = logging.getLogger(__name__)


class HistoryCollector(FeedbackLearner):
    """Applies profiles and filters like the learner, but collects interaction events.

    ``indexes[k]`` is the learner's event index (messages consumed before it) of
    ``events[k]``.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.events: list[InteractionEvent] = []
        self.indexes: list[int] = []
        for kind in (RatingEvent, ClickEvent, ImpressionEvent, DwellEvent):
            self._handlers[kind] = self._collect

    def _collect(self, event: InteractionEvent) -> None:
        self.events.append(event)
        self.indexes.append(self.counts.consumed - 1)


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
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"history-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
            **quiet_client_config(),
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
    process, deadline = collector.process, time.monotonic() + timeout
    try:
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"history not read within {timeout}s; missing {todo}")
            for msg in consumer.consume(5000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("history read error: %s", err)
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
