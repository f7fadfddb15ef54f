"""The consumer's counts, scores and lifecycle, read from the learner when Prometheus scrapes.

The learner already counts everything (``learner.counts``, ``learner.scores()``, the drift
monitor, the retrain policy, the lifecycle's requests and swaps), so nothing is mirrored on the
hot path: :class:`LearnerCollector` reads those numbers at scrape time, on the HTTP server's
thread. A counter counts from the start of the process: the learner's numbers minus what they
stood at when it was bound (a restored checkpoint's counts are not this process's work), plus
what learners bound before it had counted. Every bounded label value exists from the start,
so rates and alerts see zeros.

>>> from types import SimpleNamespace
>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from stream.learner import Counts
>>> def learner(counts):
...     life = SimpleNamespace(version=0, retrains=[], swaps=[], monitor=None,
...                            policy=SimpleNamespace(outcomes={}), control_rejected={},
...                            requests_expired=0)
...     return SimpleNamespace(counts=counts, lifecycle=life, scores=lambda: {})
>>> collector = LearnerCollector()
>>> registry = CollectorRegistry(); registry.register(collector)
>>> live = learner(Counts(applied=90))  # restored from a checkpoint: 90 applied already
>>> collector.track(lambda: live)
>>> registry.get_sample_value("feedback_loop_events_applied_total")
0.0
>>> live.counts.applied = 100  # the consumer thread applies 10 events
>>> registry.get_sample_value("feedback_loop_events_applied_total")
10.0
>>> registry.get_sample_value("feedback_loop_events_filtered_total", {"reason": "bot"})
0.0
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.events import EVENT_TYPES
from stream.lifecycle import CONTROL_REJECT_REASONS

if TYPE_CHECKING:
    from stream.learner import FeedbackLearner

log = logging.getLogger(__name__)

PREFIX = "feedback_loop"
DEAD_LETTER_KINDS = (
    "malformed_json",
    "unknown_type",
    "invalid_event",
    "unknown_user",
    "unknown_item",
    "oversized",
    "null_value",
    "conflicting_duplicate",
)

# Series of one family: label values -> value.
Series = dict[tuple[str, ...], float]
# Every family's series, keyed by family name (without the prefix).
Reading = dict[str, Series]


@dataclass(frozen=True)
class Family:
    name: str  # without the prefix, and without _total for counters
    help: str
    counter: bool
    labels: tuple[str, ...] = ()


FAMILIES = (
    Family("events_consumed", "Messages consumed, by declared event type.", True, ("type",)),
    Family("events_applied", "Events applied to the models.", True),
    Family(
        "events_dead_lettered",
        "Messages sent to the dead-letter topic, by kind of error.",
        True,
        ("kind",),
    ),
    Family("events_filtered", "Events filtered out, by reason.", True, ("reason",)),
    Family("events_duplicate", "Events skipped as duplicates of an event_id.", True),
    Family("prequential_rmse", "Prequential RMSE of rating predictions.", False, ("model",)),
    Family("prequential_mae", "Prequential MAE of rating predictions.", False, ("model",)),
    Family("prequential_logloss", "Prequential log loss of click predictions.", False, ("model",)),
    Family("prequential_auc", "Prequential ROC AUC of click predictions.", False, ("model",)),
    Family(
        "prequential_recall_at_10",
        "Share of positive implicit events whose item was in the top 10 before learning.",
        False,
        ("model",),
    ),
    Family(
        "drift_statistic",
        "Current statistic of each drift detector (compare with its threshold).",
        False,
        ("detector",),
    ),
    Family("drift_threshold", "Alarm threshold of each drift detector.", False, ("detector",)),
    Family(
        "drift_state",
        "1 while a drift detector is in alarm (since its last reset), else 0.",
        False,
        ("detector",),
    ),
    Family("drift_alarms", "Alarms raised by each drift detector.", True, ("detector",)),
    Family(
        "drift_signals",
        "Drift signals by what the retrain policy did with them (decided or why ignored).",
        True,
        ("detector", "outcome"),
    ),
    Family("retrain_requests", "Retrain requests published by this consumer.", True),
    Family("model_swaps", "Batch-trained models swapped into this consumer.", True),
    Family(
        "retrain_requests_expired",
        "Retrain requests of this consumer given up on: no answer in time.",
        True,
    ),
    Family(
        "control_rejected",
        "Control messages not acted on (undecodable, or naming an unloadable version), by reason.",
        True,
        ("reason",),
    ),
    Family(
        "model_version",
        "Registry version of the live models (0: learned online from scratch).",
        False,
    ),
    Family("users_held", "Users with learned state held by the consumer.", False),
    Family("users_evicted", "Least recently active users evicted (over max_users).", True),
    Family("users_forgotten", "Users erased by a forget request.", True),
)

# (family, score key of learner.scores(), model label): which model each score is about.
SCORES = (
    ("prequential_rmse", "rmse", "rating_mf"),
    ("prequential_mae", "mae", "rating_mf"),
    ("prequential_logloss", "logloss", "engagement"),
    ("prequential_auc", "auc", "engagement"),
    ("prequential_recall_at_10", "recall_at_10", "implicit_mf"),
)


def initial() -> Reading:
    """What is exposed before any learner: the bounded label values, at zero."""
    out: Reading = {f.name: {} for f in FAMILIES}
    out["events_consumed"] = {(t,): 0.0 for t in (*EVENT_TYPES, "invalid")}
    out["events_dead_lettered"] = {(k,): 0.0 for k in DEAD_LETTER_KINDS}
    out["events_filtered"] = {("bot",): 0.0, ("forgotten_user",): 0.0}
    out["control_rejected"] = {(r,): 0.0 for r in CONTROL_REJECT_REASONS}
    for name in (
        "users_held",
        "users_evicted",
        "users_forgotten",
        "events_applied",
        "events_duplicate",
        "retrain_requests",
        "retrain_requests_expired",
        "model_swaps",
        "model_version",
    ):
        out[name] = {(): 0.0}
    return out


def read(learner: FeedbackLearner) -> Reading:
    """Every number the collector exposes, as the learner has it now.

    Runs on the scrape thread while the consumer thread mutates the learner: dicts are copied
    (``dict(d)`` is atomic under the GIL) before they are iterated.
    """
    counts, life = learner.counts, learner.lifecycle
    out = initial()
    out["events_consumed"] = _keyed(dict(counts.consumed_by_type))
    out["events_applied"] = {(): float(counts.applied)}
    out["events_dead_lettered"] = _keyed(dict(counts.dead_letters_by_kind))
    out["events_filtered"] = _keyed(dict(counts.filtered_by_reason))
    out["events_duplicate"] = {(): float(counts.duplicates)}
    scores = learner.scores()
    for family, key, model in SCORES:
        value = scores.get(key)
        if value is not None:
            out[family] = {(model,): float(value)}
    rows = life.monitor.snapshot() if life.monitor is not None else []
    for row in rows:
        name = (str(row["name"]),)
        out["drift_statistic"][name] = float(row["statistic"])
        out["drift_threshold"][name] = float(row["threshold"])
        out["drift_state"][name] = 1.0 if row["in_drift"] else 0.0
        out["drift_alarms"][name] = float(row["n_alarms"])  # survives detector resets
    out["drift_signals"] = {
        (str(d), str(o)): float(n) for (d, o), n in dict(life.policy.outcomes).items()
    }
    out["retrain_requests"] = {(): float(len(life.retrains))}
    out["retrain_requests_expired"] = {(): float(life.requests_expired)}
    out["model_swaps"] = {(): float(len(life.swaps))}
    out["control_rejected"] |= _keyed(dict(life.control_rejected))
    out["model_version"] = {(): float(life.version)}
    # getattr: the doctest's stand-in learner has no user accounting.
    for family in ("users_held", "users_evicted", "users_forgotten"):
        out[family] = {(): float(getattr(learner, family, 0))}
    return out


def _keyed(counts: dict[str, int]) -> Series:
    return {(str(k),): float(n) for k, n in counts.items()}


class LearnerCollector(Collector):
    """Reads the learner returned by a getter at every scrape (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # track() on the consumer thread, collect() on scrapes
        self._getter: Callable[[], FeedbackLearner | None] | None = None
        self._bound: FeedbackLearner | None = None
        self._baseline: Reading = {}
        self._carried: Reading = {}  # counted by learners bound before (a restart's)
        self._last_good: Reading | None = None
        self._created = time.time()

    def track(self, learner: Callable[[], FeedbackLearner | None]) -> None:
        """Expose the learner ``learner()`` returns from now on, counting from what it has.

        A getter rather than the object: a swap replaces the learner's models, and a restart
        the learner itself. Call it again right after restoring a new learner from a
        checkpoint; what the previous one counted is kept.
        """
        with self._lock:
            self._getter = learner
            self._rebind(learner())

    def _rebind(self, learner: FeedbackLearner | None) -> None:
        if self._bound is not None:
            self._carried = self._counters(self._read(self._bound))
        self._bound = learner
        self._baseline = self._read(learner) if learner is not None else {}

    def _read(self, learner: FeedbackLearner) -> Reading:
        """:func:`read`, once more if it met a structure in mid-update."""
        try:
            reading = read(learner)
        except Exception:  # e.g. "deque mutated during iteration" on the consumer thread
            reading = read(learner)
        self._last_good = reading
        return reading

    def _counters(self, now: Reading) -> Reading:
        """Counter values since the start of the process: carried + (now - baseline)."""
        out: Reading = {}
        zeros = initial()
        for family in FAMILIES:
            if not family.counter:
                continue
            carried = self._carried.get(family.name, {})
            base = self._baseline.get(family.name, {})
            series = dict(zeros[family.name])
            series.update(carried)
            for key, value in now.get(family.name, {}).items():
                series[key] = carried.get(key, 0.0) + max(value - base.get(key, 0.0), 0.0)
            out[family.name] = series
        return out

    def reading(self) -> Reading:
        """What a scrape exposes now: counters since the process started, gauges as they are."""
        with self._lock:
            learner = self._getter() if self._getter is not None else None
            if learner is not self._bound:
                # Replaced without track(): count from what the new learner has now.
                self._rebind(learner)
            now = self._read(learner) if learner is not None else initial()
            return {**now, **self._counters(now)}

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (what the registry checks names with)."""
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        try:
            reading = self.reading()
        except Exception:  # a scrape never fails: the last good numbers, else zeros
            log.warning("metrics: reading the learner failed", exc_info=True)
            with self._lock:
                last = self._last_good or initial()
                reading = {**last, **self._counters(last)}
        return self._families(reading)

    def _families(self, reading: Reading) -> Iterator[Metric]:
        for f in FAMILIES:
            name, labels = f"{PREFIX}_{f.name}", list(f.labels)
            series = sorted(reading.get(f.name, {}).items())
            if f.counter:
                counter = CounterMetricFamily(name, f.help, labels=labels)
                for key, value in series:
                    counter.add_metric(list(key), value, created=self._created)
                yield counter
            else:
                gauge = GaugeMetricFamily(name, f.help, labels=labels)
                for key, value in series:
                    gauge.add_metric(list(key), value)
                yield gauge
