"""The Kafka plumbing of the consumer: group membership, batches, dead letters, checkpoints.

The user logic lives in :class:`stream.learner.learner.FeedbackLearner`; this module only moves
bytes between Kafka and it. The order of operations is what makes a crash harmless:

1. consume a batch and apply every message (dead letters are produced as they come);
2. every ``checkpoint_every_*``: flush the dead-letter producer, atomically save the learner
   with the offsets it covers, then commit those offsets to the group;
3. on start, restore the checkpoint and seek each assigned partition to its saved offset
   (the beginning of the partition when there is no checkpoint: the models must see it all).

Events applied after the last checkpoint are lost with the process and applied again after
the restart on top of the state that had not seen them, so the final state is the same as an
uninterrupted run. Dead letters are at-least-once: a re-applied batch may send one again, with
the same ``source.partition``/``source.offset`` headers to de-duplicate on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from consumers.model_control import ModelControl
from stream.config import Settings
from stream.kafka.broker import quiet_client_config
from stream.kafka.checkpoint import CheckpointStore
from stream.learner import FeedbackLearner, Rejection
from stream.observability.logs import ProgressLog
from stream.observability.metrics import PipelineMetrics

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    learner: FeedbackLearner
    messages: int  # consumed by this run (after any restore)
    seconds: float  # from the first message to the end of the last batch
    restored_from_checkpoint: bool

    @property
    def events_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class FeedbackConsumer:
    """A long-running consumer of the events topic that feeds a :class:`FeedbackLearner`."""

    def __init__(
        self,
        settings: Settings,
        bootstrap_servers: str,
        metrics: PipelineMetrics | None = None,
        on_batch: Callable[[FeedbackLearner], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.metrics = metrics
        self.on_batch = on_batch
        self.store = CheckpointStore(settings.consumer.state_dir)
        ckpt = self.store.load()
        self.restored = ckpt is not None
        self.learner: FeedbackLearner = ckpt.state if ckpt else FeedbackLearner(settings)
        self.offsets: dict[tuple[str, int], int] = dict(ckpt.offsets) if ckpt else {}
        if ckpt:
            log.info(
                "restored checkpoint: %d events consumed, offsets %s",
                self.learner.counts.consumed, self.offsets,
            )
        if metrics:
            metrics.start_from(self.learner)
        self._stop = threading.Event()
        self._targets: dict[int, int] | None = None
        self._assigned: set[int] = set()
        self._at_end: set[int] = set()
        # When stopping at the end, first wait for an outstanding retrain to be answered.
        self.wait_for_retrains = False
        self._waiting_since: float | None = None
        self.progress_log = ProgressLog(self.learner.counts)  # INFO line every 10 s

    # -- control from other threads / signal handlers ----------------------------------
    def request_stop(self) -> None:
        """Finish the current batch, checkpoint, commit and close."""
        self._stop.set()

    def stop_at(self, end_offsets: dict[int, int]) -> None:
        """Stop once every partition's position reaches these next-offsets."""
        self._targets = dict(end_offsets)

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop_at_end: bool = False) -> RunResult:
        """Consume until stopped (or, with ``stop_at_end``, until caught up)."""
        cfg, topic = self.settings.consumer, self.settings.topics.events
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": cfg.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "session.timeout.ms": cfg.session_timeout_ms,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "queued.max.messages.kbytes": 262144,
                **quiet_client_config(),
            }
        )
        dlq = Producer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "enable.idempotence": True,
                "linger.ms": 20,
                **quiet_client_config(),
            }
        )
        consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._consumer, self._dlq = consumer, dlq
        self.control = ModelControl(self.settings, self.bootstrap_servers, self.learner)
        learner, process = self.learner, self.learner.process  # bound once: hot loop
        messages, first_at, last_ckpt_at = 0, 0.0, time.monotonic()
        since_ckpt = 0
        try:
            while not self._stop.is_set():
                batch = consumer.consume(cfg.batch_size, cfg.poll_timeout_seconds)
                if not batch:
                    if self.control.between_batches(self.offsets):
                        self.checkpoint()
                    if self._done(stop_at_end):
                        break
                    continue
                started = time.perf_counter()
                if not first_at:
                    first_at = started
                n = 0
                for msg in batch:
                    if msg.error() is not None:
                        self._on_error(msg)
                        continue
                    n += 1
                    rejection = process(msg.value())
                    if rejection is not None:
                        self._dead_letter(msg, rejection)
                messages += n
                since_ckpt += n
                self._track_positions(consumer, batch)
                self._after_batch(batch, started, n)
                if self.control.between_batches(self.offsets) or (
                    since_ckpt >= cfg.checkpoint_every_events
                ) or (
                    time.monotonic() - last_ckpt_at >= cfg.checkpoint_every_seconds
                ):
                    self.checkpoint()
                    since_ckpt, last_ckpt_at = 0, time.monotonic()
                if self._done(stop_at_end):
                    break
            self.checkpoint()
        finally:
            self.control.close()
            consumer.close()
            dlq.flush(10)
        seconds = time.perf_counter() - first_at if first_at else 0.0
        return RunResult(learner, messages, seconds, self.restored)

    def _done(self, stop_at_end: bool) -> bool:
        if self.learner.lifecycle.pending is None:
            self._waiting_since = None
        elif self.wait_for_retrains:
            if time.monotonic() < self._retrain_deadline():
                return False
            log.error("gave up waiting for retrain %s", self.learner.lifecycle.pending)
        if self._targets is not None:
            topic = self.settings.topics.events
            return all(
                self.offsets.get((topic, p), 0) >= end for p, end in self._targets.items()
            )
        return stop_at_end and bool(self._assigned) and self._at_end >= self._assigned

    def _retrain_deadline(self) -> float:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        return self._waiting_since + self.settings.retrain.timeout_seconds + 120

    def _track_positions(self, consumer: Consumer, batch: list[Message]) -> None:
        """Record the next offset per partition, and which partitions are at their end."""
        topic = self.settings.topics.events
        last = {m.partition() or 0: m for m in batch}
        consumed = []
        for p, m in last.items():
            err = m.error()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                self._at_end.add(p)
            else:
                self._at_end.discard(p)
            consumed.append(TopicPartition(topic, p))
        for tp in consumer.position(consumed):
            if tp.offset >= 0:
                self.offsets[(topic, tp.partition)] = tp.offset

    def _after_batch(self, batch: list[Message], started: float, n: int) -> None:
        if self.metrics is not None:
            last_ts = batch[-1].timestamp()[1] if batch[-1].error() is None else 0
            latency = time.time() - last_ts / 1000 if last_ts > 0 else None
            self.metrics.observe(self.learner)
            self.metrics.observe_batch(time.perf_counter() - started, n, latency)
            topic = self.settings.topics.events
            for p in self._assigned:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), cached=True
                )
                if high >= 0:
                    self.metrics.lag.labels(str(p)).set(
                        max(high - self.offsets.get((topic, p), 0), 0)
                    )
        if self.on_batch is not None:
            self.on_batch(self.learner)
        if self.progress_log.due():
            self._log_progress()

    def _log_progress(self) -> None:
        """The periodic progress line (fields named after the metrics, see stream/logs.py)."""
        topic, lag = self.settings.topics.events, 0
        for p in self._assigned:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            if high >= 0:
                lag += max(high - self.offsets.get((topic, p), 0), 0)
        self.progress_log.log(log, self.learner.counts, lag)

    def _on_error(self, msg: Message) -> None:
        err = msg.error()
        if err is None:
            return
        if err.code() == KafkaError._PARTITION_EOF:
            return  # tracked per batch in _track_positions
        if err.fatal():
            raise KafkaException(err)
        log.warning("consumer error: %s", err)

    def _dead_letter(self, msg: Message, rejection: Rejection) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("error.kind", rejection.kind.encode()),
            ("error.reason", rejection.reason.encode()),
            ("source.topic", (msg.topic() or "").encode()),
            ("source.partition", str(msg.partition()).encode()),
            ("source.offset", str(msg.offset()).encode()),
        ]
        while True:
            try:
                self._dlq.produce(
                    self.settings.topics.dead_letters,
                    msg.value() or b"",
                    msg.key(),
                    headers=headers,
                )
                break
            except BufferError:
                self._dlq.poll(0.05)
        self._dlq.poll(0)

    # -- checkpoints and rebalances ----------------------------------------------------------
    def checkpoint(self) -> None:
        """Dead letters durable, then state + offsets on disk, then offsets committed."""
        started = time.perf_counter()
        undelivered = self._dlq.flush(30)
        if undelivered:
            raise KafkaException(f"{undelivered} dead letters not delivered; not checkpointing")
        self.store.save(self.learner, self.offsets)
        commits = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
        if commits:
            try:
                self._consumer.commit(offsets=commits, asynchronous=False)
            except KafkaException as err:
                # The checkpoint on disk is the source of truth; the group offset is advisory.
                log.warning("offset commit failed (checkpoint saved): %s", err)
        if self.metrics is not None:
            self.metrics.checkpoints.inc()
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
            # Also the state changes that happen between batches (swaps, requests), which
            # the per-batch refresh would only show with the next batch.
            self.metrics.observe(self.learner)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            saved = self.offsets.get((tp.topic, tp.partition))
            tp.offset = saved if saved is not None else OFFSET_BEGINNING
            self._assigned.add(tp.partition)
        log.info("assigned %s", [(tp.partition, tp.offset) for tp in partitions])
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [tp.partition for tp in partitions])
        if self._assigned:
            self.checkpoint()
        for tp in partitions:
            self._assigned.discard(tp.partition)
            self._at_end.discard(tp.partition)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost: %s", [tp.partition for tp in partitions])
        for tp in partitions:
            self._assigned.discard(tp.partition)
