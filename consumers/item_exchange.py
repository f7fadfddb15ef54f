"""One item model for every partition's learner: their item deltas, exchanged through Kafka.

Each partition has its own learner (:mod:`consumers.loop`), which sees its own users only but
feedback on every item. So that all of them learn one item model (item factors and biases,
the rating mean, the click model, popularity, item profiles), every learner's changes since
its last exchange (:class:`~stream.learner.item_sync.ItemDelta`) go to the item-updates topic
(one partition: one order for all), and every learner applies the others' deltas as they
arrive; Kafka Streams replicates a global table to its instances the same way.

- The sum of the deltas is the shared model: a learner that starts fresh (a new partition)
  reads the topic from its beginning and so starts from the group's item model.
- A restored learner re-reads from the position saved in its checkpoint; the deltas it had
  applied already are skipped (each source's sequence numbers are kept in the checkpoint).
- Consistency: the learners agree once every delta is applied everywhere (after the stream
  stops: :meth:`ItemExchange.settle`); while it flows, another consumer's changes arrive an
  exchange or so late. A consumer that crashed sends the deltas of the events it applies again
  with sequence numbers already used, which the others skip: their item model keeps the
  first run's share of those events, the restarted learner its replay's (a difference of at
  most one checkpoint interval's item updates of that partition).
- A swap (:mod:`consumers.model_control`) starts every learner anew from the same bundle, each
  at its own time: a delta carries the swap its sender's models follow, so changes of the
  replaced models are not added to the new ones and changes of the new ones wait in a learner
  that has not swapped yet (:attr:`~stream.learner.item_sync.ItemSync.held`).
- A delta the broker does not take never reaches the others: every delivery report is counted
  (:attr:`ItemExchange.stats`, the ``feedback_loop_item_deltas_total`` metric by outcome) and
  each failure logged with its error.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from stream.config import Settings
from stream.kafka import clients
from stream.kafka.publisher import DeliveryStats
from stream.learner import FeedbackLearner
from stream.learner.item_sync import ItemDelta
from stream.observability.metrics import PipelineMetrics

log = logging.getLogger(__name__)

__all__ = ["ItemExchange"]

FETCH_WAIT_MS = 10


def state_id(state_dir: Path) -> str:
    """The id of the group's shared state dir, made by the first consumer that asks (written
    whole, then linked into place: every consumer reads the same)."""
    path = Path(state_dir) / "partitions" / "item-exchange-id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
        tmp.write_text(uuid.uuid4().hex)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another consumer made it first: theirs is the id
        finally:
            tmp.unlink()
    return path.read_text().strip()


class ItemExchange:
    """Publishes the local learners' item deltas and applies everyone's (one per consumer)."""

    def __init__(
        self,
        settings: Settings,
        bootstrap_servers: str,
        partitions: int,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.topic = settings.topics.item_updates
        self.every = settings.consumer.share_items_every
        # k learners each step the click model on their own events: averaging their changes
        # (1/k of each) keeps its step size that of one learner.
        self.click_scale = 1.0 / partitions
        self._producer = clients.producer(bootstrap_servers, kafka=settings.kafka, linger_ms=1)
        # Another consumer's delta is applied only once fetched: a fetch held open for the
        # client default (500 ms) would make it that much later, hundreds of messages.
        self._reader = clients.reader(
            bootstrap_servers,
            "item-exchange",
            kafka=settings.kafka,
            partition_eof=True,
            fetch_wait_ms=FETCH_WAIT_MS,
        )
        # Deltas are keyed "<state id>:<partition>": the learners apply only those of the
        # consumers sharing their state dir, not a group started afresh (or another group)
        # on the same topic, whose deltas cover events these learners learn themselves.
        self.state_id = state_id(settings.consumer.state_dir)
        self._prefix = self.state_id.encode() + b":"
        self.position: int | None = None  # next offset to read (None: not reading yet)
        self._since = 0
        self.applied = 0
        self.foreign = 0  # deltas of another state dir, skipped
        self.stats = DeliveryStats()  # the deltas sent and the broker's answers
        self._metrics = metrics
        self._failed_reported = 0  # failures that a flush has reported already

    def adopt(self, learner: FeedbackLearner, partition: int, restored: bool) -> None:
        """Share ``learner``'s items (a partition just assigned), reading the topic from
        where its checkpoint left it (from the beginning when it is fresh)."""
        learner.share_items(partition, self.click_scale)
        start = getattr(learner.item_sync, "position", 0) if restored else 0
        if self.position is None or start < self.position:
            # Rewind: the learners applied already skip what they have (sequence numbers).
            self.position = start
            where = start if start > 0 else OFFSET_BEGINNING
            self._reader.assign([TopicPartition(self.topic, 0, where)])

    def add(self, messages: int, learners: dict[int, FeedbackLearner]) -> None:
        """Count applied messages; exchange when ``every`` have been applied since the last."""
        self._since += messages
        if self.every and self._since >= self.every:
            self.exchange(learners)

    def exchange(self, learners: dict[int, FeedbackLearner], timeout: float = 0.0) -> int:
        """Send each learner's delta, apply the ones that arrived; return how many arrived."""
        self._since = 0
        for partition, learner in learners.items():
            sync = learner.item_sync
            delta = sync.take() if sync is not None else None
            if delta is not None:
                self._send(self._prefix + str(partition).encode(), delta.to_bytes())
                # This consumer's other learners take it at once, not a broker round trip
                # later; read back from the topic, it is skipped (its sequence number).
                for other in learners.values():
                    if other is not learner and other.item_sync is not None:
                        other.item_sync.apply(delta)
        self._producer.poll(0)
        return self._receive(learners, timeout)

    def settle(self, learners: dict[int, FeedbackLearner], timeout: float = 60.0) -> None:
        """Exchange until this consumer's learners have every delta on the topic (at a stop:
        with no other consumer running, they then hold the same item model)."""
        self.exchange(learners)
        self.flush(timeout)
        _low, high = self._reader.get_watermark_offsets(
            TopicPartition(self.topic, 0), timeout=timeout
        )
        deadline = time.monotonic() + timeout
        while (self.position or 0) < high and time.monotonic() < deadline:
            self._receive(learners, 0.2)
        if (self.position or 0) < high:
            log.warning("item deltas up to %d not read within %gs", high, timeout)

    @property
    def sent(self) -> int:
        return self.stats.sent

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for the deltas' delivery reports; log what is undelivered or failed (the
        other consumers miss those deltas) and return how many are still undelivered."""
        remaining = int(self._producer.flush(timeout))
        if remaining or self.stats.failed > self._failed_reported:
            self._failed_reported = self.stats.failed
            log.warning(
                "item deltas: %d sent, %d delivered, %d failed (%s), %d undelivered after %gs",
                self.stats.sent,
                self.stats.delivered,
                self.stats.failed,
                "; ".join(self.stats.errors[:3]),
                remaining,
                timeout,
            )
        return remaining

    def _send(self, key: bytes, value: bytes) -> None:
        clients.produce(self._producer, self.topic, value, key, on_delivery=self._on_delivery)
        self.stats.sent += 1

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self.stats.on_delivery(err, msg)
        if err is not None:
            # The other consumers' learners never get this delta: their item model misses
            # these changes until the stream updates the same items again.
            log.error("item delta not delivered to %s: %s", self.topic, err)
        if self._metrics is not None:
            self._metrics.item_deltas.labels("failed" if err is not None else "delivered").inc()

    def _receive(self, learners: dict[int, FeedbackLearner], timeout: float) -> int:
        if self.position is None:
            return 0
        n = 0
        for msg in self._reader.consume(1000, timeout):
            if not clients.is_data(msg, source="item exchange"):
                continue
            self.position = (msg.offset() or 0) + 1
            if not (msg.key() or b"").startswith(self._prefix):
                self.foreign += 1
                continue
            delta = ItemDelta.from_bytes(msg.value() or b"")
            for learner in learners.values():
                if learner.item_sync is not None and learner.item_sync.apply(delta):
                    self.applied += 1
            n += 1
        for learner in learners.values():
            if learner.item_sync is not None:
                learner.item_sync.position = self.position  # saved with its checkpoint
        return n

    def close(self) -> None:
        self.flush(30)
        self._reader.close()
