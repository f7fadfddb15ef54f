"""Dead letters: rejected messages, as they came, with why and where from in headers.

A letter carries its source message whole when it fits in ``max_bytes`` (value, key and
headers); a larger one is cut to fit and says so: ``source.truncated: true`` and the original
sizes in ``source.value.bytes`` / ``source.key.bytes``. A message with no value at all (a
tombstone) is sent with no value and ``source.value: null``, so it differs from an empty one.
The reason header is bounded too, so no rejected message can make its letter unsendable.

Delivery is at-least-once. Letters are produced as messages are rejected and flushed by the
checkpoint *before* it saves the offsets that cover their source messages; a crash before
that re-applies the sources after the restart, which sends their letters again with the same
``source.partition``/``source.offset`` headers to de-duplicate on.

>>> dict(letter_headers("invalid_event", "rating 11.0 is outside the scale", "ev", 0, 7))[
...     "source.offset"]
b'7'
>>> value, key, headers = fit(b"x" * 5000, b"u1", [], max_bytes=1000)
>>> len(value) + len(key) <= 1000, dict(headers)
(True, {'source.truncated': b'true', 'source.value.bytes': b'5000', 'source.key.bytes': b'2'})
"""

from __future__ import annotations

from typing import Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from stream.config import KafkaConfig
from stream.events.text import clip
from stream.kafka import clients
from stream.kafka.health import BrokerHealth

Headers = clients.Headers

# What the producer accepts above a letter's payload (per-message framing overhead).
PRODUCER_HEADROOM: Final = 64 * 1024
# A key kept whole even in a cut letter; a longer one is cut to this.
_KEY_BYTES: Final = 1024
# Headers a cut letter adds (names and values), reserved before cutting the value.
_SIZE_HEADERS_BYTES: Final = 128


def letter_headers(kind: str, reason: str, topic: str, partition: int, offset: int) -> Headers:
    return [
        ("error.kind", kind.encode()),
        # A reason may quote a lone surrogate from a message's JSON: never fail to encode it.
        ("error.reason", clip(reason).encode(errors="backslashreplace")),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


def fit(value: bytes, key: bytes, headers: Headers, max_bytes: int) -> tuple[bytes, bytes, Headers]:
    """The letter's value, key and headers: as given when they fit in ``max_bytes``, else
    the key (when long) and the value cut, with headers giving the original sizes."""
    head = sum(len(name) + len(v or b"") for name, v in headers)
    if len(value) + len(key) + head <= max_bytes:
        return value, key, headers
    sizes: Headers = [
        ("source.truncated", b"true"),
        ("source.value.bytes", str(len(value)).encode()),
        ("source.key.bytes", str(len(key)).encode()),
    ]
    key = key[:_KEY_BYTES]
    room = max(max_bytes - len(key) - head - _SIZE_HEADERS_BYTES, 0)
    return value[:room], key, headers + sizes


class DeadLetters:
    """Produces dead letters to ``topic`` through ``producer`` (see ``clients.producer``; its
    ``message.max.bytes`` must exceed ``max_bytes``, the largest letter, by
    :data:`PRODUCER_HEADROOM`)."""

    @classmethod
    def connect(
        cls,
        bootstrap_servers: str,
        topic: str,
        max_bytes: int,
        *,
        kafka: KafkaConfig,
        health: BrokerHealth | None = None,
        linger_ms: int = 5,
    ) -> DeadLetters:
        """Dead letters of at most ``max_bytes`` through a producer of their own."""
        producer = clients.producer(
            bootstrap_servers,
            kafka=kafka,
            health=health,
            linger_ms=linger_ms,
            max_message_bytes=max_bytes + PRODUCER_HEADROOM,
        )
        return cls(producer, topic, max_bytes)

    def __init__(self, producer: Producer, topic: str, max_bytes: int) -> None:
        self.topic = topic
        self.max_bytes = max_bytes
        self._producer = producer
        self._failed: list[str] = []

    def send(self, msg: Message, kind: str, reason: str) -> None:
        """Queue ``msg`` (value and key as consumed, cut to fit) as a dead letter."""
        headers = letter_headers(
            kind, reason, msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        )
        source, source_key = msg.value(), msg.key()
        if source is None:
            headers.append(("source.value", b"null"))
        value, key, headers = fit(source or b"", source_key or b"", headers, self.max_bytes)
        clients.produce(
            self._producer,
            self.topic,
            None if source is None else value,
            None if source_key is None else key,
            headers=headers,
            on_delivery=self._on_delivery,
        )
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(str(err))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued letter is acknowledged; raise if one is not."""
        undelivered = self._producer.flush(timeout)
        failed, self._failed = self._failed, []
        if undelivered or failed:
            raise KafkaException(
                f"{undelivered} dead letters undelivered, {len(failed)} failed "
                f"({failed[:3]}); not checkpointing"
            )

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, as a stopping process does."""
        self._producer.flush(timeout)

    def abandon(self) -> None:
        """Drop what is queued, as a dying process does (re-sent after the restart)."""
        self._producer.purge()
        self._producer.flush(0)
