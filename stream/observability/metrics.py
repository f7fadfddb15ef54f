"""Prometheus metrics of a consumer process and of a retrainer process.

What the learner counts is read from it when Prometheus scrapes (stream/observability/
collector.py), so the hot path pays nothing for it; the consumer only times batches and
checkpoints and sets the lag. Labels are bounded: event types, dead-letter kinds, filter
reasons, model names, detectors, partitions; never user or item ids.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> m = PipelineMetrics(CollectorRegistry())
>>> m.observe_batch(0.01, 100, 0.2)
>>> b"feedback_loop_batch_processing_seconds_count 1.0" in generate_latest(m.registry)
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from stream.observability.collector import PREFIX, LearnerCollector

if TYPE_CHECKING:
    from stream.learner import FeedbackLearner


class RetrainMetrics:
    """Metrics of a retrainer process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.retrains = Counter(
            f"{PREFIX}_retrains",
            "Retrains finished, by outcome (accepted, rejected, failed).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("accepted", "rejected", "failed"):
            self.retrains.labels(outcome)
        self.duration = Histogram(
            f"{PREFIX}_retrain_duration_seconds",
            "Wall time of one retrain, history included.",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
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
    """All metrics of one consumer process, on their own registry.

    Timings, checkpoints and lag are instruments the consumer updates; everything the learner
    counts is read from it at scrape time by a :class:`LearnerCollector` (see :meth:`track`).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.collector = LearnerCollector()
        r.register(self.collector)
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
            ["partition"],
            registry=r,
        )
        self.checkpoints = Counter(
            f"{PREFIX}_checkpoints",
            "Checkpoints written (model state + offsets).",
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            f"{PREFIX}_checkpoint_seconds", "Wall time to write one checkpoint.", registry=r
        )
        self.log_truncations = Counter(
            f"{PREFIX}_log_truncations",
            "Times a partition's log was found shorter than the consumer's saved position.",
            ["partition"],
            registry=r,
        )
        self.broker_up = Gauge(
            f"{PREFIX}_broker_up", "1 while a Kafka broker is reachable, else 0.", registry=r
        )
        self.broker_up.set(1)
        self.broker_errors = Counter(
            f"{PREFIX}_broker_errors",
            "Errors the Kafka clients of the consumer reported (connection failures, ...).",
            registry=r,
        )
        self._broker_errors_seen = 0
        self.item_deltas = Counter(
            f"{PREFIX}_item_deltas",
            "Item deltas sent to the other partitions' learners, by the broker's answer "
            "(delivered, failed).",
            ["outcome"],
            registry=r,
        )

    def observe_broker(self, up: bool, errors: int) -> None:
        """The clients' health: reachable or not, and the errors they reported so far."""
        self.broker_up.set(1 if up else 0)
        if errors > self._broker_errors_seen:
            self.broker_errors.inc(errors - self._broker_errors_seen)
            self._broker_errors_seen = errors

    def track(
        self, learners: Callable[[], FeedbackLearner | Mapping[int, FeedbackLearner] | None]
    ) -> None:
        """Expose the counts, scores and lifecycle of ``learners()`` (one learner, or the
        learners by partition), read at every scrape (see :mod:`stream.observability.collector`).

        Each learner counts from when it is first seen (a restored learner's earlier counts
        are not this process's); call it again when the learners change: what the previous
        ones counted is kept.
        """
        self.collector.track(learners)

    def observe_batch(self, seconds: float, messages: int, latency: float | None) -> None:
        self.batch_seconds.observe(seconds)
        if latency is not None and messages:
            self.event_latency.observe(max(latency, 0.0))

    def serve(self, host: str, port: int) -> int:
        return serve(self.registry, host, port)


def serve(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serve ``/metrics`` of ``registry`` on ``host:port`` (0 = any free port); return the port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
