"""The model lifecycle of one learner: drift alarms -> retrain decisions -> swaps.

:class:`ModelLifecycle` is pure bookkeeping (no Kafka): it owns the drift monitor and the
retrain policy, keeps the live models' per-event losses over the last hold-out window (the
champion's side of the champion/challenger comparison) and records every alarm, retrain and
swap for the reports. It is part of the learner's state, so it is checkpointed with it.

>>> from stream.config import Settings
>>> life = ModelLifecycle(Settings())
>>> life.trigger("manual")
>>> decision = life.review(event_index=50_000)
>>> request = life.request(decision, {0: 50_000}, event_index=50_000)
>>> request.reason, life.retrains[0]["start_event_index"]
('manual', 50000)
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from stream.config import Settings
from stream.drift import Decision, DriftMonitor, RetrainPolicy
from stream.events import ModelPublished, RetrainFailed, RetrainRequest

log = logging.getLogger(__name__)

# Marks a hold-out slot without that kind of loss (a dwell event has neither).
NO_LOSS = -1.0


class ModelLifecycle:
    """Drift monitor, retrain policy and the history of alarms, retrains and swaps."""

    def __init__(self, settings: Settings) -> None:
        d = settings.drift
        self.monitor: DriftMonitor | None = (
            DriftMonitor.default(
                seed=settings.model.seed,
                block_size=d.block_size,
                window=d.window,
                rating_block_size=d.rating_block_size,
            )
            if d.enabled
            else None
        )
        self.policy = RetrainPolicy(d)
        # (engagement log loss, rating squared error) of the live models per interaction
        # event, NO_LOSS where not applicable, over the last hold-out window.
        self.holdout: deque[tuple[float, float]] = deque(
            maxlen=settings.retrain.holdout_events
        )
        self.version = 0
        self.alarms: list[dict[str, Any]] = []
        self.retrains: list[dict[str, Any]] = []
        self.swaps: list[dict[str, Any]] = []
        self.pending: RetrainRequest | None = None
        self._manual: str | None = None
        # Next offset of the control topic to read (checkpointed with the learner).
        self.control_offset = 0

    def trigger(self, reason: str) -> None:
        """Ask for a retrain at the next review (manual trigger)."""
        self._manual = reason

    def review(self, event_index: int) -> Decision | None:
        """Turn the alarms raised since the last review into at most one decision."""
        decision = None
        if self._manual is not None:
            decision = self.policy.trigger(event_index, self._manual)
            self._manual = None
        for s in self.monitor.drain() if self.monitor is not None else ():
            self.alarms.append(
                {
                    "event_index": s.event_index,
                    "detector": s.detector,
                    "kind": s.kind,
                    "statistic": s.statistic,
                    "threshold": s.threshold,
                }
            )
            decided = self.policy.consider(s)
            decision = decision or decided
        return decision

    def champion(self) -> dict[str, float]:
        """The live models' summed losses over the hold-out window (HoldoutLosses fields)."""
        ll_sum = se_sum = 0.0
        ll_n = se_n = 0
        for ll, se in self.holdout:
            if ll != NO_LOSS:
                ll_sum += ll
                ll_n += 1
            if se != NO_LOSS:
                se_sum += se
                se_n += 1
        return {
            "engagement_logloss_sum": ll_sum,
            "engagement_n": ll_n,
            "rating_se_sum": se_sum,
            "rating_n": se_n,
        }

    def request(
        self, decision: Decision, offsets: dict[int, int], event_index: int
    ) -> RetrainRequest:
        """The request for a retrain on the history before ``offsets`` (``event_index``
        messages); the hold-out losses are those of the last events before it."""
        req = RetrainRequest(
            event_index=event_index,
            offsets=offsets,
            reason=decision.reason,
            signals=decision.signals,
            champion=self.champion(),
        )
        self.pending = req
        self.retrains.append(
            {
                "request_id": req.request_id,
                "start_event_index": event_index,
                "decided_at_event_index": decision.event_index,
                "reason": decision.reason,
                "signals": list(decision.signals),
                "end_event_index": None,
                "status": "requested",
            }
        )
        return req

    def _record(self, request_id: str) -> dict[str, Any] | None:
        return next((r for r in self.retrains if r["request_id"] == request_id), None)

    def published(self, msg: ModelPublished, event_index: int) -> bool:
        """Record the retrainer's answer; True when the new version should be swapped in."""
        rec = self._record(msg.request_id)
        if rec is None:  # another consumer's request, or one from before a restore
            return msg.accepted
        out = msg.outcome
        rec.update(
            end_event_index=event_index,
            status="accepted" if msg.accepted else "rejected",
            accepted=msg.accepted,
            version=msg.version,
            trials=out.get("trials"),
            validation_score=out.get("best_validation"),
            challenger_holdout=out.get("challenger_holdout"),
            champion_holdout=out.get("champion_holdout"),
            params=out.get("params"),
            seconds=out.get("seconds"),
        )
        if not msg.accepted:
            self._done()
        return msg.accepted

    def failed(self, msg: RetrainFailed, event_index: int) -> None:
        rec = self._record(msg.request_id)
        if rec is not None:
            rec.update(end_event_index=event_index, status="failed", error=msg.error)
        self._done()

    def swapped(self, version: int, event_index: int, caught_up: int) -> None:
        self.version = version
        self.swaps.append(
            {"event_index": event_index, "model_version": version, "caught_up_events": caught_up}
        )
        if self.monitor is not None:
            # The new models have a new loss level and the stream a new normal.
            self.monitor.reset()
        self._done()

    def _done(self) -> None:
        self.pending = None
        self.policy.finished()

    def report(self) -> dict[str, Any]:
        return {
            "drift_alarms": list(self.alarms),
            "retrains": list(self.retrains),
            "swaps": list(self.swaps),
            "model_version": self.version,
            "policy_outcomes": {f"{d}:{o}": n for (d, o), n in self.policy.outcomes.items()},
        }
