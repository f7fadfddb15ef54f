"""The consumer's and the retrainer's metrics without a Prometheus server: names, units and
labels, and the consumer's counters read from the learner at scrape time (tests/
test_prometheus.py has a real Prometheus scrape them)."""

from __future__ import annotations

import re
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest

from stream.events import EVENT_TYPES
from stream.learner import Counts
from stream.observability.collector import FAMILIES, PREFIX
from stream.observability.metrics import PipelineMetrics, RetrainMetrics

UNBOUNDED_LABELS = {"user", "user_id", "item", "item_id", "event_id", "session_id", "id", "ts"}
NON_BASE_UNITS = re.compile(r"_(milli|micro|nano)seconds|_(ms|us|minutes?|hours?|kb|mb)(_|$)")


def test_metric_hygiene() -> None:
    """Names, help texts, units and labels of every metric."""
    from prometheus_client.metrics import MetricWrapperBase

    registries = (PipelineMetrics(), RetrainMetrics())
    wrappers = [v for m in registries for v in vars(m).values() if isinstance(v, MetricWrapperBase)]
    families = {f.name: f for m in registries for f in m.registry.collect()}
    assert len(families) >= 25
    for family in families.values():
        name = family.name
        assert name.startswith("feedback_loop_"), name
        assert family.documentation.strip() and family.documentation != name, name
        assert not NON_BASE_UNITS.search(name), f"{name}: use base units (_seconds)"
        if family.type == "histogram" or re.search(r"latency|duration|_time", name):
            assert name.endswith(("_seconds", "_bytes", "_messages")), f"{name}: unit suffix"
        if "lag" in name:
            assert name.endswith("_messages"), name
    labels = {(w._name, n) for w in wrappers for n in w._labelnames}
    labels |= {(f"{PREFIX}_{f.name}", n) for f in FAMILIES for n in f.labels}
    labels |= {(f.name, n) for f in families.values() for s in f.samples for n in s.labels}
    assert ("feedback_loop_drift_signals", "outcome") in labels  # read at scrape time
    assert ("feedback_loop_consumer_lag_messages", "partition") in labels  # an instrument
    unbounded = sorted((m, n) for m, n in labels if n in UNBOUNDED_LABELS)
    assert not unbounded, f"unbounded labels (ids): {unbounded}"


def fake_learner(applied: int = 0, swaps: int = 0) -> SimpleNamespace:
    """What the metrics read of a learner: counts, scores, drift monitor, lifecycle."""
    rows = [{"name": "adwin", "statistic": 0.1, "threshold": 0.5, "in_drift": False, "n_alarms": 0}]
    life = SimpleNamespace(
        version=0,
        retrains=[],
        swaps=[{}] * swaps,
        monitor=SimpleNamespace(snapshot=lambda: [dict(r) for r in rows]),
        policy=SimpleNamespace(outcomes=Counter()),
        control_rejected={},
        requests_expired=0,
    )
    counts = Counts(consumed=applied, applied=applied, consumed_by_type={"click": applied})
    return SimpleNamespace(counts=counts, lifecycle=life, scores=lambda: {"auc": 0.7})


