"""The Kafka plumbing of the consumer: group membership, batches, dead letters, checkpoints.

The user logic lives in :class:`stream.learner.learner.FeedbackLearner`; this module only moves
bytes between Kafka and it. The order of operations is what makes a crash harmless:

1. when a partition is assigned, claim it in the group's shared state store
   (:class:`~stream.kafka.partitions.PartitionStore`), restore its learner from its
   checkpoint and seek to the offset saved with it (the beginning of the partition when
   there is no checkpoint: the models must see it all);
2. consume a batch and apply every message to its partition's learner (dead letters are
   produced as they come);
3. when the :class:`~stream.kafka.checkpoint.Checkpoint` is due (and before a partition is
   revoked), commit it: flush the dead letters, atomically save each partition's learner with
   the offset it covers, commit those offsets; a revoked partition's learner then leaves.

Each partition has its own learner (a *task*, as Kafka Streams calls it): its users, their
de-duplication window and bot-filter state and counts are its own, so the partition can move
to any consumer of the group with its state, and the group's counts are the sum of the
partitions'. With one partition (the default) there is one learner,
:attr:`FeedbackConsumer.learner`.

With ``settings.serving.publish_state``, the model state of every assigned partition's learner
is published to the model-state topic for the ``serve`` processes (:mod:`consumers.state_stream`):
the changes after a batch at the serving cadence, a full snapshot after every checkpoint commit.
The metrics read every partition's learner too (:mod:`stream.observability.collector`).
Published state may run ahead of the checkpoint; after a crash readers see it go back to the
checkpoint, then forward again.

Events applied after the last checkpoint are lost with the process and applied again after
the restart on top of the state that had not seen them, so the final state is the same as an
uninterrupted run. A run that fails therefore writes nothing on its way out, not even when
closing the consumer revokes its partitions: its state is ahead of its offsets. Dead letters
are at-least-once (see :mod:`stream.kafka.dead_letters`).

Crashes are injected in-process with a :class:`~stream.kafka.checkpoint.FaultHook`:

>>> from stream.kafka.checkpoint import CommitStep, CrashAt
>>> consumer = FeedbackConsumer(Settings(), "127.0.0.1:9092",  # no I/O until run()
...                             faults=CrashAt(step=CommitStep.AFTER_SAVE))
>>> consumer.restored, consumer.learner.counts.consumed
(False, 0)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from consumers.item_exchange import ItemExchange
from consumers.log_guard import LogGuard
from consumers.model_control import ModelControl
from consumers.state_stream import ModelStateStream
from stream.config import Settings
from stream.kafka import clients
from stream.kafka.archive import ArchiveBuffer, EventArchive, archive_directory
from stream.kafka.archive import warm_up as warm_up_archive
from stream.kafka.checkpoint import Checkpoint, CheckpointError, FaultHook, Offsets, PartitionSave
from stream.kafka.dead_letters import DeadLetters
from stream.kafka.health import BrokerHealth
from stream.kafka.partitions import PartitionStore
from stream.learner import FeedbackLearner
from stream.models.kernels import warm_up as warm_up_kernels
from stream.observability.logs import ProgressLog
from stream.observability.metrics import PipelineMetrics

log = logging.getLogger(__name__)


@dataclass
class PartitionTask:
    """The learner of one assigned partition and the lease epoch its saves carry."""

    partition: int
    learner: FeedbackLearner
    epoch: int
    restored: bool  # from a checkpoint (else fresh: the partition is read from its beginning)


@dataclass
class RunResult:
    learner: FeedbackLearner  # the lowest partition's (the only one with one partition)
    messages: int  # consumed by this run (after any restore)
    seconds: float  # from the first message to the end of the last batch
    restored_from_checkpoint: bool
    # Every partition's learner this consumer held at the end.
    learners: dict[int, FeedbackLearner] | None = None

    @property
    def events_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class FeedbackConsumer:
    """A long-running consumer of the events topic that feeds one :class:`FeedbackLearner`
    per assigned partition.

    The constructor does no I/O: :meth:`run` restores the checkpoints (or call
    :meth:`restore` first) and opens the Kafka clients. ``faults`` injects crashes (tests only).
    Every consumer of a group must share ``consumer.state_dir``: it holds each partition's
    checkpoint, which is how a partition's state follows it to another consumer.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap_servers: str,
        metrics: PipelineMetrics | None = None,
        on_batch: Callable[[FeedbackLearner], None] | None = None,
        faults: FaultHook | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.metrics = metrics
        self.on_batch = on_batch
        self.faults = faults
        self.store = PartitionStore(settings.consumer.state_dir, settings.topics.events)
        # The assigned partitions' learners; before any assignment, `learner` is a fresh one.
        self.tasks: dict[int, PartitionTask] = {}
        self._fresh = FeedbackLearner(settings)
        self._fresh_unused = True
        # What the run ended with (lead learner, all learners): readable after it closed.
        self._final: tuple[FeedbackLearner, dict[int, FeedbackLearner]] | None = None
        # Checkpoints loaded by restore() before the partitions are assigned: partition ->
        # (learner, offset, file stamp); used at assignment if the file has not changed since.
        self._preloaded: dict[int, tuple[FeedbackLearner, int, tuple[int, int]]] = {}
        self.offsets: Offsets = {}
        self.restored = False
        self._loaded = False
        self._stop = threading.Event()
        # The clients' errors, and the checks of a log that went backwards or a lost broker.
        self.health = BrokerHealth()
        self._guard = LogGuard(settings.consumer, settings.topics.events, self.health)
        self._targets: dict[int, int] | None = None
        self._assigned: set[int] = set()
        self._at_end: set[int] = set()
        # The model-state publisher, opened by run() when settings.serving.publish_state.
        self.state_stream: ModelStateStream | None = None
        self._control: ModelControl | None = None
        # The partitions' learners share one item model through this (several partitions).
        self._exchange: ItemExchange | None = None
        self._archive: ArchiveBuffer | None = None
        # A revoke checkpoints only while the run is healthy (see the module docstring).
        self._checkpoint_on_revoke = False
        self._failed = False
        # When stopping at the end, first wait for an outstanding retrain to be answered.
        self.wait_for_retrains = False
        self._waiting_since: float | None = None
        self.progress_log = ProgressLog(self.learner.counts)  # INFO line every 10 s
        if metrics is not None:
            # Read at every scrape, through the consumer: whichever learners it holds then.
            metrics.track(self._tracked)

    @property
    def learner(self) -> FeedbackLearner:
        """The lowest assigned partition's learner (the only one with one partition)."""
        tasks = self.tasks
        if tasks:
            return tasks[min(tasks)].learner
        return self._final[0] if self._final is not None else self._fresh

    def _tracked(self) -> dict[int, FeedbackLearner] | FeedbackLearner:
        """What the metrics read: every partition's learner (before any: the one to come)."""
        return self.learners or self.learner

    @property
    def learners(self) -> dict[int, FeedbackLearner]:
        """Every assigned partition's learner (after a run: the ones it ended with)."""
        if not self.tasks and self._final is not None:
            return dict(self._final[1])
        return {p: t.learner for p, t in sorted(self.tasks.items())}

    # -- control from other threads / signal handlers ----------------------------------
    def request_stop(self) -> None:
        """Finish the current batch, checkpoint, commit and close."""
        self._stop.set()

    def stop_at(self, end_offsets: dict[int, int]) -> None:
        """Stop once every partition's position reaches these next-offsets."""
        self._targets = dict(end_offsets)

    def restore(self) -> bool:
        """Load the saved checkpoints, once, to be used when their partitions are assigned;
        with exactly one, its learner becomes :attr:`learner` at once. True if any."""
        if not self._loaded:
            self._loaded = True
            legacy = self.settings.consumer.state_dir / "checkpoint.pkl"
            if legacy.exists():
                raise CheckpointError(
                    f"{legacy} is a checkpoint of an older version (one file per consumer; "
                    f"checkpoints are now kept per partition under {self.store.root}); move it "
                    "away to start fresh"
                )
            for p in self.store.partitions():
                stamp = self._stamp(p)
                loaded = self._load(p)
                if loaded is not None:
                    self._preloaded[p] = (*loaded, stamp)
            self.restored = bool(self._preloaded)
            if len(self._preloaded) == 1:
                # One partition: its learner is the consumer's from now (reports, metrics).
                ((p, (learner, offset, _)),) = self._preloaded.items()
                self._fresh, self._fresh_unused = learner, False
                self.offsets[(self.settings.topics.events, p)] = offset
                self._rebind()
        return self.restored

    def _load(self, partition: int) -> tuple[FeedbackLearner, int] | None:
        """The learner and next offset of ``partition``'s checkpoint (None: it has none)."""
        ckpt = self.store.load(partition)
        if ckpt is None:
            return None
        offset = ckpt.offsets[(self.settings.topics.events, partition)]
        log.info(
            "restored checkpoint of partition %d: %d events consumed, next offset %d",
            partition, ckpt.state.counts.consumed, offset,
        )  # fmt: skip
        return ckpt.state, offset

    def _stamp(self, partition: int) -> tuple[int, int]:
        st = self.store.checkpoints(partition).path.stat()
        return st.st_mtime_ns, st.st_size

    def _rebind(self) -> None:
        """The progress line and the metrics count this process's work, not the
        checkpoints': rebind them when the learners change."""
        every = self.progress_log.every_seconds
        self.progress_log = ProgressLog(self.learner.counts, every)
        if self.metrics is not None:
            self.metrics.track(self._tracked)
        if self._control is not None:
            self._control.assign(self.learners)

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop_at_end: bool = False) -> RunResult:
        """Consume until stopped (or, with ``stop_at_end``, until caught up)."""
        if self._failed:
            # Its learner is ahead of the checkpoint: only a new consumer restores correctly.
            raise RuntimeError("this consumer failed; start a new one on the same state dir")
        self.restore()
        cfg, topics = self.settings.consumer, self.settings.topics
        consumer = clients.group_consumer(
            self.bootstrap_servers,
            cfg.group_id,
            kafka=self.settings.kafka,
            health=self.health,
            session_timeout_ms=cfg.session_timeout_ms,
            partition_eof=True,
            bulk=True,
        )
        letters = DeadLetters.connect(
            self.bootstrap_servers,
            topics.dead_letters,
            cfg.dead_letter_max_bytes,
            kafka=self.settings.kafka,
            health=self.health,
            linger_ms=20,
        )
        self._consumer, self._dead_letters = consumer, letters
        if self.settings.serving.publish_state:
            self.state_stream = ModelStateStream(self.settings, self.bootstrap_servers)
        if self.settings.archive.enabled:
            archive = EventArchive(archive_directory(self.settings))
            self._archive = ArchiveBuffer(archive, topics.events, self._partition_counts)
            warm_up_archive()
        # Loaded now, before the group join, not at the first events: a process's first
        # kernel call loads numba's registries and pyarrow's first table imports pandas, a
        # second or more of CPU each that would stall the stream at its start.
        warm_up_kernels()
        self._checkpoint = Checkpoint(
            cfg, self.store, consumer, letters, self.faults, self._archive
        )
        partitions = self._partition_count(consumer)
        if partitions > 1 and cfg.share_items_every:
            self._exchange = ItemExchange(
                self.settings, self.bootstrap_servers, partitions, self.metrics
            )
        consumer.subscribe(
            [topics.events],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        control: ModelControl | None = None
        final_offsets: Offsets = {}
        self._checkpoint_on_revoke = True
        try:
            control = ModelControl(
                self.settings,
                self.bootstrap_servers,
                self.learner,
                on_forget=self._forgotten,
                partitions=partitions,
                committed=lambda: self._committed(partitions),
            )
            self._control = control
            control.assign(self.learners)
            messages, first_at = self._consume(consumer, control, stop_at_end)
            if self._exchange is not None and not self._stop.is_set():
                # Stopped at the end: the learners take every delta there is, so they hold
                # the same item model when no other consumer runs any more.
                self._exchange.settle(self.learners)
            self._commit()
            self._final = (self.learner, self.learners)
            final_offsets = dict(self.offsets)
        except BaseException:
            # As if the process died here: what is in flight is dropped, nothing is saved.
            self._checkpoint_on_revoke, self._failed = False, True
            self._final = (self.learner, self.learners)
            final_offsets = dict(self.offsets)
            letters.abandon()
            raise
        finally:
            # Either just committed or failed: closing must not checkpoint again.
            self._checkpoint_on_revoke = False
            try:
                if control is not None:
                    control.close()
            finally:
                # Leaving the group at once lets a restarted consumer be assigned without
                # waiting for this member's session to time out.
                consumer.close()
                # Readable after the run, like `learner`: what the last partitions covered.
                self.offsets.update(final_offsets)
        letters.close()
        if self._exchange is not None:
            self._exchange.close()
        if self.state_stream is not None:
            self.state_stream.close()
        seconds = time.perf_counter() - first_at if first_at else 0.0
        return RunResult(self.learner, messages, seconds, self.restored, self.learners)

    def _partition_count(self, consumer: Consumer) -> int:
        topic = self.settings.topics.events
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        return len(meta.partitions) if meta is not None and meta.partitions else 1

    def _partition_counts(self, partition: int) -> dict[str, Any]:
        """A partition's counts (stored with its archive files)."""
        task = self.tasks.get(partition)
        return task.learner.counts.as_dict() if task is not None else {}

    def _forgotten(self, user_id: str) -> None:
        """A user was forgotten (in every partition's learner, by the control): purge the
        archive."""
        if self._archive is not None:
            self._archive.purge_user(user_id)

    def _committed(self, partitions: int) -> dict[int, int]:
        """The group's committed offsets of the events topic (only partitions with one)."""
        topic = self.settings.topics.events
        asked = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in self._consumer.committed(asked, timeout=10)
                if tp.offset >= 0}  # fmt: skip

    def _consume(
        self, consumer: Consumer, control: ModelControl, stop_at_end: bool
    ) -> tuple[int, float]:
        """Batches until done; return the messages applied and when the first arrived."""
        cfg = self.settings.consumer
        state = self.state_stream
        messages, first_at = 0, 0.0
        exchange = self._exchange
        # Shared items: exchange at least every `share_items_every` messages.
        size = min(cfg.batch_size, cfg.share_items_every) if exchange else cfg.batch_size
        while not self._stop.is_set():
            batch = consumer.consume(size, cfg.poll_timeout_seconds)
            self._guard_log(consumer, batch)
            n = 0
            if batch:
                started = time.perf_counter()
                first_at = first_at or started
                n = self._apply(batch, messages)
                if exchange is not None:
                    exchange.add(n, self.learners)
                messages += n
                self._checkpoint.add(n)
                self._track_positions(batch)
                self._after_batch(batch, started, n)
            if state is not None:
                # Also when idle (n == 0): the meta keeps telling readers the state is current.
                state.after_batch(self.learners, n)
            # Between batches: swaps and retrain requests change the state, so checkpoint.
            if control.between_batches(self.offsets) or (batch and self._checkpoint.due()):
                self._commit()
            if self._done(stop_at_end):
                break
        return messages, first_at

    def _guard_log(self, consumer: Consumer, batch: list[Message]) -> None:
        """Apply the truncation policy to partitions whose log went backwards (LogGuard);
        stop when the broker has been gone too long."""
        topic, guard = self.settings.topics.events, self._guard
        positions = {
            p: self.offsets[(topic, p)] for p in self._assigned if (topic, p) in self.offsets
        }
        for p, log_end in guard.truncated(consumer, batch, positions).items():
            if self.metrics is not None:
                self.metrics.log_truncations.labels(str(p)).inc()
            guard.handle(consumer, p, positions.get(p, 0), log_end)
            self.offsets[(topic, p)] = 0
            self._at_end.discard(p)
        guard.check_broker(consumer, bool(batch))
        if self.metrics is not None:
            self.metrics.observe_broker(self.health.up, self.health.errors)

    def _apply(self, batch: list[Message], before: int) -> int:
        """Apply the batch's messages (``before`` applied earlier in this run), each to its
        partition's learner, a run of one partition at a time; return how many. With a
        fault hook (tests only) every run is one message, so a crash can follow any."""
        letters, tasks, at_end, faults = self._dead_letters, self.tasks, self._at_end, self.faults
        is_data = clients.is_data
        keep = self._archive.keep if self._archive is not None else None
        data = [m for m in batch if is_data(m, at_end)]
        longest = 1 if faults is not None else len(data)
        start = 0
        while start < len(data):  # runs of one partition (a fetch is usually one run)
            partition = data[start].partition() or 0
            end, stop = start + 1, min(len(data), start + longest)
            while end < stop and (data[end].partition() or 0) == partition:
                end += 1
            run = data[start:end]
            learner = tasks[partition].learner
            first = learner.counts.consumed
            admitted: list[int] | None = [] if keep is not None else None
            results = learner.process_batch([m.value() for m in run], admitted)
            if keep is not None and admitted:
                for k in admitted:
                    keep(run[k], first + k)
            for msg, rejection in zip(run, results, strict=True):
                if rejection is not None:
                    letters.send(msg, rejection.kind, rejection.reason)
            start = end
            if faults is not None:
                faults.on_message(before + end)
        return len(data)

    def _done(self, stop_at_end: bool) -> bool:
        if not self.learner.lifecycle.state.busy:
            self._waiting_since = None
        elif self.wait_for_retrains:
            if time.monotonic() < self._retrain_deadline():
                return False
            log.error("gave up waiting for retrain %s", self.learner.lifecycle.state.outstanding)
        if self._targets is not None:
            topic = self.settings.topics.events
            return all(self.offsets.get((topic, p), 0) >= end for p, end in self._targets.items())
        return stop_at_end and bool(self._assigned) and self._at_end >= self._assigned

    def _retrain_deadline(self) -> float:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        return self._waiting_since + self.settings.retrain.timeout_seconds + 120

    def _track_positions(self, batch: list[Message]) -> None:
        """Record the next offset per partition (end-of-partition marks come from is_data)."""
        topic = self.settings.topics.events
        last = {m.partition() or 0: m for m in batch}
        for p, m in last.items():
            if m.error() is None:  # data after an end mark: no longer at the end
                self._at_end.discard(p)
        for tp in self._consumer.position([TopicPartition(topic, p) for p in last]):
            if tp.offset >= 0:
                self.offsets[(topic, tp.partition)] = tp.offset

    def _lag(self) -> dict[int, int]:
        """Messages behind the high watermark, per assigned partition whose watermark is known.

        From the watermarks cached with the last fetch: no request to the broker.
        """
        topic, lag = self.settings.topics.events, {}
        for p in self._assigned:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            if high >= 0:
                lag[p] = max(high - self.offsets.get((topic, p), 0), 0)
        return lag

    def _after_batch(self, batch: list[Message], started: float, n: int) -> None:
        if self.metrics is not None:
            last_ts = batch[-1].timestamp()[1] if batch[-1].error() is None else 0
            latency = time.time() - last_ts / 1000 if last_ts > 0 else None
            self.metrics.observe_batch(time.perf_counter() - started, n, latency)
            for p, behind in self._lag().items():
                self.metrics.lag.labels(str(p)).set(behind)
        if self.on_batch is not None:
            self.on_batch(self.learner)
        if self.progress_log.due():
            # The periodic progress line (fields named after the metrics, see logs.py).
            self.progress_log.log(log, self.learner.counts, sum(self._lag().values()))

    # -- checkpoints and rebalances ----------------------------------------------------------
    def _commit(self) -> None:
        """Commit the checkpoint (dead letters, each partition's state + offset, group offsets)."""
        started = time.perf_counter()
        if self._exchange is not None:
            # What the checkpoint holds is sent first: a restored learner's base is then
            # what the others have of it.
            self._exchange.exchange(self.learners)
        topic = self.settings.topics.events
        saves = [
            PartitionSave(p, task.learner, self.offsets[(topic, p)], task.epoch)
            for p, task in sorted(self.tasks.items())
            if (topic, p) in self.offsets  # a partition not read yet has nothing to save
        ]
        fenced = self._checkpoint.commit(saves)
        if fenced:
            # Another consumer owns them now (this one was out of the group without knowing
            # it): what was applied here since the last checkpoint is applied there again.
            log.error(
                "partitions %s were claimed by another consumer: their state is dropped here",
                fenced,
            )
            self._drop(fenced)
        if self.state_stream is not None:
            # Every checkpoint (and so every swap, which is checkpointed at once) publishes a
            # full snapshot: a new reader needs only the records since the last one.
            self.state_stream.snapshot(self.learners)
        if self.metrics is not None:
            self.metrics.checkpoints.inc()
            self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)

    def _task(self, partition: int) -> tuple[PartitionTask, int | None]:
        """Claim ``partition`` and restore its learner: the task and the offset to read from
        (None: no checkpoint, from the beginning)."""
        epoch = self.store.claim(partition)
        preloaded = self._preloaded.pop(partition, None)
        if preloaded is not None and preloaded[2] == self._stamp(partition):
            learner, offset = preloaded[0], preloaded[1]
        else:
            loaded = self._load(partition)
            if loaded is None:
                return PartitionTask(partition, FeedbackLearner(self.settings), epoch, False), None
            learner, offset = loaded
            self.restored = True
        return PartitionTask(partition, learner, epoch, True), offset

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        topic = self.settings.topics.events
        for tp in partitions:
            if tp.partition not in self.tasks:
                task, offset = self._task(tp.partition)
                if self._fresh_unused and not task.restored:
                    # The first fresh partition gets the learner the consumer was built with
                    # (the one `learner` and the metrics showed before any assignment).
                    task.learner, self._fresh_unused = self._fresh, False
                self.tasks[tp.partition] = task
                if self._exchange is not None:
                    self._exchange.adopt(task.learner, tp.partition, task.restored)
                if offset is not None:
                    self.offsets[(topic, tp.partition)] = offset
                    if self._archive is not None:
                        self._archive.restore({(topic, tp.partition): offset})
            saved = self.offsets.get((tp.topic, tp.partition))
            tp.offset = saved if saved is not None else OFFSET_BEGINNING
            self._assigned.add(tp.partition)
        self._preloaded.clear()  # checkpoints of partitions another consumer was given
        self._rebind()
        log.info("assigned %s", [(tp.partition, tp.offset) for tp in partitions])
        consumer.assign(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [tp.partition for tp in partitions])
        if self._assigned and self._checkpoint_on_revoke:
            self._commit()
        self._drop([tp.partition for tp in partitions])

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another consumer may own them already: nothing is saved, their state leaves.
        log.warning("partitions lost: %s", [tp.partition for tp in partitions])
        self._drop([tp.partition for tp in partitions])

    def _drop(self, partitions: list[int]) -> None:
        """The partitions' state leaves this consumer (revoked, lost or fenced off)."""
        topic = self.settings.topics.events
        for p in partitions:
            self._assigned.discard(p)
            self._at_end.discard(p)
            self.tasks.pop(p, None)
            self.offsets.pop((topic, p), None)
        if self._archive is not None:
            self._archive.drop_partitions(partitions)
        self._rebind()
