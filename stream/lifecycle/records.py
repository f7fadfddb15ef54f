"""Typed records of a learner's lifecycle: drift alarms, retrains and swaps.

They are what :meth:`~stream.lifecycle.model_lifecycle.ModelLifecycle.report` lists (through
``as_dict``, with the report's historical keys) and what the checkpoint keeps.

>>> from stream.drift import Signal
>>> AlarmRecord.from_signal(Signal("dwell_psi", "data", 700, 0.08, 0.05)).as_dict()
{'event_index': 700, 'detector': 'dwell_psi', 'kind': 'data', 'statistic': 0.08, 'threshold': 0.05}
>>> rec = RetrainRecord("r1", 900, 850, "manual", ("manual",))
>>> rec.as_dict()["status"], "accepted" in rec.as_dict()
('requested', False)
>>> rec.fail(1200, "ValueError: boom"); rec.as_dict()["error"], rec.as_dict()["end_event_index"]
('ValueError: boom', 1200)
>>> SwapRecord(1500, 2, 300).as_dict()
{'event_index': 1500, 'model_version': 2, 'caught_up_events': 300}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from stream.drift import Signal
from stream.events import ModelPublished

__all__ = ["AlarmRecord", "RetrainAnswer", "RetrainRecord", "RetrainStatus", "SwapRecord"]

RetrainStatus = Literal["requested", "accepted", "rejected", "failed", "timed_out"]


@dataclass(frozen=True)
class AlarmRecord:
    """One drift alarm, as raised by its detector."""

    event_index: int
    detector: str
    kind: str
    statistic: float
    threshold: float

    @classmethod
    def from_signal(cls, s: Signal) -> AlarmRecord:
        return cls(s.event_index, s.detector, s.kind, s.statistic, s.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_index": self.event_index,
            "detector": self.detector,
            "kind": self.kind,
            "statistic": self.statistic,
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class RetrainAnswer:
    """The retrainer's answer to a request (a published version, accepted or not).

    The scores come from the retrainer's summary and may be missing (None), e.g. no
    champion hold-out when the live models had not scored anything yet.
    """

    accepted: bool
    version: int
    trials: int | None = None
    validation_score: float | None = None
    challenger_holdout: float | None = None
    champion_holdout: float | None = None
    params: dict[str, Any] | None = None
    seconds: float | None = None

    @classmethod
    def from_published(cls, msg: ModelPublished) -> RetrainAnswer:
        out = msg.outcome
        return cls(
            accepted=msg.accepted,
            version=msg.version,
            trials=out.get("trials"),
            validation_score=out.get("best_validation"),
            challenger_holdout=out.get("challenger_holdout"),
            champion_holdout=out.get("champion_holdout"),
            params=out.get("params"),
            seconds=out.get("seconds"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "version": self.version,
            "trials": self.trials,
            "validation_score": self.validation_score,
            "challenger_holdout": self.challenger_holdout,
            "champion_holdout": self.champion_holdout,
            "params": self.params,
            "seconds": self.seconds,
        }


@dataclass
class RetrainRecord:
    """One retrain request and, once it ended, how: its answer or its error."""

    request_id: str
    start_event_index: int
    decided_at_event_index: int
    reason: str
    signals: tuple[str, ...]
    end_event_index: int | None = None
    status: RetrainStatus = "requested"
    answer: RetrainAnswer | None = None
    error: str | None = None

    def answered(self, answer: RetrainAnswer, event_index: int) -> None:
        self.answer = answer
        self.end_event_index = event_index
        self.status = "accepted" if answer.accepted else "rejected"

    def fail(self, event_index: int, error: str) -> None:
        self.end_event_index = event_index
        self.status = "failed"
        self.error = error

    def time_out(self, event_index: int, error: str) -> None:
        """No answer in time: the learner stopped waiting (a late answer is ignored)."""
        self.fail(event_index, error)
        self.status = "timed_out"

    def as_dict(self) -> dict[str, Any]:
        """The report's row: the answer's and the error's keys only once they are known."""
        row: dict[str, Any] = {
            "request_id": self.request_id,
            "start_event_index": self.start_event_index,
            "decided_at_event_index": self.decided_at_event_index,
            "reason": self.reason,
            "signals": list(self.signals),
            "end_event_index": self.end_event_index,
            "status": self.status,
        }
        if self.answer is not None:
            row.update(self.answer.as_dict())
        if self.error is not None:
            row["error"] = self.error
        return row


@dataclass(frozen=True)
class SwapRecord:
    """One swap: the version put live at ``event_index`` and the events it learned on top."""

    event_index: int
    model_version: int
    caught_up_events: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_index": self.event_index,
            "model_version": self.model_version,
            "caught_up_events": self.caught_up_events,
        }
