"""Prometheus metrics of a consumer process.

Counters are synced from the learner's own counts once per batch (not per event), so the hot
path pays nothing for them. Labels are bounded: event types, dead-letter kinds, filter
reasons, model names, partitions; never user or item ids.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> m = PipelineMetrics(CollectorRegistry())
>>> m.observe_batch(0.01, 100, 0.2)
>>> b"feedback_loop_batch_processing_seconds_count 1.0" in generate_latest(m.registry)
True
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from stream.events import EVENT_TYPES

if TYPE_CHECKING:
    from stream.learner import Counts, FeedbackLearner

PREFIX = "feedback_loop"
DEAD_LETTER_KINDS = (
    "malformed_json",
    "unknown_type",
    "invalid_event",
    "unknown_user",
    "unknown_item",
)


class RetrainMetrics:
    """Metrics of a retrainer process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.retrains = Counter(
            f"{PREFIX}_retrains", "Retrains finished, by outcome (accepted, rejected, failed).",
            ["outcome"], registry=r,
        )
        for outcome in ("accepted", "rejected", "failed"):
            self.retrains.labels(outcome)
        self.duration = Histogram(
            f"{PREFIX}_retrain_duration_seconds", "Wall time of one retrain, history included.",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800), registry=r,
        )
        self.trials = Counter(
            f"{PREFIX}_retrain_trials", "Hyperparameter-search trials run.", registry=r
        )
        self.trial_score = Gauge(
            f"{PREFIX}_retrain_trial_quality_ratio",
            "Validation quality loss of the last trial (model loss / naive loss; lower is better).",
            registry=r,
        )
        self.best_score = Gauge(
            f"{PREFIX}_retrain_best_quality_ratio",
            "Best validation quality loss of the last retrain (model loss / naive loss).",
            registry=r,
        )
        self.in_progress = Gauge(
            f"{PREFIX}_retrain_in_progress", "1 while a retrain is running.", registry=r
        )

    def serve(self, host: str, port: int) -> int:
        return serve(self.registry, host, port)


