"""The model lifecycle of one learner: drift alarms -> retrain decisions -> swaps.

:class:`ModelLifecycle` is pure bookkeeping (no Kafka): it owns the drift monitor, the
retrain policy and the retrain state machine (:class:`~stream.lifecycle.state.RetrainState`),
keeps the live models' per-event losses over the last hold-out window (the champion's side
of the champion/challenger comparison) and records every alarm, retrain and swap
(:mod:`stream.lifecycle.records`) for the reports. It is part of the learner's state, so it
is checkpointed with it.

>>> from stream.config import Settings
>>> life = ModelLifecycle(Settings())
>>> life.trigger("manual")
>>> decision = life.review(event_index=50_000)
>>> request = life.request(decision, {0: 50_000}, event_index=50_000)
>>> request.reason, life.retrains[0].start_event_index, life.state.phase
('manual', 50000, 'requested')
>>> request.request_id  # derived from the decision: a repeated decision repeats its id
'v0-manual50000-p0'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from stream.config import Settings
from stream.drift import Decision, DriftMonitor, DriftObserver, RetrainPolicy
from stream.evaluation import OutcomeObserver
from stream.events import ModelPublished, RetrainFailed, RetrainRequest
from stream.lifecycle.holdout import HoldoutWindow
from stream.lifecycle.records import AlarmRecord, RetrainAnswer, RetrainRecord, SwapRecord
from stream.lifecycle.state import RetrainState

log = logging.getLogger(__name__)

_UNCLAIMED_KEPT = 64

#: Why a control message was not acted on (the label values of its counter).
CONTROL_REJECT_REASONS = ("malformed", "unloadable_version", "no_history_end")


class ModelLifecycle:
    """Drift monitor, retrain policy and the history of alarms, retrains and swaps."""

    def __init__(self, settings: Settings) -> None:
        d = settings.drift
        self.monitor: DriftMonitor | None = (
            DriftMonitor.from_config(d, seed=settings.model.seed) if d.enabled else None
        )
        self.policy = RetrainPolicy(d)
        # The live models' losses over the last hold-out window (the champion).
        self.holdout = HoldoutWindow(settings.retrain.holdout_events)
        # What the learner hands each event's outcome to.
        self.observers: tuple[OutcomeObserver, ...] = (self.holdout,) + (
            (DriftObserver(self.monitor),) if self.monitor is not None else ()
        )
        self.version = 0
        self.alarms: list[AlarmRecord] = []
        self.retrains: list[RetrainRecord] = []
        self.swaps: list[SwapRecord] = []
        self.state = RetrainState()
        # A manual trigger not yet turned into a request (queued while a retrain is in
        # progress), with what identifies it: the trigger's control-topic offset if known.
        self._manual: tuple[str, int | None] | None = None
        self._manual_key: str | None = None  # the id part of the decision review() returned
        # A drift decision waiting for the new regime's events (see RetrainConfig.drift_wait).
        self.waiting: Decision | None = None
        self._drift_wait = settings.retrain.drift_wait
        # Next offset of the control topic to read (checkpointed with the learner).
        self.control_offset = 0
        # Control messages not acted on, by reason (CONTROL_REJECT_REASONS).
        self.control_rejected: dict[str, int] = {}
        self.requests_expired = 0  # retrain requests given up on (no answer in time)
        # Answers to requests without a record here (another consumer's, or this learner's own
        # from before a restore), by id: a request made again is answered already. Bounded.
        self.unclaimed: dict[str, ModelPublished | RetrainFailed] = {}

    def trigger(self, reason: str, control_offset: int | None = None) -> None:
        """Ask for a retrain at the next review where none is in progress (manual trigger,
        from the control topic at ``control_offset``)."""
        if self.state.busy:
            log.warning("manual retrain queued until the retrain in progress ends: %s", reason)
        self._manual = (reason, control_offset)

    def reject_control(self, reason: str) -> None:
        """Count a control message that could not be acted on."""
        self.control_rejected[reason] = self.control_rejected.get(reason, 0) + 1

    def review(self, event_index: int) -> Decision | None:
        """Turn the alarms raised since the last review into at most one decision.

        A decision must be followed by :meth:`request`; until then (and while a retrain is
        in progress) further signals are counted as ignored, ``retrain_in_progress``. A
        drift decision is returned ``RetrainConfig.drift_wait`` events after it was made
        (:attr:`waiting` until then), so the retrain can choose and judge its model on
        events of the new regime; a manual trigger is returned at once.
        """
        decision = None
        self._manual_key = None
        if self._manual is not None and not self.state.busy:  # else: stays queued
            reason, offset = self._manual
            decision = self.policy.trigger(event_index, reason)
            self._manual = None
            self._manual_key = f"manual{offset if offset is not None else event_index}"
        for s in self.monitor.drain() if self.monitor is not None else ():
            self.alarms.append(AlarmRecord.from_signal(s))
            busy = self.state.busy or decision is not None or self.waiting is not None
            decision = self.policy.consider(s, busy=busy) or decision
        if decision is not None and "manual" in decision.signals:
            self.waiting = None  # a manual retrain covers a waiting drift decision
        elif decision is not None and self._drift_wait:
            # Drift: retrain once the validation and hold-out windows see the new regime.
            log.warning(
                "drift decision at event %d: retrain requested after %d more events",
                decision.event_index, self._drift_wait,
            )  # fmt: skip
            self.waiting, decision = decision, None
        waiting = self.waiting
        if (
            decision is None
            and waiting is not None
            and event_index >= waiting.event_index + self._drift_wait
        ):
            self.waiting, decision = None, waiting
        return decision

    def note_alarms(self) -> None:
        """Record the alarms raised since the last call without deciding anything (a task
        that is not the group's decider: its alarms are reported, not acted on)."""
        for s in self.monitor.drain() if self.monitor is not None else ():
            self.alarms.append(AlarmRecord.from_signal(s))

    def champion(self) -> dict[str, float]:
        """The live models' summed losses over the hold-out window (HoldoutLosses fields)."""
        return self.holdout.champion()

    def request_id(self, decision: Decision, partitions: Iterable[int]) -> str:
        """The id of the request for ``decision``, the same whenever the same decision is made
        again (a consumer restored from a checkpoint before its request replays the events to
        it): the live version, what decided (the trigger's control offset, or the drift
        decision's event index) and the partitions whose history it covers."""
        if "manual" in decision.signals and self._manual_key is not None:
            what = self._manual_key
        else:
            what = f"drift{decision.event_index}"
        return f"v{self.version}-{what}-p{'.'.join(map(str, sorted(partitions)))}"

    def request(
        self, decision: Decision, offsets: dict[int, int], event_index: int
    ) -> RetrainRequest:
        """The request for a retrain on the history before ``offsets`` (``event_index``
        messages); the hold-out losses are those of the last events before it."""
        req = RetrainRequest(
            request_id=self.request_id(decision, offsets),
            event_index=event_index,
            offsets=offsets,
            reason=decision.reason,
            signals=decision.signals,
            champion=self.champion(),
        )
        answer = self.unclaimed.pop(req.request_id, None)
        record = RetrainRecord(
            request_id=req.request_id,
            start_event_index=event_index,
            decided_at_event_index=decision.event_index,
            reason=decision.reason,
            signals=decision.signals,
        )
        self.retrains.append(record)
        if answer is None:
            self.state.request(req)
        elif isinstance(answer, ModelPublished):  # its version was (or is being) swapped in
            record.answered(RetrainAnswer.from_published(answer), event_index)
        else:
            record.fail(event_index, answer.error)
        return req

    def _unclaimed(self, answer: ModelPublished | RetrainFailed) -> None:
        self.unclaimed[answer.request_id] = answer
        while len(self.unclaimed) > _UNCLAIMED_KEPT:
            del self.unclaimed[next(iter(self.unclaimed))]

    def _record(self, request_id: str) -> RetrainRecord | None:
        return next((r for r in self.retrains if r.request_id == request_id), None)

    def published(self, msg: ModelPublished, event_index: int) -> bool:
        """Record the retrainer's answer; True when the new version should be swapped in."""
        rec = self._record(msg.request_id)
        if rec is None:  # another consumer's request, or one from before a restore
            self._unclaimed(msg)
            return msg.accepted
        if rec.status != "requested":
            # Answered already (a repeated answer), or given up on: never swapped twice, and
            # never behind the back of a request made since.
            log.warning(
                "ignoring answer %s (version %d): the retrain is %s",
                msg.request_id, msg.version, rec.status,
            )  # fmt: skip
            return False
        rec.answered(RetrainAnswer.from_published(msg), event_index)
        # Only the answer to the outstanding request moves the state (a rollback may have
        # ended that retrain already; its accepted version is still swapped in).
        if self.state.awaits(msg.request_id):
            if msg.accepted:
                self.state.accept(msg.request_id, msg.version)
            else:
                self.state.reject(msg.request_id)
        return msg.accepted

    def failed(self, msg: RetrainFailed, event_index: int) -> None:
        """Record a failed retrain; the policy may decide again."""
        rec = self._record(msg.request_id)
        if rec is None:
            self._unclaimed(msg)
        else:
            rec.fail(event_index, msg.error)
        if self.state.awaits(msg.request_id):
            self.state.fail(msg.request_id)

    def expire(self, now: float, limit_seconds: float, event_index: int) -> RetrainRecord | None:
        """End the outstanding retrain if its answer is overdue (``limit_seconds`` since the
        request, wall clock); return its record. The policy may decide again; a late answer
        is ignored (:meth:`published`)."""
        req = self.state.outstanding
        if req is None or not self.state.overdue(now, limit_seconds):
            return None
        rec = self._record(req.request_id)
        if rec is not None:
            rec.time_out(event_index, f"no answer within {limit_seconds:g}s")
        self.state.time_out(req.request_id)
        self.requests_expired += 1
        return rec

    def swap_failed(self, version: int, event_index: int, error: str) -> None:
        """``version`` could not be swapped in (missing or corrupt in the registry): if it
        was the outstanding retrain's, that retrain failed and the policy may decide again."""
        state = self.state
        if state.phase != "swapping" or state.version != version:
            return  # an activation or another consumer's version: nothing was waiting on it
        req = state.outstanding
        rec = self._record(req.request_id) if req is not None else None
        if rec is not None:
            rec.fail(event_index, error)
        state.abandon(version)

    def swapped(self, version: int, event_index: int, caught_up: int) -> None:
        self.version = version
        self.swaps.append(SwapRecord(event_index, version, caught_up))
        if self.monitor is not None:
            # The new models have a new loss level and the stream a new normal.
            self.monitor.reset()
        # Alarms awaiting confirmation were about the models just replaced.
        self.policy.clear_evidence()
        self.waiting = None
        self.state.swapped()

    def report(self) -> dict[str, Any]:
        return {
            "drift_alarms": [a.as_dict() for a in self.alarms],
            "retrains": [r.as_dict() for r in self.retrains],
            "swaps": [s.as_dict() for s in self.swaps],
            "model_version": self.version,
            "policy_outcomes": {f"{d}:{o}": n for (d, o), n in self.policy.outcomes.items()},
        }
