"""The whole loop offline: the consumer's learner over records, with batch retrains in it.

:class:`OfflineLoop` feeds records to a :class:`~stream.learner.FeedbackLearner` as
`feedback-loop evaluate` does, keeps the admitted interaction events (the history the
retrainer would read back from the events topic), and at the points a
:class:`RetrainSchedule` names runs the retrainer's own code
(:func:`stream.lifecycle.retrain`, with the live model's hold-out losses as the champion)
on exactly the events learned so far, then swaps an accepted model in as the consumer
does. The retrain runs synchronously, so the swap lands with nothing to catch up on (a
consumer would learn the events that arrived meanwhile on top of it).

Three schedules, alone or together: every N messages (``every``), on the drift policy's
decisions (``on_drift``), and once then frozen (``freeze_at``: retrain there, swap, and
from then on score without learning; the batch-only reference a loop is compared with).

>>> from producers.simulator import Simulator, SimulatorConfig
>>> from stream.config import Settings
>>> from stream.events import encode_event
>>> sim = Simulator(SimulatorConfig(n_users=40, n_items=30, seed=3))
>>> records = [encode_event(e) for e in [*sim.profiles(), *sim.events(3000)]]
>>> settings = Settings().model_copy(update={"retrain": Settings().retrain.model_copy(
...     update={"holdout_events": 300, "validation_events": 300, "trials": 2})})
>>> loop = OfflineLoop(settings, RetrainSchedule(every=1500))
>>> for raw in records:
...     _ = loop.process(raw)
>>> [(r["event_index"], r["status"] in ("accepted", "rejected")) for r in loop.retrains]
[(1500, True), (3000, True)]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.config import Settings
from stream.drift import Decision
from stream.events import InteractionEvent, ModelPublished, Rejection, RetrainFailed
from stream.learner import FeedbackLearner
from stream.lifecycle import HoldoutLosses, TrainingData, retrain_with

log = logging.getLogger(__name__)

__all__ = ["OfflineLoop", "RetrainSchedule"]


@dataclass(frozen=True)
class RetrainSchedule:
    """When an :class:`OfflineLoop` retrains.

    ``every``: after every ``every`` messages; ``on_drift``: when the drift policy decides
    (reviewed every ``review_every`` messages, as a consumer reviews between batches);
    ``freeze_at``: once after that many messages, then the models only score.
    """

    every: int | None = None
    on_drift: bool = False
    freeze_at: int | None = None
    review_every: int = 500

    def __post_init__(self) -> None:
        for name in ("every", "freeze_at"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive number of messages, got {value}")
        if self.review_every < 1:
            raise ValueError(f"review_every must be positive, got {self.review_every}")

    @property
    def name(self) -> str:
        parts = []
        if self.every:
            parts.append(f"every {self.every}")
        if self.on_drift:
            parts.append("on drift")
        if self.freeze_at:
            parts.append(f"frozen at {self.freeze_at}")
        return " + ".join(parts) or "online only"


class OfflineLoop:
    """A learner over records with the retrains of a :class:`RetrainSchedule` in the loop."""

    def __init__(
        self,
        settings: Settings,
        schedule: RetrainSchedule,
        on_retrain: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not schedule.on_drift:
            # Drift decisions are not part of this schedule: no monitor, no decisions.
            settings = settings.model_copy(
                update={"drift": settings.drift.model_copy(update={"enabled": False})}
            )
        self.settings = settings
        self.schedule = schedule
        self.learner = FeedbackLearner(settings)
        self.history: list[InteractionEvent] = []
        self.on_retrain = on_retrain
        # One summary per retrain: event_index, reason, status, version, outcome figures.
        self.retrains: list[dict[str, Any]] = []
        self.frozen = False
        self._versions = 0  # versions published so far (accepted or not), as a registry

    def process(self, raw: bytes | None) -> Rejection | None:
        """Admit and learn one message as the consumer does; retrain where scheduled."""
        learner = self.learner
        event = learner.admission.admit_raw(raw)
        if event is None or event.__class__ is Rejection:
            return event  # type: ignore[return-value]  # None or a Rejection
        if isinstance(event, InteractionEvent) and not self.frozen:
            self.history.append(event)
        learner.learn(event)  # type: ignore[arg-type]  # an admitted event
        n = learner.counts.consumed
        s = self.schedule
        if s.every and n % s.every == 0:
            learner.lifecycle.trigger(f"every {s.every} messages")
        if s.freeze_at == n:
            learner.lifecycle.trigger(f"frozen at {n}")
        if n % s.review_every == 0 or (s.every and n % s.every == 0) or s.freeze_at == n:
            self.review()
        return None

    def review(self) -> None:
        """Ask the lifecycle for a decision (drift or trigger) and act on it at once."""
        if self.frozen:
            return
        n = self.learner.counts.consumed
        decision = self.learner.lifecycle.review(n)
        if decision is not None:
            self.retrain(decision)
            if self.schedule.freeze_at is not None and n >= self.schedule.freeze_at:
                self.learner.freeze()
                self.frozen = True

    def retrain(self, decision: Decision) -> None:
        """Run the retrainer's code on the history learned so far; swap if accepted."""
        learner = self.learner
        life, n = learner.lifecycle, learner.counts.consumed
        request = life.request(decision, {0: n}, n)
        # The frozen reference is the batch model whatever the hold-out says.
        freezing = self.schedule.freeze_at is not None and n >= self.schedule.freeze_at
        champion = None if freezing else HoldoutLosses.from_dict(request.champion)
        data = TrainingData(self.history, learner.users, learner.items)
        record: dict[str, Any] = {"event_index": n, "reason": decision.reason}
        try:
            out = retrain_with(self.settings, data, champion)
        except (ValueError, RuntimeError) as err:
            log.warning("retrain at %d failed: %s", n, err)
            life.failed(RetrainFailed(request_id=request.request_id, error=str(err)), n)
            record.update(status="failed", error=str(err))
        else:
            self._versions += 1
            version = self._versions
            published = ModelPublished(
                request_id=request.request_id,
                version=version,
                accepted=out.accepted,
                offsets=request.offsets,
                event_index=n,
                outcome=out.as_dict(),
            )
            if life.published(published, n):
                learner.swap(out.bundle, version, [])
            record.update(
                status="accepted" if out.accepted else "rejected",
                version=version,
                challenger=out.challenger_holdout,
                champion=out.champion_holdout,
                confidence=out.confidence,
                params=out.params,
                seconds=out.seconds,
            )
        self.retrains.append(record)
        if self.on_retrain is not None:
            self.on_retrain(record)