class PipelineMetrics:
    """All metrics of one consumer process, on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            f"{PREFIX}_events_consumed", "Messages consumed, by declared event type.",
            ["type"], registry=r,
        )
        self.applied = Counter(
            f"{PREFIX}_events_applied", "Events applied to the models.", registry=r
        )
        self.dead_lettered = Counter(
            f"{PREFIX}_events_dead_lettered",
            "Messages sent to the dead-letter topic, by kind of error.", ["kind"], registry=r,
        )
        self.filtered = Counter(
            f"{PREFIX}_events_filtered", "Events filtered out, by reason.", ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            f"{PREFIX}_events_duplicate", "Events skipped as duplicates of an event_id.",
            registry=r,
        )
        self.batch_seconds = Histogram(
            f"{PREFIX}_batch_processing_seconds",
            "Wall time to decode, apply and dead-letter one consumed batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.event_latency = Histogram(
            f"{PREFIX}_event_latency_seconds",
            "Time from the broker timestamp of the last message of a batch to its application.",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.lag = Gauge(
            f"{PREFIX}_consumer_lag_messages",
            "Messages in the partition not yet consumed (high watermark - position).",
            ["partition"], registry=r,
        )
        self.checkpoints = Counter(
            f"{PREFIX}_checkpoints", "Checkpoints written (model state + offsets).",
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            f"{PREFIX}_checkpoint_seconds", "Wall time to write one checkpoint.", registry=r
        )
        self.rmse = Gauge(
            f"{PREFIX}_prequential_rmse", "Prequential RMSE of rating predictions.",
            ["model"], registry=r,
        )
        self.mae = Gauge(
            f"{PREFIX}_prequential_mae", "Prequential MAE of rating predictions.",
            ["model"], registry=r,
        )
        self.logloss = Gauge(
            f"{PREFIX}_prequential_logloss", "Prequential log loss of click predictions.",
            ["model"], registry=r,
        )
        self.auc = Gauge(
            f"{PREFIX}_prequential_auc", "Prequential ROC AUC of click predictions.",
            ["model"], registry=r,
        )
        self.recall = Gauge(
            f"{PREFIX}_prequential_recall_at_10",
            "Share of positive implicit events whose item was in the top 10 before learning.",
            ["model"], registry=r,
        )
        self.drift_statistic = Gauge(
            f"{PREFIX}_drift_statistic",
            "Current statistic of each drift detector (compare with its threshold).",
            ["detector"], registry=r,
        )
        self.drift_threshold = Gauge(
            f"{PREFIX}_drift_threshold", "Alarm threshold of each drift detector.",
            ["detector"], registry=r,
        )
        self.drift_state = Gauge(
            f"{PREFIX}_drift_state",
            "1 while a drift detector is in alarm (since its last reset), else 0.",
            ["detector"], registry=r,
        )
        self.drift_alarms = Counter(
            f"{PREFIX}_drift_alarms", "Alarms raised by each drift detector.", ["detector"],
            registry=r,
        )
        self.drift_signals = Counter(
            f"{PREFIX}_drift_signals",
            "Drift signals by what the retrain policy did with them (decided or why ignored).",
            ["detector", "outcome"], registry=r,
        )
        self.retrain_requests = Counter(
            f"{PREFIX}_retrain_requests", "Retrain requests published by this consumer.",
            registry=r,
        )
        self.swaps = Counter(
            f"{PREFIX}_model_swaps", "Batch-trained models swapped into this consumer.",
            registry=r,
        )
        self.model_version = Gauge(
            f"{PREFIX}_model_version",
            "Registry version of the live models (0: learned online from scratch).",
            registry=r,
        )
        self._last: Counts | None = None
        self._last_life: tuple[int, int, dict[str, int], Any] = (0, 0, {}, None)
        # Every bounded label value exists from the start, so rates and alerts see zeros.
        for t in (*EVENT_TYPES, "invalid"):
            self.consumed.labels(t)
        for kind in DEAD_LETTER_KINDS:
            self.dead_lettered.labels(kind)
        self.filtered.labels("bot")

    def observe(self, learner: FeedbackLearner) -> None:
        """Bring counters and quality gauges up to date with the learner."""
        from stream.learner import Counts

        now, last = learner.counts, self._last or Counts()
        for t, n in now.consumed_by_type.items():
            if n > last.consumed_by_type.get(t, 0):
                self.consumed.labels(t).inc(n - last.consumed_by_type.get(t, 0))
        for k, n in now.dead_letters_by_kind.items():
            if n > last.dead_letters_by_kind.get(k, 0):
                self.dead_lettered.labels(k).inc(n - last.dead_letters_by_kind.get(k, 0))
        for k, n in now.filtered_by_reason.items():
            if n > last.filtered_by_reason.get(k, 0):
                self.filtered.labels(k).inc(n - last.filtered_by_reason.get(k, 0))
        self.applied.inc(now.applied - last.applied)
        self.duplicates.inc(now.duplicates - last.duplicates)
        self._last = copy.deepcopy(now)
        self._observe_lifecycle(learner)
        scores = learner.scores()
        for gauge, key, model in (
            (self.rmse, "rmse", "rating_mf"),
            (self.mae, "mae", "rating_mf"),
            (self.logloss, "logloss", "engagement"),
            (self.auc, "auc", "engagement"),
            (self.recall, "recall_at_10", "implicit_mf"),
        ):
            value = scores[key]
            if value is not None:
                gauge.labels(model).set(value)

    def _observe_lifecycle(self, learner: FeedbackLearner) -> None:
        life = learner.lifecycle
        n_req, n_swaps, alarms, outcomes = self._last_life
        alarms = dict(alarms)
        if life.monitor is not None:
            for row in life.monitor.snapshot():
                name = row["name"]
                self.drift_statistic.labels(name).set(row["statistic"])
                self.drift_threshold.labels(name).set(row["threshold"])
                self.drift_state.labels(name).set(1.0 if row["in_drift"] else 0.0)
                new = row["n_alarms"] - alarms.get(name, 0)  # n_alarms survives resets
                if new > 0:
                    self.drift_alarms.labels(name).inc(new)
                alarms[name] = row["n_alarms"]
        previous = outcomes or {}
        for key, n in life.policy.outcomes.items():
            if n > previous.get(key, 0):
                self.drift_signals.labels(*key).inc(n - previous.get(key, 0))
        self.retrain_requests.inc(max(len(life.retrains) - n_req, 0))
        self.swaps.inc(max(len(life.swaps) - n_swaps, 0))
        self.model_version.set(life.version)
        self._last_life = _life_baseline(life, alarms)

    def start_from(self, learner: FeedbackLearner) -> None:
        """Count only what happens from now on (after restoring a checkpoint)."""
        self._last = copy.deepcopy(learner.counts)
        life = learner.lifecycle
        rows = life.monitor.snapshot() if life.monitor is not None else []
        self._last_life = _life_baseline(life, {r["name"]: r["n_alarms"] for r in rows})

    def observe_batch(self, seconds: float, messages: int, latency: float | None) -> None:
        self.batch_seconds.observe(seconds)
        if latency is not None and messages:
            self.event_latency.observe(max(latency, 0.0))

    def serve(self, host: str, port: int) -> int:
        return serve(self.registry, host, port)


def _life_baseline(life: Any, alarms: dict[str, int]) -> tuple[int, int, dict[str, int], Any]:
    """What the lifecycle counters stood at: requests, swaps, alarms, policy outcomes."""
    return (len(life.retrains), len(life.swaps), alarms, dict(life.policy.outcomes))


def serve(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serve ``/metrics`` of ``registry`` on ``host:port`` (0 = any free port); return the port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
