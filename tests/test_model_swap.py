"""Hot swap, rollback and the manual trigger, through the real control topic and registry."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from consumers.model_control import ModelControl, SkippedVersion
from producers.simulator import Simulator, SimulatorConfig
from stream.config import RetrainConfig, Settings
from stream.events import (
    ControlMessage,
    ModelActivated,
    ModelPublished,
    RetrainRequest,
    RetrainTrigger,
    decode_control,
)
from stream.kafka.control import publish_control
from stream.kafka.publisher import EventPublisher
from stream.learner import FeedbackLearner
from stream.lifecycle import ModelRegistry
from stream.models import ModelBundle
from stream.observability.metrics import PipelineMetrics
from tests.helpers import child_env, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def with_registry(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={"retrain": RetrainConfig(registry_dir=tmp_path / "registry")}
    )


def publish(settings: Settings, sim: Simulator, n: int, profiles: bool) -> dict[int, int]:
    pub = EventPublisher(
        settings.bootstrap_servers or "", settings.topics.events, kafka=settings.kafka
    )
    if profiles:
        for profile in sim.profiles():
            pub.publish(profile)
    for event in sim.events(n):
        pub.publish(event)
    stats = pub.flush()
    assert stats.failed == 0
    return stats.end_offsets


def control_messages(settings: Settings) -> list[ControlMessage]:
    """Every message of the control topic, read to the end of the partition."""
    return [decode_control(m.value() or b"") for m in read_topic(settings, settings.topics.control)]


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
        update={
            "consumer": s.consumer.model_copy(
                update={"group_id": s.consumer.group_id + "-ref", "state_dir": tmp_path / "ref"}
            )
        }
    )
    registry = ModelRegistry(s.retrain.registry_dir)
    limits = s.limits
    fresh = ModelBundle.fresh(
        s.model, limits.rating_min, limits.rating_max, limits.dwell_cap_seconds
    )
    version = registry.publish(fresh, {"event_index": 0}).version
    registry.set_current(version)
    publish_control(
        s.bootstrap_servers or "",
        s.topics.control,
        ModelActivated(version=version),
        kafka=s.kafka,
    )
    ends = publish(s, sim, 4000, profiles=False)

    metrics = PipelineMetrics()
    swapped = consume(s, ends, metrics).learner  # restarts from its checkpoint, swaps, goes on
    reference = consume(reference_settings, ends).learner
    assert [w.model_version for w in swapped.lifecycle.swaps] == [version]
    assert swapped.lifecycle.swaps[0].caught_up_events > 0
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
    publish_control(
        s.bootstrap_servers or "",
        s.topics.control,
        RetrainTrigger(reason="test"),
        kafka=s.kafka,
    )
    ends = publish(s, sim, 2000, profiles=False)
    learner = consume(s, ends).learner
    assert [r.reason for r in learner.lifecycle.retrains] == ["test"]
    # The request was acknowledged by the broker before consume() returned.
    requests = [m for m in control_messages(s) if isinstance(m, RetrainRequest)]
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
        [sys.executable, "-m", "cli.app", "rollback"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert registry.current() == 1
    messages = control_messages(s)  # the CLI returns once the broker has acknowledged
    assert [m.version for m in messages if isinstance(m, ModelActivated)] == [1]
    again = subprocess.run(
        [sys.executable, "-m", "cli.app", "rollback"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and "roll back" in again.stderr


def test_versions_missing_from_the_registry_are_recorded_not_fatal(
    settings: Settings, tmp_path: Path
) -> None:
    """An activation or an accepted answer naming a version the registry does not hold is
    logged and recorded; the consumer keeps its models and its retrain ends as failed."""
    s = with_registry(settings, tmp_path)
    learner = FeedbackLearner(s)
    learner.counts.consumed = 500  # as if 500 events had been applied
    control = ModelControl(s, s.bootstrap_servers or "", learner)
    life = learner.lifecycle
    bootstrap = s.bootstrap_servers or ""

    def poll_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, "control messages not seen"
            control.between_batches({})
            time.sleep(0.05)

    # Version 1 exists but does not say where its history ends.
    ModelRegistry(s.retrain.registry_dir).publish(ModelBundle.fresh(s.model), {})
    try:
        publish_control(
            bootstrap,
            s.topics.control,
            ModelActivated(version=41),
            kafka=s.kafka,
        )
        publish_control(
            bootstrap,
            s.topics.control,
            ModelActivated(version=1),
            kafka=s.kafka,
        )
        life.trigger("test")
        poll_until(lambda: len(control.skipped) == 2 and life.state.busy)
        assert [(k.message, k.version) for k in control.skipped] == [
            ("model_activated", 41),
            ("model_activated", 1),
        ]
        assert "not found" in control.skipped[0].error
        assert "no event_index" in control.skipped[1].error
        request = life.state.outstanding
        assert request is not None
        publish_control(
            bootstrap,
            s.topics.control,
            kafka=s.kafka,
            message=ModelPublished(
                request_id=request.request_id,
                version=42,
                accepted=True,
                offsets=request.offsets,
                event_index=request.event_index,
                outcome={},
            ),
        )
        poll_until(lambda: len(control.skipped) == 3)
    finally:
        control.close()
    assert control.skipped[2] == SkippedVersion("swap", 42, control.skipped[2].error)
    assert not life.state.busy  # the policy may decide again
    assert life.swaps == [] and life.version == 0
    row = life.report()["retrains"][0]
    assert (row["status"], row["version"]) == ("failed", 42)
    assert "model version 42 not found" in row["error"]
