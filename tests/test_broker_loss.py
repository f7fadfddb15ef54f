"""A broker that lost its data, a broker that is gone, a restart of the consumer.

Each test runs a broker of its own (not the session's): it kills it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupState

from consumers.log_guard import BrokerLost, LogTruncated
from consumers.loop import FeedbackConsumer
from stream.config import Settings
from stream.kafka import clients
from stream.kafka.broker import EmbeddedBroker, ensure_topics
from stream.observability.metrics import PipelineMetrics
from tests.helpers import (
    child_env,
    derived,
    isolated_settings,
    partition_checkpoint,
    publish_stream,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_file=tmp_path / "tansu.log") as b:
        yield b


def restart(broker: EmbeddedBroker, settings: Settings) -> None:
    """Kill the broker and start a new one on the same port: an empty log."""
    broker.stop()
    broker.start()
    ensure_topics(broker.bootstrap_servers, settings.topics, kafka=settings.kafka)


def consumed_with_checkpoint(
    broker: EmbeddedBroker, tmp_path: Path, **consumer: object
) -> Settings:
    settings = isolated_settings(broker.bootstrap_servers, tmp_path / "state", **consumer)
    ensure_topics(broker.bootstrap_servers, settings.topics, kafka=settings.kafka)
    sent = publish_stream(settings, 3000, seed=1)
    first = FeedbackConsumer(settings, broker.bootstrap_servers)
    first.stop_at(sent["end_offsets"])
    assert first.run().learner.counts.consumed == sent["sent"]
    return settings


def truncations(metrics: PipelineMetrics) -> float | None:
    return metrics.registry.get_sample_value(
        "feedback_loop_log_truncations_total", {"partition": "0"}
    )


def test_a_log_that_went_backwards_stops_the_consumer_and_keeps_the_checkpoint(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = consumed_with_checkpoint(broker, tmp_path)
    store = partition_checkpoint(settings)
    saved = store.path.read_bytes()
    restart(broker, settings)
    publish_stream(settings, 1000, seed=2)  # fewer events than the consumer had seen

    metrics = PipelineMetrics()
    consumer = FeedbackConsumer(settings, broker.bootstrap_servers, metrics=metrics)
    with pytest.raises(LogTruncated, match=r"\[0\] went backwards: the consumer was at offset"):
        consumer.run(stop_at_end=True)
    assert truncations(metrics) == 1
    assert store.path.read_bytes() == saved  # nothing written ahead of (or behind) it


def test_restart_from_beginning_applies_the_whole_new_log(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = consumed_with_checkpoint(
        broker, tmp_path, on_log_truncation="restart-from-beginning"
    )
    before = partition_checkpoint(settings).load()
    assert before is not None
    restart(broker, settings)
    second = publish_stream(settings, 1000, seed=2)

    metrics = PipelineMetrics()
    consumer = FeedbackConsumer(settings, broker.bootstrap_servers, metrics=metrics)
    learner = consumer.run(stop_at_end=True).learner
    assert truncations(metrics) == 1
    c = learner.counts
    assert c.consumed == before.state.counts.consumed + second["sent"]
    assert c.reconciles()
    after = partition_checkpoint(settings).load()
    assert after is not None
    assert after.offsets == {(settings.topics.events, 0): second["end_offsets"][0]}


def test_a_lost_broker_stops_the_consumer_without_a_checkpoint_ahead(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = derived(
        isolated_settings(broker.bootstrap_servers, tmp_path / "state"),
        broker_lost_timeout_seconds=2.0,
    )
    ensure_topics(broker.bootstrap_servers, settings.topics, kafka=settings.kafka)
    sent = publish_stream(settings, 2000, seed=3)
    metrics = PipelineMetrics()
    consumer = FeedbackConsumer(settings, broker.bootstrap_servers, metrics=metrics)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    topic = settings.topics.events
    wait_until(lambda: consumer.offsets.get((topic, 0)) == sent["end_offsets"][0], "caught up")
    broker.stop()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], BrokerLost), errors
    assert "no Kafka broker reachable" in str(errors[0])
    assert metrics.registry.get_sample_value("feedback_loop_broker_up") == 0
    assert (metrics.registry.get_sample_value("feedback_loop_broker_errors_total") or 0) > 0
    saved = partition_checkpoint(settings).load()
    if saved is not None:  # never ahead of its offsets
        assert saved.state.counts.consumed == sum(saved.offsets.values())


def test_the_broker_command_exits_when_its_broker_dies(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.app", "broker", "--port", "0"],
        env=child_env(Settings()),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # ready once it tells where it listens
            if "KAFKA_BOOTSTRAP_SERVERS" in line:
                break
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1
        subprocess.run(["kill", "-KILL", children[0]], check=True)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 2
        assert "broker process exited" in " ".join(err.split())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_a_closed_consumer_leaves_its_group(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """What makes a restart quick: the stopped consumer left the group when it closed, so
    its successor does not wait for the old member's session to time out."""
    settings = consumed_with_checkpoint(broker, tmp_path)
    admin = clients.admin(broker.bootstrap_servers, kafka=settings.kafka)
    group = settings.consumer.group_id
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert description.members == []
    assert description.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.UNKNOWN)
    # ... and so does one that failed (here: the broker lost the log).
    restart(broker, settings)
    consumer = FeedbackConsumer(settings, broker.bootstrap_servers)
    with pytest.raises(LogTruncated):
        consumer.run(stop_at_end=True)
    admin = clients.admin(broker.bootstrap_servers, kafka=settings.kafka)
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    assert description.members == []