def test_counters_count_this_process_across_restarts() -> None:
    """A restored learner's counts are not this process's; a restart (a new learner restored
    from the checkpoint) keeps what the previous one counted."""
    m = PipelineMetrics()
    sample = m.registry.get_sample_value
    for t in (*EVENT_TYPES, "invalid"):
        assert sample("feedback_loop_events_consumed_total", {"type": t}) == 0, t
    assert sample("feedback_loop_events_filtered_total", {"reason": "bot"}) == 0
    first = fake_learner(applied=100, swaps=1)  # restored: 100 applied, 1 swap before
    consumer = SimpleNamespace(learner=first)
    m.track(lambda: consumer.learner)
    assert sample("feedback_loop_events_applied_total") == 0
    assert sample("feedback_loop_model_swaps_total") == 0
    first.counts.applied = 150
    first.counts.consumed_by_type["click"] = 150
    assert sample("feedback_loop_events_applied_total") == 50
    # A crash: the next consumer restores the checkpoint (120 applied) and binds again.
    restarted = SimpleNamespace(learner=fake_learner(applied=120))
    m.track(lambda: restarted.learner)
    restarted.learner.counts.applied = 130
    assert sample("feedback_loop_events_applied_total") == 60
    assert sample("feedback_loop_events_consumed_total", {"type": "click"}) == 50
    # Swapped in between two batches: the next scrape shows it, nobody has to call anything.
    life = restarted.learner.lifecycle
    life.swaps.append({"model_version": 3})
    life.version = 3
    life.policy.outcomes[("adwin", "decided")] += 1
    assert sample("feedback_loop_model_swaps_total") == 1
    assert sample("feedback_loop_model_version") == 3
    assert (
        sample("feedback_loop_drift_signals_total", {"detector": "adwin", "outcome": "decided"})
        == 1
    )
    assert sample("feedback_loop_prequential_auc", {"model": "engagement"}) == 0.7


def test_counters_sum_the_partitions_learners_across_rebalances() -> None:
    """Counters are the sum over the learners, each from when it was first seen, and never go
    back when a partition leaves or the lowest one changes; scores are weighted by events,
    lifecycle numbers are the lowest partition's."""
    m = PipelineMetrics()
    sample = m.registry.get_sample_value
    p0, p1 = fake_learner(applied=10, swaps=1), fake_learner(applied=0)
    p1.scores = lambda: {"auc": 0.9}
    held = {0: p0, 1: p1}
    m.track(lambda: dict(held))
    p0.counts.applied, p1.counts.applied = 40, 90  # 30 and 90 applied here
    p1.counts.filtered_by_reason["bot"] = 4
    assert sample("feedback_loop_events_applied_total") == 120
    assert sample("feedback_loop_events_filtered_total", {"reason": "bot"}) == 4
    assert sample("feedback_loop_prequential_auc", {"model": "engagement"}) == (
        pytest.approx((0.7 * 40 + 0.9 * 90) / 130)
    )
    p0.lifecycle.swaps.append({})
    assert sample("feedback_loop_model_swaps_total") == 1  # the lowest partition's
    p1.lifecycle.swaps.append({})
    assert sample("feedback_loop_model_swaps_total") == 1
    # Partition 0 is revoked (after 5 more events) and partition 2 assigned with a checkpoint.
    p0.counts.applied = 45
    p2 = fake_learner(applied=500)
    del held[0]
    held[2] = p2
    assert sample("feedback_loop_events_applied_total") == 125
    assert sample("feedback_loop_model_swaps_total") == 1  # partition 1 counts from now
    p2.counts.applied, p1.counts.applied = 510, 95
    p1.lifecycle.swaps.append({})
    assert sample("feedback_loop_events_applied_total") == 140
    assert sample("feedback_loop_model_swaps_total") == 2
    # Partition 0 comes back restored from another consumer's checkpoint.
    held[0] = fake_learner(applied=300)
    assert sample("feedback_loop_events_applied_total") == 140
    held.clear()  # everything revoked: the counters stay
    assert sample("feedback_loop_events_applied_total") == 140


def test_a_scrape_never_fails() -> None:
    """A read that meets a structure in mid-update (on the consumer's thread) gives the last
    good numbers instead of a failed scrape."""
    m = PipelineMetrics()
    learner = fake_learner(applied=10)
    m.track(lambda: learner)
    learner.counts.applied = 15
    assert m.registry.get_sample_value("feedback_loop_events_applied_total") == 5

    def mid_update() -> list[dict[str, Any]]:
        raise RuntimeError("deque mutated during iteration")

    learner.lifecycle.monitor.snapshot = mid_update
    learner.counts.applied = 20
    exposition = generate_latest(m.registry).decode()
    assert "feedback_loop_events_applied_total 5.0" in exposition  # the last good reading
    assert 'feedback_loop_drift_statistic{detector="adwin"} 0.1' in exposition
