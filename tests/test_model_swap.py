"""Hot swap, rollback and the manual trigger, through the real control topic and registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from producers.simulator import Simulator, SimulatorConfig
from stream.config import RetrainConfig, Settings
from stream.events import ModelActivated, RetrainRequest, RetrainTrigger
from stream.kafka.control import ControlReader, publish_control
from stream.kafka.publisher import EventPublisher
from stream.lifecycle import ModelRegistry
from stream.models import ModelBundle
from stream.observability.metrics import PipelineMetrics
from tests.helpers import child_env

pytestmark = pytest.mark.integration


def with_registry(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={"retrain": RetrainConfig(registry_dir=tmp_path / "registry")}
    )


def publish(settings: Settings, sim: Simulator, n: int, profiles: bool) -> dict[int, int]:
    pub = EventPublisher(settings.bootstrap_servers or "", settings.topics.events)
    if profiles:
        for e in sim.profiles():
            pub.publish(e)
    for e in sim.events(n):
        pub.publish(e)
    stats = pub.flush()
    assert stats.failed == 0
    return stats.end_offsets


def consume(
    settings: Settings, ends: dict[int, int], metrics: PipelineMetrics | None = None
) -> FeedbackConsumer:
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "", metrics=metrics)
    consumer.stop_at(ends)
    consumer.run()
    return consumer


def test_swap_learns_every_event_since_the_version_history(
    settings: Settings, tmp_path: Path
) -> None:
    """Swapping in an untrained version whose history is empty must rebuild, event by event,
    exactly the models the consumer learned online: nothing skipped, nothing twice."""
    s = with_registry(settings, tmp_path)
    sim = Simulator(SimulatorConfig(n_users=200, n_items=100, seed=3))
    first = publish(s, sim, 8000, profiles=True)
    consume(s, first)  # the live consumer has learned 8000 events online
    reference_settings = s.model_copy(
        update={"consumer": s.consumer.model_copy(
            update={"group_id": s.consumer.group_id + "-ref", "state_dir": tmp_path / "ref"})}
    )
    registry = ModelRegistry(s.retrain.registry_dir)
    limits = s.limits
    fresh = ModelBundle.fresh(
        s.model, limits.rating_min, limits.rating_max, limits.dwell_cap_seconds
    )
    version = registry.publish(fresh, {"event_index": 0}).version
    registry.set_current(version)
    publish_control(s.bootstrap_servers or "", s.topics.control, ModelActivated(version=version))
    ends = publish(s, sim, 4000, profiles=False)

    metrics = PipelineMetrics()
    swapped = consume(s, ends, metrics).learner  # restarts from its checkpoint, swaps, goes on
    reference = consume(reference_settings, ends).learner
    assert [w["model_version"] for w in swapped.lifecycle.swaps] == [version]
    assert swapped.lifecycle.swaps[0]["caught_up_events"] > 0
    assert metrics.registry.get_sample_value("feedback_loop_model_version") == version
    assert metrics.registry.get_sample_value("feedback_loop_model_swaps_total") == 1
    assert swapped.models.state_equal(reference.models)
    assert swapped.counts == reference.counts


def test_manual_trigger_becomes_a_request_with_the_live_losses(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_registry(settings, tmp_path)
    sim = Simulator(SimulatorConfig(n_users=200, n_items=100, seed=4))
    ends = publish(s, sim, 6000, profiles=True)
    consume(s, ends)
    publish_control(s.bootstrap_servers or "", s.topics.control, RetrainTrigger(reason="test"))
    ends = publish(s, sim, 2000, profiles=False)
    learner = consume(s, ends).learner
    assert [r["reason"] for r in learner.lifecycle.retrains] == ["test"]
    reader = ControlReader(s.bootstrap_servers or "", s.topics.control)
    try:
        messages = [m for _ in range(20) for m in reader.poll(0.5)]
    finally:
        reader.close()
    requests = [m for m in messages if isinstance(m, RetrainRequest)]
    assert len(requests) == 1
    req = requests[0]
    # Requested between two batches: the history is what had been applied by then.
    assert req.reason == "test" and 0 < req.event_index <= learner.counts.consumed
    assert sum(req.offsets.values()) == req.event_index
    assert req.champion is not None and req.champion["engagement_n"] > 0


def test_rollback_command_reactivates_the_previous_version(
    settings: Settings, tmp_path: Path
) -> None:
    s = with_registry(settings, tmp_path)
    registry = ModelRegistry(s.retrain.registry_dir)
    for _ in range(2):
        v = registry.publish(ModelBundle.fresh(s.model), {"event_index": 0}).version
        registry.set_current(v)
    env = child_env(s)
    proc = subprocess.run(
        [sys.executable, "-m", "cli.app", "rollback"], env=env, capture_output=True,
        text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert registry.current() == 1
    reader = ControlReader(s.bootstrap_servers or "", s.topics.control)
    try:
        messages = [m for _ in range(20) for m in reader.poll(0.5)]
    finally:
        reader.close()
    assert [m.version for m in messages if isinstance(m, ModelActivated)] == [1]
    again = subprocess.run(
        [sys.executable, "-m", "cli.app", "rollback"], env=env, capture_output=True,
        text=True, timeout=120,
    )
    assert again.returncode == 2 and "roll back" in again.stderr
