"""Messages on the control topic: retrain requests, published models, activations.

The consumer publishes :class:`RetrainRequest` when its policy decides; the retrainer answers
with :class:`ModelPublished` (or :class:`RetrainFailed`); ``feedback-loop retrain`` publishes a
:class:`RetrainTrigger` and ``feedback-loop rollback`` a :class:`ModelActivated`.

>>> raw = encode_control(RetrainTrigger(reason="manual"))
>>> decode_control(raw).type
'retrain_trigger'
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Annotated, Any, Literal

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from stream.broker import quiet_client_config

log = logging.getLogger(__name__)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ts: float = Field(default_factory=time.time)


class RetrainTrigger(_Message):
    """Ask the consumers to request a retrain now (manual trigger)."""

    type: Literal["retrain_trigger"] = "retrain_trigger"
    reason: str = "manual"


class RetrainRequest(_Message):
    """A consumer's decision: rebuild the models from the events before ``offsets``."""

    type: Literal["retrain_request"] = "retrain_request"
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    event_index: int
    offsets: dict[int, int]  # events partition -> next offset covered by the history
    reason: str
    signals: tuple[str, ...] = ()
    champion: dict[str, float] | None = None  # HoldoutLosses of the live models


class ModelPublished(_Message):
    """The retrainer's answer: a new registry version, accepted or not."""

    type: Literal["model_published"] = "model_published"
    request_id: str
    version: int
    accepted: bool
    offsets: dict[int, int]
    event_index: int
    outcome: dict[str, Any]


class RetrainFailed(_Message):
    type: Literal["retrain_failed"] = "retrain_failed"
    request_id: str
    error: str


class ModelActivated(_Message):
    """Make consumers load this registry version (e.g. a rollback)."""

    type: Literal["model_activated"] = "model_activated"
    version: int
    reason: str = "rollback"


ControlMessage = Annotated[
    RetrainTrigger | RetrainRequest | ModelPublished | RetrainFailed | ModelActivated,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)


def encode_control(message: _Message) -> bytes:
    return message.model_dump_json().encode()


def decode_control(raw: bytes) -> ControlMessage:
    return _ADAPTER.validate_json(raw)


def publish_control(bootstrap_servers: str, topic: str, message: _Message) -> None:
    """Publish one control message and wait for the broker's acknowledgement."""
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True,
         **quiet_client_config()}
    )
    errors: list[str] = []
    producer.produce(
        topic, encode_control(message), key=message.type.encode(),  # type: ignore[attr-defined]
        on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
    )
    if producer.flush(30) or errors:
        raise RuntimeError(f"control message not delivered to {topic}: {errors}")


class ControlReader:
    """Reads the control topic from a given offset, without a consumer group."""

    def __init__(self, bootstrap_servers: str, topic: str, start_offset: int = 0) -> None:
        self.topic = topic
        self.next_offset = start_offset
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"control-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                **quiet_client_config(),
            }
        )
        self._consumer.assign([TopicPartition(topic, 0, start_offset)])

    def poll(self, timeout: float = 0.0) -> list[ControlMessage]:
        """Messages that arrived since the last call (invalid ones are logged and skipped)."""
        out: list[ControlMessage] = []
        for msg in self._consumer.consume(100, timeout):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("control topic error: %s", err)
                continue
            self.next_offset = (msg.offset() or 0) + 1
            try:
                out.append(decode_control(msg.value() or b""))
            except ValidationError as err:
                log.error("invalid control message at offset %s: %s", msg.offset(), err)
        return out

    def close(self) -> None:
        self._consumer.close()
