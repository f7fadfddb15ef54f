"""Every item delta's delivery report is counted: delivered ones, and failed ones (logged).

A delta the broker never takes is lost to the other consumers' learners, so it must show in
the exchange's counts, the ``feedback_loop_item_deltas_total`` metric and the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.item_exchange import ItemExchange
from producers.simulator import SimulatorConfig, split_by_user
from stream.config import KafkaConfig, Settings
from stream.kafka.broker import ensure_topics
from stream.learner import FeedbackLearner
from stream.observability.metrics import PipelineMetrics
from tests.helpers import isolated_settings, read_topic

CFG = SimulatorConfig(n_users=60, n_items=30, seed=5)


def learners_with_deltas(settings: Settings, parts: int) -> dict[int, FeedbackLearner]:
    """One learner per part of a short stream, each sharing items (so each has a delta)."""
    learners = {p: FeedbackLearner(settings) for p in range(parts)}
    for (p, learner), events in zip(learners.items(), split_by_user(CFG, 300, parts), strict=True):
        learner.share_items(p, 1.0 / parts)
        for e in events:
            learner.apply(e)
    return learners


def deltas(metrics: PipelineMetrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "feedback_loop_item_deltas_total", {"outcome": outcome}
    )
    return value or 0.0


def test_a_delta_the_broker_never_takes_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No broker at this address: librdkafka reports the delta failed once its delivery
    # timeout passes (a short one here).
    settings = Settings(kafka=KafkaConfig(extra={"message.timeout.ms": 500}))
    metrics = PipelineMetrics(CollectorRegistry())
    exchange = ItemExchange(settings, "127.0.0.1:1", 2, metrics)
    exchange.exchange(learners_with_deltas(settings, 2))
    assert exchange.sent == 2
    with caplog.at_level(logging.WARNING, logger="consumers.item_exchange"):
        assert exchange.flush(30) == 0  # every report arrived: both failed
        exchange.close()
    assert exchange.stats.failed == 2 and exchange.stats.delivered == 0
    assert exchange.stats.errors and "timed out" in exchange.stats.errors[0].lower()
    assert deltas(metrics, "failed") == 2 and deltas(metrics, "delivered") == 0
    logged = [r for r in caplog.records if r.name == "consumers.item_exchange"]
    errors = [r.getMessage() for r in logged if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("item delta not delivered" in m for m in errors)
    (summary,) = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
    assert "2 sent, 0 delivered, 2 failed" in summary  # once: close adds nothing new


@pytest.mark.integration
def test_delivered_deltas_are_counted_after_flush(bootstrap: str, tmp_path: Path) -> None:
    settings = isolated_settings(bootstrap, tmp_path / "state")
    ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
    metrics = PipelineMetrics(CollectorRegistry())
    exchange = ItemExchange(settings, bootstrap, 3, metrics)
    try:
        exchange.exchange(learners_with_deltas(settings, 3))
        assert exchange.flush(60) == 0
    finally:
        exchange.close()
    assert exchange.sent == exchange.stats.delivered == 3 and exchange.stats.failed == 0
    assert deltas(metrics, "delivered") == 3 and deltas(metrics, "failed") == 0
    on_topic = read_topic(settings, settings.topics.item_updates)
    prefix = exchange.state_id.encode() + b":"
    assert sorted(m.key() or b"" for m in on_topic) == [prefix + b"0", prefix + b"1", prefix + b"2"]


@pytest.mark.integration
def test_only_deltas_of_the_same_state_dir_are_applied(bootstrap: str, tmp_path: Path) -> None:
    """A group started afresh (a new state dir) on the same item-updates topic skips the old
    run's deltas: it learns those events itself. Consumers sharing a state dir apply them."""
    settings = isolated_settings(bootstrap, tmp_path / "state")
    ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
    first = ItemExchange(settings, bootstrap, 2)
    try:
        first.exchange(learners_with_deltas(settings, 2))
        assert first.flush(60) == 0
    finally:
        first.close()
    fresh = settings.model_copy(
        update={"consumer": settings.consumer.model_copy(update={"state_dir": tmp_path / "new"})}
    )
    for run, expect_applied in ((fresh, 0), (settings, 2)):
        exchange = ItemExchange(run, bootstrap, 2)
        learner = FeedbackLearner(run)
        try:
            exchange.adopt(learner, 5, restored=False)  # a partition the first run had not
            exchange.settle({5: learner})
        finally:
            exchange.close()
        assert exchange.position == 2  # read to the end either way
        assert exchange.applied == expect_applied
        assert exchange.foreign == 2 - expect_applied
        assert (exchange.state_id == first.state_id) == (run is settings)
