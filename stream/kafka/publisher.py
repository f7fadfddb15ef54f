"""Publish events to Kafka: keyed by user, idempotent, every delivery report counted.

Every partition's learner needs every item's profile (its users click on any item), so an
item profile is sent to every partition of the topic, the way Kafka Streams replicates a
global table to every instance: each partition holds its own copy, in order with its events.
User profiles go with their user's events.

>>> pub = EventPublisher("127.0.0.1:9092", "feedback.events", kafka=KafkaConfig())  # doctest: +SKIP
>>> pub.publish({"type": "click", "event_id": "e1", "user_id": "u1", "item_id": "i1",
...              "ts": 1.7e9})  # doctest: +SKIP
>>> pub.flush().delivered  # doctest: +SKIP
1
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from stream.config import KafkaConfig
from stream.events import BaseEvent, ItemProfileEvent, encode_event
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

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Count one delivery report (a producer's ``on_delivery``)."""
        if err is not None:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(str(err))
            return
        self.delivered += 1
        part, nxt = msg.partition() or 0, (msg.offset() or 0) + 1
        if nxt > self.end_offsets.get(part, 0):
            self.end_offsets[part] = nxt


def is_item_profile(record: Record) -> bool:
    """Whether ``record`` is an item profile (raw bytes are not looked into)."""
    if isinstance(record, dict):
        return record.get("type") == "item_profile"
    return isinstance(record, ItemProfileEvent)


def destinations(record: Record, partitions: Callable[[], int]) -> range | tuple[int]:
    """The partitions to send ``record`` to: every one of the topic (``partitions()`` of
    them, asked only then) for an item profile, else -1: its key's partition.

    >>> destinations({"type": "item_profile", "item_id": "i1"}, lambda: 3)
    range(0, 3)
    >>> destinations({"type": "click", "user_id": "u1"}, lambda: 3)
    (-1,)
    """
    if is_item_profile(record):
        n = partitions()
        if n > 1:
            return range(n)
    return (-1,)


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
        self._partitions: int | None = None  # of the topic, read at the first item profile

    def partitions(self) -> int:
        """How many partitions the topic has (asked once)."""
        if self._partitions is None:
            self._partitions = clients.partition_count(self._producer, self.topic)
        return self._partitions

    def publish(self, record: Record, key: bytes | None = None) -> None:
        if isinstance(record, bytes):
            value = record
        elif isinstance(record, dict):
            value = orjson.dumps(record)
        else:
            value = encode_event(record)
        key = key if key is not None else event_key(record)
        for partition in destinations(record, self.partitions):
            self.publish_raw(value, key, partition)

    def publish_raw(self, value: bytes, key: bytes | None, partition: int = -1) -> None:
        """Send ``value``; to ``partition``, or (-1) to the key's partition."""
        clients.produce(
            self._producer,
            self.topic,
            value,
            key,
            partition=partition,
            on_delivery=self.stats.on_delivery,
        )
        self.stats.sent += 1
        if self.stats.sent % 5000 == 0:
            self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> DeliveryStats:
        """Wait for every delivery report (or the timeout); return the counts."""
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("%d messages still undelivered after %.0fs", remaining, timeout)
        return self.stats
