"""The model-state topic over Kafka: publish (key, value) records, follow the topic.

The records themselves live in :mod:`stream.serving.records`; this module only moves bytes.
The topic has one partition (a total order of updates) and is created compacted where the
broker supports it (see :func:`stream.kafka.broker.ensure_topics`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, Message, TopicPartition

from stream.config import KafkaConfig
from stream.kafka import clients

log = logging.getLogger(__name__)

__all__ = ["ModelStateFollower", "ModelStatePublisher"]


class ModelStatePublisher:
    """Produces model-state records; :meth:`flush` waits until the broker has them all."""

    def __init__(self, bootstrap_servers: str, topic: str, *, kafka: KafkaConfig) -> None:
        self.topic = topic
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []
        self._producer = clients.producer(bootstrap_servers, kafka=kafka, linger_ms=20, bulk=True)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(str(err))

    def publish(self, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Queue every (key, value); return how many (delivery happens in the background).
        A value of None is a tombstone."""
        n = 0
        for key, value in records:
            clients.produce(self._producer, self.topic, value, key, on_delivery=self._on_delivery)
            n += 1
        self.sent += n
        self._producer.poll(0)
        return n

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for the delivery reports; return how many are still outstanding."""
        remaining = int(self._producer.flush(timeout))
        if remaining:
            log.warning("%d model-state records undelivered after %.0fs", remaining, timeout)
        return remaining

    def close(self) -> None:
        self.flush()


class ModelStateFollower:
    """Reads the model-state topic from its beginning, without a consumer group.

    ``caught_up`` turns True once the reader has reached the end of the partition (and stays
    True): from then on its state is as fresh as the topic.
    """

    def __init__(self, bootstrap_servers: str, topic: str, *, kafka: KafkaConfig) -> None:
        self.topic = topic
        self.caught_up = False
        self.next_offset = 0
        self._consumer = clients.reader(
            bootstrap_servers, "model-state-follower", kafka=kafka, partition_eof=True, bulk=True
        )
        self._consumer.assign([TopicPartition(topic, 0, 0)])

    def poll(
        self, timeout: float = 0.5, max_messages: int = 10_000
    ) -> list[tuple[bytes | None, bytes | None]]:
        """The (key, value) of the messages that arrived since the last call."""
        out: list[tuple[bytes | None, bytes | None]] = []
        at_end: set[int] = set()
        for msg in self._consumer.consume(max_messages, timeout):
            if not clients.is_data(msg, at_end, source="model-state follower"):
                continue
            self.next_offset = (msg.offset() or 0) + 1
            out.append((msg.key(), msg.value()))
        if at_end:
            self.caught_up = True
        return out

    def close(self) -> None:
        self._consumer.close()
