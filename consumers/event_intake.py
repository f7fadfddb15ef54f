"""Events posted over HTTP: validated all or nothing, then published and acknowledged.

:func:`validate_events` uses the consumer's own codec and limits, so what it refuses would
have been dead-lettered by the consumer (except unknown users and items: the consumer
decides those). :class:`EventSink` publishes and lets a request wait for the broker's
acknowledgement of its own events: an accepted event is never lost. It partitions them as
:class:`~stream.kafka.publisher.EventPublisher` does: by user, and an item profile to every
partition (every partition's learner needs every item).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message
from pydantic import BaseModel, Field

from stream.config import KafkaConfig, Settings
from stream.events import Event, InvalidEvent, decode_event, encode_event
from stream.kafka import clients
from stream.kafka.publisher import destinations, event_key, is_item_profile

__all__ = [
    "DELIVERY_TIMEOUT_SECONDS",
    "MAX_EVENTS_PER_REQUEST",
    "BodyRefused",
    "DeliveryFailed",
    "EventError",
    "EventSink",
    "validate_events",
]

log = logging.getLogger(__name__)

#: Events one ``POST /events`` may carry (a bigger batch gets 413: split it).
MAX_EVENTS_PER_REQUEST = 10_000
#: Seconds to wait for the broker to acknowledge posted events before answering 503.
DELIVERY_TIMEOUT_SECONDS = 15.0


class EventError(BaseModel):
    index: int = Field(description="Position of the event in the posted array (0: single).")
    kind: str = Field(description="malformed_json, unknown_type or invalid_event.")
    event_type: str
    reason: str


class BodyRefused(ValueError):
    """A posted body that holds no events to validate (not JSON, empty, too many)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge every event of a request."""


class EventSink:
    """Publishes events and lets a request await the broker's acknowledgement of its own.

    One idempotent producer per process; a thread serves its delivery reports, which resolve
    each request's future on the event loop.
    """

    def __init__(
        self, bootstrap_servers: str, topic: str, timeout: float, *, kafka: KafkaConfig
    ) -> None:
        self.topic = topic
        self.timeout = timeout
        # librdkafka gives up on a message after the timeout and reports the failure: every
        # request's future resolves, one way or the other.
        self._producer = clients.producer(
            bootstrap_servers, kafka=kafka, linger_ms=1, message_timeout_ms=int(timeout * 1000)
        )
        self._partitions: int | None = None  # of the topic, read at the first item profile
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="event-sink", daemon=True)
        self._thread.start()

    def partitions(self) -> int:
        """How many partitions the topic has (asked once; it blocks: not on the event loop)."""
        if self._partitions is None:
            self._partitions = clients.partition_count(self._producer, self.topic, self.timeout)
        return self._partitions

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def publish(self, events: Sequence[Event]) -> None:
        """Produce every event; return once all are acknowledged, else raise."""
        if self._partitions is None and any(is_item_profile(e) for e in events):
            try:
                await asyncio.to_thread(self.partitions)
            except (RuntimeError, KafkaException) as err:
                raise DeliveryFailed(str(err)) from None
        records = [
            (event_key(e), encode_event(e), partition)
            for e in events
            for partition in destinations(e, self.partitions)
        ]
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[str]] = loop.create_future()
        errors: list[str] = []
        pending = len(records)
        lock = threading.Lock()

        def resolve() -> None:
            if not done.done():
                done.set_result(errors)

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            nonlocal pending
            with lock:
                if err is not None:
                    errors.append(str(err))
                pending -= 1
                last = pending == 0
            if last:
                with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                    loop.call_soon_threadsafe(resolve)

        for key, value, partition in records:
            try:
                # Not waiting for room: that would hold up every request on the event loop.
                clients.produce(
                    self._producer,
                    self.topic,
                    value,
                    key,
                    partition=partition,
                    on_delivery=on_delivery,
                    wait_for_room=False,
                )
            except BufferError:
                raise DeliveryFailed("the local produce queue is full; retry") from None
        try:
            failures = await asyncio.wait_for(done, self.timeout + 5)
        except TimeoutError:
            raise DeliveryFailed(f"not acknowledged within {self.timeout:.0f}s") from None
        if failures:
            raise DeliveryFailed(f"{len(failures)} not delivered: {failures[0]}")

    def close(self) -> None:
        remaining = self._producer.flush(self.timeout)
        if remaining:
            log.warning("%d posted events undelivered at shutdown", remaining)
        self._stop.set()
        self._thread.join()


def validate_events(body: bytes, settings: Settings) -> tuple[list[Event], list[EventError]]:
    """The valid events of a posted body and the reason of each invalid one.

    Raise :class:`BodyRefused` when the body is not an event or an array of them.

    The same codec as the consumer's admission, so what is refused here would have been
    dead-lettered there (except unknown users and items: the consumer decides those).

    >>> ok, errors = validate_events(b'[{"type": "teleport", "event_id": "e", "ts": 1.7e9}]',
    ...                              Settings())
    >>> ok, errors[0].kind, errors[0].reason.split(";")[0]
    ([], 'unknown_type', "unknown event type 'teleport'")
    >>> validate_events(b'{"type": ', Settings())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    consumers.event_intake.BodyRefused: malformed JSON: unexpected end of data...
    """
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BodyRefused(400, f"malformed JSON: {err}") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise BodyRefused(422, "no events: post one event object or a non-empty array")
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise BodyRefused(
            413, f"{len(items)} events: at most {MAX_EVENTS_PER_REQUEST} in one request"
        )
    events: list[Event] = []
    errors: list[EventError] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(
                EventError(
                    index=i,
                    kind="malformed_json",
                    event_type="invalid",
                    reason=f"an event is a JSON object, not {type(item).__name__}",
                )
            )
            continue
        try:
            events.append(decode_event(orjson.dumps(item), settings.limits))
        except InvalidEvent as err:
            errors.append(
                EventError(index=i, kind=err.kind, event_type=err.event_type, reason=err.reason)
            )
    return events, errors
