"""The consumer's side of the control topic: retrain requests out, model swaps in.

Between two batches the consumer calls :meth:`ModelControl.between_batches` with every
partition it holds; each partition has its own learner (a task). It

1. reads the control topic (manual triggers, published models, failures, activations,
   forgets); each task acts on the messages after its own control offset (checkpointed with
   it), so a partition that moves to another consumer neither misses nor repeats one;
2. swaps in an accepted or activated registry version in every task: a version's history
   ends, per events partition, at the offsets of its request; a task swaps once its
   partition's applied position has reached that end (normally at once), learning on top
   the events of its partition applied since (read back from the events topic, through the
   same filters), so no event is skipped and none is learned twice. With several
   partitions the bundle keeps only the partition's own users, and the item model goes on
   from the bundle plus every task's catch-up (see :mod:`stream.learner.item_sync`: deltas
   carry the swap they follow);
3. gives up on a request unanswered for ``RetrainConfig.timeout_seconds`` plus
   ``answer_margin_seconds`` (counted in ``feedback_loop_retrain_requests_expired_total``;
   a late answer is ignored with one partition, swapped in by every task with several),
   so the policy may decide again;
4. asks the decider's lifecycle for a retrain decision and publishes it as a request. The
   decider is the task of partition 0, wherever it runs, so the group makes one request per
   decision; the other tasks record their drift alarms only. The request's offsets cover
   every partition: the decider's consumer's applied positions for the partitions it holds,
   the group's committed offsets (never ahead of what was applied) for the others. Its id
   is derived from the decision, so a consumer that crashes after publishing and replays up
   to the same decision publishes the same id again, which the retrainer answers once.

Every task of every consumer swaps the same versions in the same order (the control topic's),
each in its own time; their item models agree again once every delta is exchanged. The swap
is independent of when it lands: the result is the batch model plus every later event, in
order, whatever batch it happens between. A version missing from (or corrupt in)
the registry is logged and recorded in :attr:`ModelControl.skipped`; the consumer goes on
with the models it has. Every control message that cannot be acted on (undecodable, or naming
a version that cannot be loaded) is also counted by reason
(``feedback_loop_control_rejected_total``) and sent to the dead-letter topic with kind
``control_rejected`` and the reason in its headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Message

from consumers.forget import forget_user
from stream.config import Settings
from stream.events import (
    ForgetUser,
    ModelActivated,
    ModelPublished,
    RetrainFailed,
    RetrainTrigger,
)
from stream.kafka.control import ControlReader, ControlRecord, publish_control
from stream.kafka.dead_letters import DeadLetters
from stream.kafka.history import HistoryCollector, read_history
from stream.learner import FeedbackLearner
from stream.lifecycle import ModelRegistry, RegistryError
from stream.models import ModelBundle

log = logging.getLogger(__name__)

# The task that reviews the retrain policy and requests retrains for the whole group.
DECIDER = 0


@dataclass(frozen=True)
class HistoryEnd:
    """Where a version's history ends: per events partition, the next offset it covers.
    ``ends`` is None for a version from before offsets were kept (single partition only):
    its history is then the first ``event_index`` messages."""

    ends: dict[int, int] | None
    event_index: int

    def reached(self, partition: int, position: int, consumed: int) -> bool:
        if self.ends is None:
            return self.event_index <= consumed
        return self.ends.get(partition, 0) <= position


@dataclass(frozen=True)
class DeferredSwap:
    """A version to swap into the task of ``partition`` once it has applied its history."""

    partition: int
    version: int
    end: HistoryEnd
    generation: int  # the control-topic position of the message that named it (offset + 1)
    raw: Message | None = None  # the control message that named it (dead-lettered if unusable)


@dataclass(frozen=True)
class SkippedVersion:
    """A model version the consumer was told to swap in but could not load, and why."""

    message: str  # what named it: the control message type, or "swap" for a failed load
    version: int
    error: str


class ModelControl:
    """Control-topic reader, retrain requester and model swapper of one consumer's tasks."""

    def __init__(
        self,
        settings: Settings,
        bootstrap_servers: str,
        learner: FeedbackLearner,
        on_forget: Callable[[str], object] | None = None,
        partitions: int = 1,
        committed: Callable[[], dict[int, int]] | None = None,
    ):
        self.settings = settings
        self.partitions = partitions
        # The group's committed offsets of the events topic (for the partitions other
        # consumers hold, in a request); None: only the held partitions are known.
        self.committed = committed
        # Also told of each forgotten user (the consumer's archive purges them).
        self.on_forget = on_forget
        self.bootstrap_servers = bootstrap_servers
        self.tasks: dict[int, FeedbackLearner] = {0: learner}
        self.registry = ModelRegistry(settings.retrain.registry_dir)
        self.reader = ControlReader(
            bootstrap_servers,
            settings.topics.control,
            learner.lifecycle.control_offset,
            kafka=settings.kafka,
        )
        # Swaps whose history ends beyond what their task has applied yet.
        self._deferred: list[DeferredSwap] = []
        # Versions missing from (or corrupt in) the registry: logged, recorded, skipped.
        self.skipped: list[SkippedVersion] = []
        self._letters: DeadLetters | None = None  # created at the first rejected message

    @property
    def learner(self) -> FeedbackLearner:
        """The lowest partition's learner (the only one with one partition)."""
        return self.tasks[min(self.tasks)]

    def assign(self, learners: dict[int, FeedbackLearner]) -> None:
        """The tasks this consumer holds now; the topic is read again from the lowest
        control offset among them (a task restored from an older checkpoint)."""
        self.tasks = dict(learners)
        self._deferred = [d for d in self._deferred if d.partition in self.tasks]
        if self.tasks:
            lowest = min(t.lifecycle.control_offset for t in self.tasks.values())
            if lowest < self.reader.next_offset:
                self.reader.seek(lowest)

    def between_batches(self, offsets: dict[tuple[str, int], int]) -> bool:
        """Act on the control topic and the drift policy; True if the models changed."""
        if not self.tasks:  # no partition yet: nothing to act for
            return False
        topic = self.settings.topics.events
        positions = {p: o for (t, p), o in offsets.items() if t == topic}
        changed = False
        for record in self.reader.poll(0.0):
            at = record.raw.offset() or 0
            # The tasks that have not acted on this message (before their checkpoint).
            tasks = {p: t for p, t in self.tasks.items() if t.lifecycle.control_offset <= at}
            if tasks:
                changed |= self._act(record, tasks)
            for task in tasks.values():
                task.lifecycle.control_offset = at + 1
        changed |= self._swap_ready(positions)
        for p, task in self.tasks.items():
            if p != DECIDER:
                task.lifecycle.note_alarms()
        decider = self.tasks.get(DECIDER)
        if decider is not None:
            changed |= self._decide(decider, positions)
        return changed

    def _act(self, record: ControlRecord, tasks: dict[int, FeedbackLearner]) -> bool:
        """Act on one control message for ``tasks``; True if a model changed at once."""
        msg, raw = record.message, record.raw
        generation = (raw.offset() or 0) + 1
        if msg is None:
            self._reject(raw, "malformed", record.error)
        elif isinstance(msg, RetrainTrigger):
            if DECIDER in tasks:  # the other tasks leave decisions to the decider
                log.warning("manual retrain trigger: %s", msg.reason)
                tasks[DECIDER].lifecycle.trigger(msg.reason, raw.offset())
        elif isinstance(msg, ModelPublished):
            log.warning("model version %d published (accepted=%s)", msg.version, msg.accepted)
            end = HistoryEnd(dict(msg.offsets), msg.event_index)
            for p, task in tasks.items():
                swap = task.lifecycle.published(msg, task.counts.consumed)
                # With several partitions every task swaps every accepted answer, also one
                # the decider gave up on: the same versions everywhere, whoever decided.
                if swap or (self.partitions > 1 and msg.accepted):
                    self._deferred.append(DeferredSwap(p, msg.version, end, generation, raw))
        elif isinstance(msg, RetrainFailed):
            log.error("retrain %s failed: %s", msg.request_id, msg.error)
            for task in tasks.values():
                task.lifecycle.failed(msg, task.counts.consumed)
        elif isinstance(msg, ModelActivated):
            log.warning("model version %d activated (%s)", msg.version, msg.reason)
            activated = self._history_end(msg, raw)
            if activated is not None:
                for p in tasks:
                    self._deferred.append(DeferredSwap(p, msg.version, activated, generation, raw))
        elif isinstance(msg, ForgetUser):
            for task in tasks.values():
                forget_user(task, msg)
            if self.on_forget is not None:
                self.on_forget(msg.user_id)
            return True  # checkpointed at once: a forget must survive a crash
        return False

    def _history_end(self, msg: ModelActivated, raw: Message) -> HistoryEnd | None:
        """Where the activated version's history ends, from its registry metadata (None:
        unusable, recorded and dead-lettered)."""
        try:
            meta = self.registry.get(msg.version).metadata
        except RegistryError as err:
            self._skip(msg.type, msg.version, err)
            self._reject(raw, "unloadable_version", str(err))
            return None
        ends, event_index = meta.get("offsets"), meta.get("event_index")
        if isinstance(ends, dict) and isinstance(event_index, int):
            return HistoryEnd({int(p): int(o) for p, o in ends.items()}, event_index)
        if isinstance(event_index, int) and self.partitions == 1:
            return HistoryEnd(None, event_index)
        why = "no event_index (nor offsets) in its metadata"
        self._skip(msg.type, msg.version, why)
        self._reject(raw, "no_history_end", why)
        return None

    def _swap_ready(self, positions: dict[int, int]) -> bool:
        """Swap the deferred versions whose tasks have applied their history; True if any."""
        ready: list[DeferredSwap] = []
        waiting: list[DeferredSwap] = []
        for d in self._deferred:
            task = self.tasks[d.partition]
            at = d.end.reached(d.partition, positions.get(d.partition, 0), task.counts.consumed)
            (ready if at else waiting).append(d)
        self._deferred = waiting
        changed = False
        failed: set[int] = set()  # generations whose version did not load (recorded once)
        for d in ready:
            task = self.tasks[d.partition]
            try:
                self.swap(d, positions)
            except RegistryError as err:
                if d.generation not in failed:
                    failed.add(d.generation)
                    self._skip("swap", d.version, err)
                    if d.raw is not None:
                        self._reject(d.raw, "unloadable_version", str(err))
                task.lifecycle.swap_failed(
                    d.version, task.counts.consumed, f"{type(err).__name__}: {err}"
                )
                continue
            changed = True
        return changed

    def _decide(self, decider: FeedbackLearner, positions: dict[int, int]) -> bool:
        """The group's retrain decision (the decider's lifecycle); True if one was made."""
        life, consumed = decider.lifecycle, decider.counts.consumed
        retrain = self.settings.retrain
        limit = retrain.timeout_seconds + retrain.answer_margin_seconds
        expired = life.expire(time.time(), limit, consumed)
        if expired is not None:
            log.error(
                "retrain %s timed out: no answer within %gs (is the retrainer running?); "
                "a retrain may be requested again",
                expired.request_id, limit,
            )  # fmt: skip
        # Nothing applied yet (e.g. still joining the group): no history to retrain on.
        decision = life.review(consumed) if consumed else None
        if decision is None:
            return False
        request = life.request(decision, self._request_offsets(positions), consumed)
        forgotten = decider.admission.forgotten
        if forgotten:  # the retrainer leaves them out of the history
            request = request.model_copy(update={"forgotten": forgotten.as_dict()})
        if life.state.awaits(request.request_id):
            publish_control(
                self.bootstrap_servers,
                self.settings.topics.control,
                request,
                kafka=self.settings.kafka,
            )
            log.warning(
                "retrain requested (%s) at event %d, offsets %s: %s",
                request.request_id, consumed, request.offsets, decision.reason,
            )  # fmt: skip
        else:  # answered before a restart (the same decision, made again): not re-sent
            log.warning("retrain %s was answered already", request.request_id)
        return True

    def _request_offsets(self, positions: dict[int, int]) -> dict[int, int]:
        """The history a request covers: the held partitions' applied positions; with
        several partitions, the group's committed offsets for the others (0: none yet)."""
        if self.partitions == 1:
            return dict(positions)
        committed = self.committed() if self.committed is not None else {}
        return {
            p: positions[p] if p in self.tasks and p in positions else committed.get(p, 0)
            for p in range(self.partitions)
        }

    def swap(self, d: DeferredSwap, positions: dict[int, int]) -> None:
        """Load ``d.version`` into its task and learn its partition's events applied since
        the version's history ended."""
        bundle = self.registry.load(d.version)
        task, p = self.tasks[d.partition], d.partition
        position = positions.get(p, 0)
        if d.end.ends is None:  # one partition, history counted in messages
            history = self._history({p: position}, task)
            catch_up = [
                e
                for e, i in zip(history.events, history.indexes, strict=True)
                if i >= d.end.event_index
            ]
        else:
            # The other partitions up to the version's ends: their profiles, as the bundle saw.
            ends = {q: d.end.ends.get(q, 0) for q in range(self.partitions)}
            history = self._history({**ends, p: position}, task)
            catch_up = history.since(p, ends[p])
            if self.partitions > 1:
                _keep_users(bundle, history.users_of(p))
        n = task.swap(bundle, d.version, catch_up, d.generation)
        log.warning(
            "partition %d swapped in model version %d at event %d (%d events learned on top)",
            p, d.version, task.counts.consumed, n,
        )  # fmt: skip

    def _history(self, ends: dict[int, int], task: FeedbackLearner) -> HistoryCollector:
        return read_history(
            self.bootstrap_servers, self.settings, ends, forgotten=task.admission.forgotten
        )

    def _skip(self, message: str, version: int, err: Exception | str) -> None:
        log.error("cannot act on %s of model version %d: %s", message, version, err)
        self.skipped.append(SkippedVersion(message, version, str(err)))

    def _reject(self, raw: Message, reason: str, detail: str) -> None:
        """Count a control message that cannot be acted on and dead-letter it. Flushed at
        once: the control offset saved by the next checkpoint already covers it."""
        log.error("control message at offset %s rejected (%s): %s", raw.offset(), reason, detail)
        self.learner.lifecycle.reject_control(reason)
        if self._letters is None:
            self._letters = DeadLetters.connect(
                self.bootstrap_servers,
                self.settings.topics.dead_letters,
                self.settings.consumer.dead_letter_max_bytes,
                kafka=self.settings.kafka,
            )
        self._letters.send(raw, "control_rejected", f"{reason}: {detail}")
        self._letters.flush()

    def close(self) -> None:
        self.reader.close()
        if self._letters is not None:
            self._letters.close()


def _keep_users(bundle: ModelBundle, users: set[str]) -> None:
    """Drop from ``bundle`` the users not in ``users`` (another partition's: a partition's
    state stays its own)."""
    models = (bundle.rating, bundle.implicit)
    held = dict.fromkeys(u for m in models for u in m._users.ids)
    others = [u for u in held if u not in users]
    for m in models:
        m.remove_users(others)
