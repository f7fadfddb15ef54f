"""The control topic over Kafka: publish one control message, read the topic from an offset.

The message types live in :mod:`stream.events.control`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition
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


def read_control(
    bootstrap_servers: str, topic: str, *, kafka: KafkaConfig, timeout: float = 60.0
) -> list[ControlMessage]:
    """Every decodable message of the control topic, from its start to its current end."""
    consumer = clients.reader(bootstrap_servers, "control-scan", kafka=kafka, partition_eof=True)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[ControlMessage] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while not at_end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"control topic {topic} not read to its end in {timeout}s")
            for msg in consumer.consume(500, 0.5):
                if clients.is_data(msg, at_end, source="control topic"):
                    try:
                        out.append(decode_control(msg.value() or b""))
                    except ValidationError:
                        continue  # not a message anyone can act on
    finally:
        consumer.close()
    return out


@dataclass(frozen=True)
class ControlRecord:
    """One message of the control topic: ``message`` is None when it could not be decoded
    (``error`` says why); ``raw`` is kept so an unusable message can be dead-lettered."""

    raw: Message
    message: ControlMessage | None
    error: str = ""


class ControlReader:
    """Reads the control topic from a given offset, without a consumer group."""

    def __init__(
        self, bootstrap_servers: str, topic: str, start_offset: int = 0, *, kafka: KafkaConfig
    ) -> None:
        self.topic = topic
        self.next_offset = start_offset
        self._consumer = clients.reader(bootstrap_servers, "control-reader", kafka=kafka)
        self._consumer.assign([TopicPartition(topic, 0, start_offset)])

    def seek(self, offset: int) -> None:
        """Read on from ``offset`` (back, for a learner that has read less of the topic)."""
        self.next_offset = offset
        self._consumer.assign([TopicPartition(self.topic, 0, offset)])

    def poll(self, timeout: float = 0.0) -> list[ControlRecord]:
        """Messages that arrived since the last call, undecodable ones included."""
        out: list[ControlRecord] = []
        for msg in self._consumer.consume(100, timeout):
            if not clients.is_data(msg, source="control topic"):
                continue
            self.next_offset = (msg.offset() or 0) + 1
            try:
                out.append(ControlRecord(msg, decode_control(msg.value() or b"")))
            except ValidationError as err:
                why = "; ".join(f"{e['type']}: {e['msg']}" for e in err.errors()[:3])
                out.append(ControlRecord(msg, None, why))
        return out

    def close(self) -> None:
        self._consumer.close()
