"""Publish events to Kafka: keyed by user, idempotent, every delivery report counted.

>>> pub = EventPublisher("127.0.0.1:9092", "feedback.events", kafka=KafkaConfig())  # doctest: +SKIP
>>> pub.publish({"type": "click", "event_id": "e1", "user_id": "u1", "item_id": "i1",
...              "ts": 1.7e9})  # doctest: +SKIP
>>> pub.flush().delivered  # doctest: +SKIP
1
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from stream.config import KafkaConfig
from stream.events import BaseEvent, encode_event
from stream.kafka import clients

log = logging.getLogger(__name__)

#: What a producer hands to the publisher: a typed event, a dict in the event schema, or raw
#: bytes (published as they are; the consumer validates them).
Record = BaseEvent | dict[str, Any] | bytes


@dataclass
class DeliveryStats:
    """What the broker acknowledged; ``end_offsets`` is the next offset per partition."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    end_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.sent - self.delivered - self.failed


def event_key(record: Record) -> bytes | None:
    """Partition key: the user (so one user's events stay in order), else the item."""
    if isinstance(record, bytes):
        return None
    get = record.get if isinstance(record, dict) else lambda k: getattr(record, k, None)
    key = get("user_id") or get("item_id")
    return str(key).encode() if key is not None else None


class EventPublisher:
    """An idempotent Kafka producer for feedback events (objects, dicts or raw bytes)."""

    def __init__(self, bootstrap_servers: str, topic: str, *, kafka: KafkaConfig) -> None:
        self.topic = topic
        self.stats = DeliveryStats()
        self._producer = clients.producer(bootstrap_servers, kafka=kafka, bulk=True)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.stats.failed += 1
            if len(self.stats.errors) < 20:
                self.stats.errors.append(str(err))
            return
        self.stats.delivered += 1
        part, nxt = msg.partition() or 0, (msg.offset() or 0) + 1
        if nxt > self.stats.end_offsets.get(part, 0):
            self.stats.end_offsets[part] = nxt

    def publish(self, record: Record, key: bytes | None = None) -> None:
        if isinstance(record, bytes):
            value = record
        elif isinstance(record, dict):
            value = orjson.dumps(record)
        else:
            value = encode_event(record)
        self.publish_raw(value, key if key is not None else event_key(record))

    def publish_raw(self, value: bytes, key: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                self._producer.poll(0.05)
        self.stats.sent += 1
        if self.stats.sent % 5000 == 0:
            self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> DeliveryStats:
        """Wait for every delivery report (or the timeout); return the counts."""
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("%d messages still undelivered after %.0fs", remaining, timeout)
        return self.stats
