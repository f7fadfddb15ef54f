"""The retrain decision policy: which drift signals launch a full batch retrain.

A single detector alarm is weak evidence (every detector has a false-alarm rate), and a
retrain costs minutes of CPU and a model swap, so the policy asks for more:

1. **warm-up**: no retrain before ``warmup_events`` (young models move fast on their own);
2. **in progress**: one retrain at a time; signals during it are ignored;
3. **cooldown**: none within ``cooldown_events`` of the previous request;
4. **confirmation**: one alarm of a ``deciding_detectors`` detector, or ``confirmations``
   alarms from different detectors within ``confirm_within`` events, or
   ``data_confirmations`` data-drift alarms from different detectors.

Which detectors may decide alone, and why. The calibrated CUSUM
(:mod:`stream.drift.cusum`, ``engagement_logloss_cusum``) sees the click model's regret
standardized by a running estimate of its own level and noise, so between changes its
statistic is a random walk with a known negative drift on a known scale; its threshold was
set on long stationary simulator runs with a wide margin (BENCHMARKS.md, drift section: no
alarm in 10 x 1M events, largest statistic well under the threshold). Its false-alarm rate
is a property of the construction rather than of one stream's luck, which is what the
confirmation rule buys for the other detectors; asking it for a second opinion would only
add the River detectors' delay (some 20k events on the simulator) to every real retrain.
The genre-mix, dwell and new-user data detectors compare whole windows with a reference and
stayed silent on the same stationary runs, so they decide alone as before; the event-type
mix is moved by bursts of bot clicks admitted before the bot filter catches them (it alarmed
on stationary runs with bots), so it needs confirmation like River's loss detectors, whose
noise on a learning model moves with the traffic mix.

Whether a retrain is in progress is the caller's to say (``busy``): the model lifecycle owns
the retrain state machine, the policy only weighs evidence. A manual trigger skips 1, 3 and 4
but not 2. Every signal ends as ``decided`` or as ignored with its reason, logged and counted
in :attr:`RetrainPolicy.outcomes`.

>>> from stream.config import DriftConfig
>>> from stream.drift.signals import Signal
>>> policy = RetrainPolicy(DriftConfig(warmup_events=0, confirmations=2))
>>> policy.consider(Signal("rating_se_adwin", "concept", 100, 0.3, 0.2)) is None
True
>>> [s.detector for s in policy.evidence]
['rating_se_adwin']
>>> policy.consider(Signal("rating_se_page_hinkley", "concept", 900, 25.0, 20.0)).signals
('rating_se_adwin', 'rating_se_page_hinkley')
>>> policy.consider(Signal("event_type_mix_js", "data", 950, 0.02, 0.01), busy=True) is None
True
>>> policy.outcomes[("event_type_mix_js", "retrain_in_progress")]
1
>>> policy.consider(Signal("event_type_mix_js", "data", 40_000, 0.02, 0.01)) is None
True
>>> policy.consider(Signal("engagement_logloss_cusum", "concept", 41_000, 13.0, 12.0)).reason
'confirmed by event_type_mix_js, engagement_logloss_cusum'
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from stream.config import DriftConfig
from stream.drift.signals import Signal

__all__ = ["Decision", "RetrainPolicy"]

log = logging.getLogger(__name__)

IN_PROGRESS = "retrain_in_progress"


@dataclass(frozen=True)
class Decision:
    """A decision to retrain, at the learner's event index."""

    event_index: int
    reason: str
    signals: tuple[str, ...]


class RetrainPolicy:
    """Turns drift signals (and manual triggers) into retrain decisions."""

    def __init__(self, config: DriftConfig) -> None:
        self.config = config
        self.last_request: int | None = None
        #: Signals past the warm-up and cooldown, still within ``confirm_within`` of the
        #: latest one: the evidence a further signal may complete.
        self.evidence: list[Signal] = []
        #: (detector, outcome) -> signals; outcome is ``decided`` or the reason ignored.
        self.outcomes: Counter[tuple[str, str]] = Counter()

    def _ignore(self, signal: Signal, reason: str) -> None:
        self.outcomes[(signal.detector, reason)] += 1
        log.info(
            "drift signal ignored: %s at event %d (statistic %.4g > %.4g): %s",
            signal.detector,
            signal.event_index,
            signal.statistic,
            signal.threshold,
            reason,
            extra={"detector": signal.detector, "outcome": reason},
        )

    def consider(self, signal: Signal, busy: bool = False) -> Decision | None:
        """Weigh one signal; return a decision when it completes the evidence.

        ``busy``: a retrain is in progress, so the signal is only counted as ignored.
        """
        cfg, idx = self.config, signal.event_index
        if busy:
            self._ignore(signal, IN_PROGRESS)
            return None
        if idx < cfg.warmup_events:
            self._ignore(signal, "warmup")
            return None
        if self.last_request is not None and idx - self.last_request < cfg.cooldown_events:
            self._ignore(signal, "cooldown")
            return None
        self.evidence = [s for s in self.evidence if idx - s.event_index <= cfg.confirm_within]
        self.evidence.append(signal)
        names = tuple(dict.fromkeys(s.detector for s in self.evidence))
        data = {s.detector for s in self.evidence if s.kind == "data"}
        if (
            len(names) < cfg.confirmations
            and len(data) < cfg.data_confirmations
            and signal.detector not in cfg.deciding_detectors
        ):
            self._ignore(signal, "awaiting_confirmation")
            return None
        reason = "confirmed by " + ", ".join(names)
        for s in self.evidence:
            self.outcomes[(s.detector, "decided")] += 1
        return self._decide(idx, reason, names)

    def trigger(
        self, event_index: int, reason: str = "manual", busy: bool = False
    ) -> Decision | None:
        """A manual retrain request; refused only while a retrain is in progress (``busy``)."""
        if busy:
            log.warning("manual retrain refused: a retrain is already in progress")
            self.outcomes[("manual", IN_PROGRESS)] += 1
            return None
        self.outcomes[("manual", "decided")] += 1
        return self._decide(event_index, reason, ("manual",))

    def _decide(self, idx: int, reason: str, names: tuple[str, ...]) -> Decision:
        self.evidence.clear()
        self.last_request = idx  # the cooldown runs from here
        log.warning("retrain decided at event %d: %s", idx, reason)
        return Decision(idx, reason, names)

    def clear_evidence(self) -> None:
        """Forget the signals awaiting confirmation (they described models now replaced)."""
        self.evidence.clear()
