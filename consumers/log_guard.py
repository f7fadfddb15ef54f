"""Notices a Kafka log that went backwards and a broker that is gone, for the consumer loop.

A broker that lost its data (an in-memory one restarted, a topic deleted and re-created)
answers a consumer at offset 1,000 with a log of, say, 30 messages. librdkafka then either
resets the position (an ``_AUTO_OFFSET_RESET`` event, or data below the position arrives) or,
with brokers that do not answer "out of range" (the embedded one), waits at 1,000 and later
hands over only what lies past it. :meth:`LogGuard.truncated` sees all three: a reset
event, data below the position, or a fetched high watermark below the position.

What to do is ``consumer.on_log_truncation``: "fail" (the default) raises
:class:`LogTruncated` (the checkpoint is kept: the events the models saw are gone from the
broker, and a replay from an archive is the remedy); "restart-from-beginning" keeps the
learned state and reads the new log from its start.

:meth:`LogGuard.check_broker` raises :class:`BrokerLost` once no broker has been reachable
for ``consumer.broker_lost_timeout_seconds``.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream.config import ConsumerConfig
from stream.kafka.health import BrokerHealth

log = logging.getLogger(__name__)


class LogTruncated(RuntimeError):
    """A partition's log is shorter than the position the consumer had reached."""


class BrokerLost(RuntimeError):
    """No Kafka broker was reachable for longer than the configured timeout."""


class LogGuard:
    """Log truncation and broker loss checks of one consumer (see the module docstring)."""

    def __init__(self, cfg: ConsumerConfig, topic: str, health: BrokerHealth) -> None:
        self.cfg = cfg
        self.topic = topic
        self.health = health
        self._probed_at = 0.0

    def truncated(
        self, consumer: Consumer, batch: list[Message], positions: dict[int, int]
    ) -> dict[int, int]:
        """Partitions whose log went backwards: ``{partition: log end}`` (-1: reset event).

        ``positions`` are the next offsets the consumer expects (restored or consumed).
        """
        found: dict[int, int] = {}
        for msg in batch:
            p, err = msg.partition() or 0, msg.error()
            if err is not None and err.code() == KafkaError._AUTO_OFFSET_RESET:
                found[p] = -1
            elif err is None and p in positions and (msg.offset() or 0) < positions[p]:
                # The client went back by itself (auto.offset.reset after "out of range").
                found.setdefault(p, -1)
        for p, position in positions.items():
            _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            if 0 <= high < position:
                found.setdefault(p, high)
        return found

    def handle(self, consumer: Consumer, partition: int, saved: int, log_end: int) -> None:
        """Say so, then apply the policy: raise (fail) or seek to the log's beginning."""
        end = "an unknown offset (the client reset its position)" if log_end < 0 else str(log_end)
        message = (
            f"log of {self.topic}[{partition}] went backwards: the consumer was at offset "
            f"{saved}, the log now ends at {end} (the broker lost its data?)"
        )
        if self.cfg.on_log_truncation == "fail":
            log.error(
                "%s; stopping without a checkpoint: the events the models saw are gone from "
                "the broker, replay them from an archive (or set consumer.on_log_truncation="
                "restart-from-beginning to go on with the new log)",
                message,
            )
            raise LogTruncated(message)
        log.error(
            "%s; keeping the learned state and consuming the new log from its beginning", message
        )
        if log_end >= 0:  # a reset event: the client is already at the beginning
            consumer.seek(TopicPartition(self.topic, partition, 0))

    def check_broker(self, consumer: Consumer, got_messages: bool) -> None:
        """Raise :class:`BrokerLost` after ``broker_lost_timeout_seconds`` without a broker."""
        health = self.health
        if got_messages:
            health.reachable()
        if health.up:
            return
        now = time.monotonic()
        if now - self._probed_at >= 1.0:
            # Nothing to fetch is no sign of life: ask for metadata, at most once a second.
            self._probed_at = now
            try:
                consumer.list_topics(self.topic, timeout=1.0)
                health.reachable()
                return
            except KafkaException:
                pass
        if health.down_for() > self.cfg.broker_lost_timeout_seconds:
            message = (
                f"no Kafka broker reachable for {health.down_for():.0f}s "
                f"(consumer.broker_lost_timeout_seconds={self.cfg.broker_lost_timeout_seconds:g})"
            )
            log.error("%s; stopping without a checkpoint", message)
            raise BrokerLost(message)
