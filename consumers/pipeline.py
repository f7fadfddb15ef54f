"""Run a producer and the consumer together in one process, and write the JSON report.

Used by ``feedback-loop demo`` (simulated events) and ``feedback-loop replay`` on the
embedded broker (file events): a background thread publishes the records while the main
thread consumes them; once every record is acknowledged by the broker, the consumer is told
the end offsets from the delivery reports and stops when it has applied them all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from consumers.loop import FeedbackConsumer, RunResult
from stream.config import Settings
from stream.kafka.publisher import DeliveryStats, EventPublisher, Record
from stream.learner import FeedbackLearner
from stream.observability.metrics import PipelineMetrics

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    run: RunResult
    published: DeliveryStats
    publish_seconds: float
    interrupted: bool


class _PublisherThread(threading.Thread):
    def __init__(
        self,
        publisher: EventPublisher,
        records: Iterable[Record],
        consumer: FeedbackConsumer,
        rate: float | None = None,
    ) -> None:
        super().__init__(name="publisher", daemon=True)
        self.publisher, self.records, self.consumer = publisher, records, consumer
        self.rate = rate
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.perf_counter()
        try:
            publish, rate = self.publisher.publish, self.rate
            for i, record in enumerate(self.records, 1):
                if self.stop.is_set():
                    break
                publish(record)
                if rate and i % 500 == 0:  # pace: at most `rate` records per second
                    ahead = started + i / rate - time.perf_counter()
                    if ahead > 0:
                        self.stop.wait(ahead)
            stats = self.publisher.flush()
            self.seconds = time.perf_counter() - started
            if stats.failed or stats.pending:
                log.error("%d events not delivered: %s", stats.failed, stats.errors[:3])
            self.consumer.stop_at(stats.end_offsets)
        except BaseException as err:  # surfaced by run_pipeline
            self.error = err
            self.consumer.request_stop()


def run_pipeline(
    settings: Settings,
    bootstrap_servers: str,
    records: Iterable[Record],
    metrics: PipelineMetrics | None = None,
    on_batch: Callable[[FeedbackLearner], None] | None = None,
    install_stop: Callable[[Callable[[], None]], None] | None = None,
    wait_for_retrains: bool = False,
    rate: float | None = None,
) -> PipelineResult:
    """Publish ``records`` and consume them until every one is applied (or stop is asked).

    With ``wait_for_retrains`` (a retrainer is running), an outstanding retrain request is
    answered, and its model swapped in, before the consumer stops. ``rate`` paces the
    publisher (records per second), as a live stream would arrive.
    """
    consumer = FeedbackConsumer(settings, bootstrap_servers, metrics=metrics, on_batch=on_batch)
    consumer.wait_for_retrains = wait_for_retrains
    publisher = EventPublisher(bootstrap_servers, settings.topics.events, kafka=settings.kafka)
    thread = _PublisherThread(publisher, records, consumer, rate)
    interrupted = threading.Event()

    def stop() -> None:
        interrupted.set()
        thread.stop.set()
        consumer.request_stop()

    if install_stop is not None:
        install_stop(stop)
    thread.start()
    result = consumer.run()
    thread.stop.set()
    thread.join(timeout=60)
    if thread.error is not None:
        raise RuntimeError(f"publishing failed: {thread.error}") from thread.error
    return PipelineResult(result, publisher.stats, thread.seconds, interrupted.is_set())


def build_report(
    learner: FeedbackLearner,
    events_per_second: float,
    config: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The JSON summary shared by demo, replay/consume and evaluate."""
    summary = learner.summary()
    report = {
        key: summary[key]
        for key in (
            "consumed",
            "applied",
            "dead_lettered",
            "filtered",
            "duplicates",
            "rmse",
            "mae",
            "logloss",
            "auc",
            "recall_at_10",
        )
    }
    report["events_per_second"] = round(events_per_second, 1)
    report["config"] = config
    report["reconciles"] = learner.counts.reconciles()
    report["baseline"] = summary["baseline"]
    report["consumed_by_type"] = summary["consumed_by_type"]
    report["dead_letters_by_kind"] = summary["dead_letters_by_kind"]
    report["filtered_by_reason"] = summary["filtered_by_reason"]
    for key in ("drift_alarms", "retrains", "swaps", "model_version", "policy_outcomes"):
        report[key] = summary[key]
    report.update(extra)
    return report


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
