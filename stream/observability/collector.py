"""The consumer's counts, scores and lifecycle, read from its learners when Prometheus scrapes.

The learners already count everything (``learner.counts``, ``learner.scores()``, the drift
monitor, the retrain policy, the lifecycle's requests and swaps), so nothing is mirrored on the
hot path: :class:`LearnerCollector` reads those numbers at scrape time, on the HTTP server's
thread, from every learner the consumer holds (one per assigned partition). Names and labels
are the same whatever the number of partitions, so dashboards sum across processes as before:

- counters of events and users (consumed, applied, dead-lettered, filtered, duplicates,
  evictions) are the sum over the learners. Each learner counts from what it had when it was
  first seen (a checkpoint restored on assignment or restart is not this process's work), and
  what a learner counted stays counted after it leaves (a revoked partition), so counters only
  go up across rebalances;
- lifecycle counters (drift alarms and signals, retrain requests, swaps, rejected control
  messages, forgotten users) are the lowest partition's learner's: its lifecycle is the one
  the control acts on, and a forget is mirrored into every learner. When the lowest partition
  changes, the new one counts from then;
- gauges: users held is the sum; each prequential score is the mean of the learners' scores
  weighted by the events each applied; drift statistics, thresholds, states and the model
  version are the lowest partition's learner's.

Every bounded label value exists from the start, so rates and alerts see zeros.

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
>>> other = learner(Counts(applied=5))  # a second partition assigned, restored with 5
>>> collector.track(lambda: {0: live, 1: other})
>>> other.counts.applied = 8
>>> registry.get_sample_value("feedback_loop_events_applied_total")
13.0
>>> collector.track(lambda: {1: other})  # partition 0 revoked: what it counted stays
>>> registry.get_sample_value("feedback_loop_events_applied_total")
13.0
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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


# Counters only the lowest partition's learner moves: its lifecycle decides retrains and
# takes swaps and control messages for the process, and a forget is counted by every
# learner it is mirrored to. Every other counter is summed over the learners.
LEAD_COUNTERS = frozenset(
    {
        "drift_alarms",
        "drift_signals",
        "retrain_requests",
        "retrain_requests_expired",
        "model_swaps",
        "control_rejected",
        "users_forgotten",
    }
)
SUMMED_COUNTERS = frozenset(f.name for f in FAMILIES if f.counter) - LEAD_COUNTERS
# Gauges summed over the learners (the others are the lead's, or scores, see _gauges).
SUMMED_GAUGES = frozenset({"users_held"})


class Tally:
    """Counters of some families over a changing set of learners.

    A learner counts from its reading when it joined (a restored checkpoint's counts are
    not this process's work); when it leaves (revoked, replaced by a restart's learner),
    what it counted is carried, so the sum never goes back.
    """

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self._members: dict[int, tuple[FeedbackLearner, Reading]] = {}  # id -> (it, baseline)
        self._carried: Reading = {}

    def rebind(
        self,
        learners: list[FeedbackLearner],
        readings: dict[int, Reading],
        read: Callable[[FeedbackLearner], Reading],
    ) -> None:
        """Make ``learners`` (read as ``readings``, by id) the members."""
        for key in [k for k in self._members if k not in readings]:
            learner, base = self._members[key]
            final = read(learner)  # before dropping it: a failed read is retried next time
            self._carried = self._add(self._carried, final, base)
            del self._members[key]
        for learner in learners:
            self._members.setdefault(id(learner), (learner, readings[id(learner)]))

    def counters(self, readings: dict[int, Reading]) -> Reading:
        """Carried + each member's (now - baseline), every bounded label value included."""
        out = self._carried
        for key, (_learner, base) in self._members.items():
            out = self._add(out, readings[key], base)
        return out

    def _add(self, total: Reading, now: Reading, base: Reading) -> Reading:
        zeros = initial()
        out: Reading = {}
        for name in self.names:
            series = dict(zeros[name])
            series.update(total.get(name, {}))
            before = base.get(name, {})
            for key, value in now.get(name, {}).items():
                series[key] = series.get(key, 0.0) + max(value - before.get(key, 0.0), 0.0)
            out[name] = series
        return out


def _gauges(readings: list[Reading]) -> Reading:
    """Gauges of the learners: users held summed; each prequential score the mean of the
    learners' weighted by the events they applied (so it is the process's score over its
    traffic); drift and model version the lowest partition's (its lifecycle decides)."""
    lead = readings[0]
    out: Reading = {f.name: dict(lead[f.name]) for f in FAMILIES if not f.counter}
    for name in SUMMED_GAUGES:
        out[name] = {(): sum(r[name].get((), 0.0) for r in readings)}
    for family, _key, model in SCORES:
        scored = [
            (r[family][(model,)], r["events_applied"].get((), 0.0))
            for r in readings
            if (model,) in r[family]
        ]
        if scored:
            weight = sum(w for _, w in scored)
            mean = (
                sum(v * w for v, w in scored) / weight
                if weight > 0
                else sum(v for v, _ in scored) / len(scored)
            )
            out[family] = {(model,): mean}
    return out


def _members(
    tracked: FeedbackLearner | Mapping[int, FeedbackLearner] | None,
) -> list[FeedbackLearner]:
    """The learners a getter returned, lowest partition first."""
    if tracked is None:
        return []
    if isinstance(tracked, Mapping):
        return [tracked[p] for p in sorted(tracked)]
    return [tracked]


class LearnerCollector(Collector):
    """Reads the learners returned by a getter at every scrape (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # track() on the consumer thread, collect() on scrapes
        self._getter: Callable[[], FeedbackLearner | Mapping[int, FeedbackLearner] | None]
        self._getter = lambda: None
        self._summed = Tally(SUMMED_COUNTERS)
        self._lead = Tally(LEAD_COUNTERS)
        self._last_good: Reading | None = None
        self._created = time.time()

    def track(
        self, learners: Callable[[], FeedbackLearner | Mapping[int, FeedbackLearner] | None]
    ) -> None:
        """Expose what ``learners()`` returns from now on (one learner, or the learners by
        partition), each counting from what it has when first seen.

        A getter rather than the objects: a swap replaces the learner's models, a rebalance
        the partitions, and a restart the learners themselves. Call it again right after
        the learners change (restored from a checkpoint, assigned, revoked); what the
        previous ones counted is kept.
        """
        with self._lock:
            self._getter = learners
            self._reading()

    def _read(self, learner: FeedbackLearner) -> Reading:
        """:func:`read`, once more if it met a structure in mid-update."""
        try:
            return read(learner)
        except Exception:  # e.g. "deque mutated during iteration" on the consumer thread
            return read(learner)

    def _reading(self) -> Reading:
        learners = _members(self._getter())
        readings = {id(lr): self._read(lr) for lr in learners}
        # Learners that appeared since the last scrape count from what they have now.
        self._summed.rebind(learners, readings, self._read)
        self._lead.rebind(learners[:1], readings, self._read)
        now = [readings[id(lr)] for lr in learners]
        gauges = _gauges(now) if now else initial()
        reading = {
            **initial(),
            **gauges,
            **self._summed.counters(readings),
            **self._lead.counters(readings),
        }
        self._last_good = reading
        return reading

    def reading(self) -> Reading:
        """What a scrape exposes now: counters since the process started, gauges as they are."""
        with self._lock:
            return self._reading()

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (what the registry checks names with)."""
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        try:
            reading = self.reading()
        except Exception:  # a scrape never fails: the last good numbers, else zeros
            log.warning("metrics: reading the learner failed", exc_info=True)
            with self._lock:
                reading = self._last_good or initial()
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
