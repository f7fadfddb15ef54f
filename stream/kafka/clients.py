"""Every Kafka client of the project, built here: one place for the librdkafka settings.

Consumers never auto-commit (the checkpoint decides what is committed, see
:mod:`stream.kafka.checkpoint`), start from the beginning of a topic when they have no offset
(the models must see every event), and producers are idempotent (a retry never writes a
message twice). Each ``*_config`` function returns the plain librdkafka dictionary, so a
setting can be checked without a broker:

>>> tls = KafkaConfig(security_protocol="SSL", extra={"client.id": "fl"})
>>> cfg = consumer_config("127.0.0.1:9092", "g1", kafka=tls, partition_eof=True)
>>> cfg["enable.auto.commit"], cfg["auto.offset.reset"], cfg["enable.partition.eof"]
(False, 'earliest', True)
>>> cfg["security.protocol"], cfg["client.id"]
('SSL', 'fl')
>>> producer_config("127.0.0.1:9092", kafka=tls)["enable.idempotence"]
True

Every builder takes the deployment's :class:`~stream.config.KafkaConfig` (TLS, SASL, any
librdkafka property), so no client connects without it. ``health`` receives the clients'
errors (:class:`~stream.kafka.health.BrokerHealth`: rate-limited log lines, broker loss).

:func:`is_data` is the one filter of consumed messages that every consume loop uses;
:func:`produce` the one way every producer queues a message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from stream.config import KafkaConfig
from stream.kafka.health import BrokerHealth

log = logging.getLogger(__name__)

# Large fetches for the consumers that read the events topic in bulk (the live consumer,
# the history reader): fewer round trips per batch of small messages. A message larger than
# max.partition.fetch.bytes (1 MB) is still fetched whole (librdkafka and the embedded broker,
# measured up to 60 MB; receive.message.max.bytes, 100 MB by default, is the ceiling).
_BULK_FETCH = {"fetch.max.bytes": 64 * 1024 * 1024, "queued.max.messages.kbytes": 262144}
# Producers that publish a stream (the simulator, a replay) batch much more than the ones
# that send a message now and then.
_BULK_PRODUCE = {"batch.num.messages": 10000, "queue.buffering.max.messages": 500000}


def quiet_client_config(kafka: KafkaConfig, health: BrokerHealth | None = None) -> dict[str, Any]:
    """Settings shared by all clients: the deployment's ones, librdkafka logging through
    Python (not to stderr) and its errors reported to ``health`` (a shared one otherwise)."""
    return {
        **kafka.properties(),
        # Errors reach error_cb (rate-limited there); librdkafka's own ERROR lines would
        # repeat each of them, dozens a second while a broker is down.
        "log_level": 2,
        "logger": logging.getLogger("librdkafka"),
        "error_cb": (health or _SHARED_HEALTH).on_error,
    }


# Clients without a health of their own (readers, admin, publishers) still log errors
# rate-limited, not dozens of lines a second while a broker is down.
_SHARED_HEALTH = BrokerHealth()


def check_kafka_config(kafka: KafkaConfig) -> None:
    """Raise ``ValueError`` naming a property librdkafka does not know or a value it refuses.

    librdkafka checks names and values when a client is made: a throwaway producer with no
    broker does that at start-up, not at the first connection.

    >>> check_kafka_config(KafkaConfig(extra={"ssl.nope": 1}))
    Traceback (most recent call last):
    ...
    ValueError: kafka settings refused by librdkafka: No such configuration property: "ssl.nope"
    """
    props = kafka.properties()
    if not props:
        return
    try:
        Producer({**props, "log_level": 0})
    except KafkaException as err:
        raise ValueError(f"kafka settings refused by librdkafka: {err.args[0].str()}") from None


def consumer_config(
    bootstrap_servers: str,
    group_id: str,
    *,
    kafka: KafkaConfig,
    health: BrokerHealth | None = None,
    partition_eof: bool = False,
    bulk: bool = False,
    session_timeout_ms: int | None = None,
) -> dict[str, Any]:
    """A consumer that commits only explicitly and starts at the beginning of a topic.

    ``partition_eof`` reports the end of each partition as a message: the embedded broker's
    ListOffsets answer for the latest offset is wrong, so that is how the end is known.
    """
    cfg: dict[str, Any] = {
        **quiet_client_config(kafka, health),
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": partition_eof,
    }
    if session_timeout_ms is not None:
        cfg["session.timeout.ms"] = session_timeout_ms
    if bulk:
        cfg.update(_BULK_FETCH)
    return cfg


def producer_config(
    bootstrap_servers: str,
    *,
    kafka: KafkaConfig,
    health: BrokerHealth | None = None,
    linger_ms: int = 5,
    bulk: bool = False,
    max_message_bytes: int | None = None,
    message_timeout_ms: int | None = None,
) -> dict[str, Any]:
    """An idempotent producer (``bulk``: queues sized for a stream of events;
    ``max_message_bytes``: the largest message it sends, librdkafka's 1 MB by default;
    ``message_timeout_ms``: when a message that could not be delivered is reported failed)."""
    cfg: dict[str, Any] = {
        "linger.ms": linger_ms,
        **quiet_client_config(kafka, health),
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
    }
    if max_message_bytes is not None:
        cfg["message.max.bytes"] = max_message_bytes
    if bulk:
        cfg.update(_BULK_PRODUCE)
    if message_timeout_ms is not None:
        cfg["message.timeout.ms"] = message_timeout_ms
    return cfg


def admin_config(bootstrap_servers: str, *, kafka: KafkaConfig) -> dict[str, Any]:
    return {**quiet_client_config(kafka), "bootstrap.servers": bootstrap_servers}


def group_consumer(
    bootstrap_servers: str,
    group_id: str,
    *,
    kafka: KafkaConfig,
    health: BrokerHealth | None = None,
    session_timeout_ms: int | None = None,
    partition_eof: bool = False,
    bulk: bool = False,
) -> Consumer:
    """A member of consumer group ``group_id`` (subscribes; commits explicitly)."""
    return Consumer(
        consumer_config(
            bootstrap_servers,
            group_id,
            kafka=kafka,
            health=health,
            partition_eof=partition_eof,
            bulk=bulk,
            session_timeout_ms=session_timeout_ms,
        )
    )


def reader(
    bootstrap_servers: str,
    purpose: str,
    *,
    kafka: KafkaConfig,
    partition_eof: bool = False,
    bulk: bool = False,
    fetch_wait_ms: int | None = None,
) -> Consumer:
    """A consumer outside any shared group: it assigns partitions itself and never commits.

    ``fetch_wait_ms`` bounds how long the broker may hold a fetch open waiting for data (the
    client default is 500 ms): a reader that needs new messages soon sets it low.
    """
    group = f"{purpose}-{uuid.uuid4().hex[:8]}"
    cfg = consumer_config(
        bootstrap_servers, group, kafka=kafka, partition_eof=partition_eof, bulk=bulk
    )
    if fetch_wait_ms is not None:
        cfg["fetch.wait.max.ms"] = fetch_wait_ms
    return Consumer(cfg)


def producer(
    bootstrap_servers: str,
    *,
    kafka: KafkaConfig,
    health: BrokerHealth | None = None,
    linger_ms: int = 5,
    bulk: bool = False,
    max_message_bytes: int | None = None,
    message_timeout_ms: int | None = None,
) -> Producer:
    """An idempotent producer (see :func:`producer_config`)."""
    return Producer(
        producer_config(
            bootstrap_servers,
            kafka=kafka,
            health=health,
            linger_ms=linger_ms,
            bulk=bulk,
            max_message_bytes=max_message_bytes,
            message_timeout_ms=message_timeout_ms,
        )
    )


#: A delivery report callback: the error (None when delivered) and the message.
OnDelivery = Callable[[KafkaError | None, Message], None]
#: Message headers as ``Producer.produce`` takes them.
Headers = list[tuple[str, str | bytes | None]]


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    *,
    partition: int = -1,
    headers: Headers | None = None,
    on_delivery: OnDelivery | None = None,
    wait_for_room: bool = True,
) -> None:
    """Queue one message: to ``partition``, or (-1) to the key's partition.

    When the local queue is full, serve delivery reports until there is room (the broker
    acknowledging what is queued makes it); with ``wait_for_room=False`` raise the
    ``BufferError`` instead, for a caller that must not block (an HTTP request).
    """
    extra: dict[str, Any] = {}
    if headers is not None:
        extra["headers"] = headers
    if on_delivery is not None:
        extra["on_delivery"] = on_delivery
    while True:
        try:
            producer.produce(topic, value, key, partition=partition, **extra)
            return
        except BufferError:
            if not wait_for_room:
                raise
            producer.poll(0.05)


def partition_count(client: Producer, topic: str, timeout: float = 30.0) -> int:
    """How many partitions ``topic`` has (raise ``RuntimeError`` when it cannot be read)."""
    meta = client.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise RuntimeError(f"cannot read the partitions of topic {topic}: {meta}")
    return len(meta.partitions)


def admin(bootstrap_servers: str, *, kafka: KafkaConfig) -> AdminClient:
    return AdminClient(admin_config(bootstrap_servers, kafka=kafka))


def is_data(msg: Message, at_end: set[int] | None = None, source: str = "consumer") -> bool:
    """True for a message that carries data; False for an error event, which it handles.

    The end of a partition (``PARTITION_EOF``) is skipped and, with ``at_end``, recorded there;
    a fatal error raises :class:`KafkaException` (the client cannot go on); any other error is
    transient (librdkafka retries by itself) and only logged.
    """
    err = msg.error()
    if err is None:
        return True
    if err.code() == KafkaError._PARTITION_EOF:
        if at_end is not None:
            at_end.add(msg.partition() or 0)
    elif err.fatal():
        raise KafkaException(err)
    else:
        log.warning("%s error: %s", source, err)
    return False
