"""Dead letters: rejected messages, as they came, with why and where from in headers.

Delivery is at-least-once. Letters are produced as messages are rejected and flushed by the
checkpoint *before* it saves the offsets that cover their source messages; a crash before
that re-applies the sources after the restart, which sends their letters again with the same
``source.partition``/``source.offset`` headers to de-duplicate on.

>>> dict(letter_headers("invalid_event", "rating 11.0 is outside the scale", "ev", 0, 7))[
...     "source.offset"]
b'7'
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Message, Producer

Headers = list[tuple[str, str | bytes | None]]


def letter_headers(kind: str, reason: str, topic: str, partition: int, offset: int) -> Headers:
    return [
        ("error.kind", kind.encode()),
        ("error.reason", reason.encode()),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


class DeadLetters:
    """Produces dead letters to ``topic`` through ``producer`` (see ``clients.producer``)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.topic = topic
        self._producer = producer
        self._failed: list[str] = []

    def send(self, msg: Message, kind: str, reason: str) -> None:
        """Queue ``msg`` (value and key as consumed) as a dead letter."""
        headers = letter_headers(
            kind, reason, msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        )
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    msg.value() or b"",
                    msg.key(),
                    headers=headers,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                self._producer.poll(0.05)
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
