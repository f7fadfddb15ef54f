"""The consumer's side of the control topic: retrain requests out, model swaps in.

Between two batches the consumer calls :meth:`ModelControl.between_batches`, which

1. reads the control topic (manual triggers, published models, failures, activations);
2. swaps in an accepted or activated registry version (with one partition; with several,
   each has its own learner and retrains are not group-wide yet, so requests and swaps are
   off): the batch model covers the history
   before its request; the events applied since are read back from the events topic, put
   through the same filters, and learned on top, so no event is skipped and none is learned
   twice; then the new models carry on online;
3. gives up on a request unanswered for ``RetrainConfig.timeout_seconds`` plus
   ``answer_margin_seconds`` (counted in ``feedback_loop_retrain_requests_expired_total``;
   a late answer is ignored), so the policy may decide again;
4. asks the learner's lifecycle for a retrain decision and publishes it as a request. Its id
   is derived from the decision, so a consumer that crashes after publishing and replays up
   to the same decision publishes the same id again, which the retrainer answers once.

The swap is independent of when it lands: the result is the batch model plus every later
event, in order, whatever batch it happens between. A version missing from (or corrupt in)
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
from stream.kafka.control import ControlReader, publish_control
from stream.kafka.dead_letters import DeadLetters
from stream.kafka.history import read_history
from stream.learner import FeedbackLearner
from stream.lifecycle import ModelRegistry, RegistryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeferredSwap:
    """A version to swap in once the consumer has applied its history (``history_end``
    messages, the event index the version's training data ends at)."""

    version: int
    history_end: int
    raw: Message | None = None  # the control message that named it (dead-lettered if unusable)


@dataclass(frozen=True)
class SkippedVersion:
    """A model version the consumer was told to swap in but could not load, and why."""

    message: str  # what named it: the control message type, or "swap" for a failed load
    version: int
    error: str


class ModelControl:
    """Control-topic reader, retrain requester and model swapper of one consumer."""

    def __init__(
        self,
        settings: Settings,
        bootstrap_servers: str,
        learner: FeedbackLearner,
        on_forget: Callable[[str], object] | None = None,
        partitions: int = 1,
    ):
        self.settings = settings
        # With several partitions each has its own learner, and a retrain's history, answer
        # and catch-up are one learner's: until they are group-wide, retrains are off rather
        # than a swap putting every partition's users and events into one partition's models.
        self.retrains_off = partitions > 1
        if self.retrains_off:
            log.warning(
                "the events topic has %d partitions: retrain requests and model swaps are off "
                "(not group-wide yet); drift is still detected and exported",
                partitions,
            )
        # Also told of each forgotten user (the consumer's archive purges them).
        self.on_forget = on_forget
        self.bootstrap_servers = bootstrap_servers
        self.learner = learner
        self.registry = ModelRegistry(settings.retrain.registry_dir)
        self.reader = ControlReader(
            bootstrap_servers,
            settings.topics.control,
            learner.lifecycle.control_offset,
            kafka=settings.kafka,
        )
        # Swaps whose history ends beyond what this consumer has applied yet.
        self._deferred: list[DeferredSwap] = []
        # Versions missing from (or corrupt in) the registry: logged, recorded, skipped.
        self.skipped: list[SkippedVersion] = []
        self._letters: DeadLetters | None = None  # created at the first rejected message

    def between_batches(self, offsets: dict[tuple[str, int], int]) -> bool:
        """Act on the control topic and the drift policy; True if the models changed."""
        life, consumed = self.learner.lifecycle, self.learner.counts.consumed
        changed = False
        for record in self.reader.poll(0.0):
            life.control_offset = self.reader.next_offset
            msg = record.message
            if msg is None:
                self._reject(record.raw, "malformed", record.error)
            elif self.retrains_off and isinstance(
                msg, RetrainTrigger | ModelPublished | ModelActivated
            ):
                self._off(msg)
            elif isinstance(msg, RetrainTrigger):
                log.warning("manual retrain trigger: %s", msg.reason)
                life.trigger(msg.reason, record.raw.offset())
            elif isinstance(msg, ModelPublished):
                log.warning("model version %d published (accepted=%s)", msg.version, msg.accepted)
                if life.published(msg, consumed):
                    self._deferred.append(DeferredSwap(msg.version, msg.event_index, record.raw))
            elif isinstance(msg, RetrainFailed):
                log.error("retrain %s failed: %s", msg.request_id, msg.error)
                life.failed(msg, consumed)
            elif isinstance(msg, ModelActivated):
                log.warning("model version %d activated (%s)", msg.version, msg.reason)
                try:
                    meta = self.registry.get(msg.version).metadata
                except RegistryError as err:
                    self._skip(msg.type, msg.version, err)
                    self._reject(record.raw, "unloadable_version", str(err))
                    continue
                history_end = meta.get("event_index")
                if not isinstance(history_end, int):  # where to catch up from is unknown
                    self._skip(msg.type, msg.version, "no event_index in its metadata")
                    self._reject(record.raw, "no_history_end", "no event_index in its metadata")
                    continue
                self._deferred.append(DeferredSwap(msg.version, history_end, record.raw))
            elif isinstance(msg, ForgetUser):
                forget_user(self.learner, msg)
                if self.on_forget is not None:
                    self.on_forget(msg.user_id)
                changed = True  # checkpointed at once: a forget must survive a crash
        retrain = self.settings.retrain
        limit = retrain.timeout_seconds + retrain.answer_margin_seconds
        expired = life.expire(time.time(), limit, consumed)
        if expired is not None:
            log.error(
                "retrain %s timed out: no answer within %gs (is the retrainer running?); "
                "a retrain may be requested again",
                expired.request_id, limit,
            )  # fmt: skip
        ready = [d for d in self._deferred if d.history_end <= consumed]
        self._deferred = [d for d in self._deferred if d.history_end > consumed]
        for d in ready:
            try:
                self.swap(d.version, d.history_end, offsets)
            except RegistryError as err:
                self._skip("swap", d.version, err)
                if d.raw is not None:
                    self._reject(d.raw, "unloadable_version", str(err))
                life.swap_failed(d.version, consumed, f"{type(err).__name__}: {err}")
                continue
            changed = True
        # Nothing applied yet (e.g. still joining the group): no history to retrain on.
        decision = life.review(consumed) if consumed and not self.retrains_off else None
        if decision is not None:
            topic = self.settings.topics.events
            part_offsets = {p: o for (t, p), o in offsets.items() if t == topic}
            request = life.request(decision, part_offsets, consumed)
            forgotten = self.learner.admission.forgotten
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
                    "retrain requested (%s) at event %d: %s",
                    request.request_id, consumed, decision.reason,
                )  # fmt: skip
            else:  # answered before a restart (the same decision, made again): not re-sent
                log.warning("retrain %s was answered already", request.request_id)
            changed = True
        return changed

    def swap(self, version: int, history_end: int, offsets: dict[tuple[str, int], int]) -> None:
        """Load ``version`` and learn the events applied since its history ended."""
        bundle = self.registry.load(version)
        topic = self.settings.topics.events
        ends = {p: o for (t, p), o in offsets.items() if t == topic}
        history = read_history(
            self.bootstrap_servers, self.settings, ends, forgotten=self.learner.admission.forgotten
        )
        catch_up = [
            e for e, i in zip(history.events, history.indexes, strict=True) if i >= history_end
        ]
        n = self.learner.swap(bundle, version, catch_up)
        log.warning(
            "swapped in model version %d at event %d (%d events learned on top)",
            version,
            self.learner.counts.consumed,
            n,
        )

    def _off(self, msg: RetrainTrigger | ModelPublished | ModelActivated) -> None:
        """A retrain trigger or a version to swap in, while retrains are off: logged, and a
        version recorded as skipped."""
        if isinstance(msg, RetrainTrigger):
            log.error("retrain trigger (%s) ignored: retrains are off with several partitions",
                      msg.reason)  # fmt: skip
        else:
            self._skip(msg.type, msg.version, "retrains are off with several partitions")

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
