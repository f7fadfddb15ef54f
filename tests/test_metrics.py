"""The consumer's and the retrainer's metrics without a Prometheus server: names, units and
labels, and the consumer's counters read from the learner at scrape time (tests/
test_prometheus.py has a real Prometheus scrape them)."""

from __future__ import annotations

import re
from collections import Counter
from types import SimpleNamespace
from typing import Any

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
