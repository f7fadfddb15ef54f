"""The control topic over Kafka: publish one control message, read the topic from an offset.

The message types live in :mod:`stream.events.control`.
"""

from __future__ import annotations

import logging

from confluent_kafka import TopicPartition
from pydantic import ValidationError

from stream.config import KafkaConfig
from stream.events import ControlMessage, ControlMessageBase, decode_control, encode_control
from stream.kafka import clients

log = logging.getLogger(__name__)


def publish_control(
    bootstrap_servers: str, topic: str, message: ControlMessageBase, *, kafka: KafkaConfig
) -> None:
    """Publish one control message and wait for the broker's acknowledgement."""
    producer = clients.producer(bootstrap_servers, kafka=kafka)
    errors: list[str] = []
    producer.produce(
        topic,
        encode_control(message),
        key=message.type.encode(),  # type: ignore[attr-defined]
        on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
    )
    if producer.flush(30) or errors:
        raise RuntimeError(f"control message not delivered to {topic}: {errors}")


class ControlReader:
    """Reads the control topic from a given offset, without a consumer group."""

    def __init__(
        self, bootstrap_servers: str, topic: str, start_offset: int = 0, *, kafka: KafkaConfig
    ) -> None:
        self.topic = topic
        self.next_offset = start_offset
        self._consumer = clients.reader(bootstrap_servers, "control-reader", kafka=kafka)
        self._consumer.assign([TopicPartition(topic, 0, start_offset)])

    def poll(self, timeout: float = 0.0) -> list[ControlMessage]:
        """Messages that arrived since the last call (invalid ones are logged and skipped)."""
        out: list[ControlMessage] = []
        for msg in self._consumer.consume(100, timeout):
            if not clients.is_data(msg, source="control topic"):
                continue
            self.next_offset = (msg.offset() or 0) + 1
            try:
                out.append(decode_control(msg.value() or b""))
            except ValidationError as err:
                log.error("invalid control message at offset %s: %s", msg.offset(), err)
        return out

    def close(self) -> None:
        self._consumer.close()
