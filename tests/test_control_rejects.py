"""Control messages that cannot be acted on: logged, counted, dead-lettered, never fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from producers.simulator import Simulator, SimulatorConfig
from stream.config import RetrainConfig, Settings
from stream.events import ModelPublished
from stream.kafka.control import publish_control
from stream.kafka.publisher import EventPublisher
from stream.observability.metrics import PipelineMetrics
from tests.helpers import read_topic

pytestmark = [pytest.mark.integration]


def test_unusable_control_messages_are_rejected_and_the_consumer_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"retrain": RetrainConfig(registry_dir=tmp_path / "reg")})
    bootstrap = s.bootstrap_servers or ""
    sim = Simulator(SimulatorConfig(n_users=100, n_items=50, seed=5))
    pub = EventPublisher(bootstrap, s.topics.events, kafka=s.kafka)
    for profile in sim.profiles():
        pub.publish(profile)
    for event in sim.events(3000):
        pub.publish(event)
    stats = pub.flush()
    # Published while nothing is in the registry: an accepted answer for a missing version,
    # garbage, and a message of an unknown type.
    publish_control(bootstrap, s.topics.control, ModelPublished(
        request_id="nobody-asked", version=7, accepted=True, offsets={0: 0}, event_index=0,
        outcome={},
    ), kafka=s.kafka)  # fmt: skip
    producer_pub = EventPublisher(bootstrap, s.topics.control, kafka=s.kafka)
    producer_pub.publish(b"\xff{garbage", key=b"x")
    producer_pub.publish(b'{"type": "self_destruct"}', key=b"x")
    assert producer_pub.flush().failed == 0

    metrics = PipelineMetrics()
    consumer = FeedbackConsumer(s, bootstrap, metrics=metrics)
    consumer.stop_at(stats.end_offsets)
    consumer.run()

    learner = consumer.learner
    c = learner.counts
    assert c.consumed == stats.sent
    assert c.consumed == c.applied + c.dead_lettered + c.filtered + c.duplicates
    assert learner.lifecycle.version == 0 and learner.lifecycle.swaps == []
    sample = metrics.registry.get_sample_value
    name = "feedback_loop_control_rejected_total"
    assert sample(name, {"reason": "unloadable_version"}) == 1
    assert sample(name, {"reason": "malformed"}) == 2
    letters = [
        m
        for m in read_topic(s, s.topics.dead_letters)
        if dict(m.headers() or []).get("source.topic") == s.topics.control.encode()
    ]
    assert len(letters) == 3
    kinds = sorted(dict(m.headers() or [])["error.reason"].decode()[:12] for m in letters)
    assert all(dict(m.headers() or [])["error.kind"] == b"control_rejected" for m in letters), kinds
