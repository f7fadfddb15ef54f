"""Helpers shared by the tests: isolated settings, child-process environments, test streams.

Test modules import from here, never from each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from producers.simulator import Simulator, SimulatorConfig
from stream.config import ConsumerConfig, Settings, Topics, settings_env
from stream.kafka import clients
from stream.kafka.checkpoint import CheckpointStore
from stream.kafka.partitions import PartitionStore
from stream.kafka.publisher import EventPublisher


def isolated_settings(bootstrap: str, state_dir: Path, **consumer: object) -> Settings:
    """Settings with topics, a consumer group and a state dir of their own."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        bootstrap_servers=bootstrap,
        topics=Topics.prefixed(tag),
        consumer=ConsumerConfig(group_id=f"g-{tag}", state_dir=state_dir, **consumer),  # type: ignore[arg-type]
    )


def partition_checkpoint(settings: Settings, partition: int = 0) -> CheckpointStore:
    """The checkpoint file of one partition of the settings' events topic."""
    store = PartitionStore(settings.consumer.state_dir, settings.topics.events)
    return store.checkpoints(partition)


def derived(settings: Settings, topics: dict[str, Any] | None = None, **consumer: Any) -> Settings:
    """A copy of (frozen) ``settings`` with these consumer fields and topic names changed."""
    return settings.model_copy(
        update={
            "consumer": settings.consumer.model_copy(update=consumer),
            "topics": settings.topics.model_copy(update=topics or {}),
        }
    )


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 120.0,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
) -> None:
    """Return as soon as ``condition()`` holds; fail after ``timeout`` or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out = [o for o in proc.communicate() if o]
            raise AssertionError(f"process exited ({proc.returncode}) before {what}: {out!r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout}s")
        time.sleep(0.01)


def consume_command(settings: Settings, batch_size: int, checkpoint_every: int) -> dict[str, Any]:
    """``feedback-loop consume --until-end`` for a child process on ``settings``, with these
    batch and checkpoint sizes: the ``args`` and ``env`` of a ``subprocess`` call."""
    env = child_env(settings)
    env["FEEDBACK_LOOP_CONSUMER__BATCH_SIZE"] = str(batch_size)
    env["FEEDBACK_LOOP_CONSUMER__CHECKPOINT_EVERY_EVENTS"] = str(checkpoint_every)
    args = [
        sys.executable, "-m", "cli.app", "consume", "--until-end",
        "--state-dir", str(settings.consumer.state_dir), "--metrics-port", "0",
        "--log-level", "WARNING",
    ]  # fmt: skip
    return {"args": args, "env": env}


def child_env(settings: Settings) -> dict[str, str]:
    """This environment plus what makes a child process use exactly ``settings``."""
    return {**os.environ, **settings_env(settings)}


BAD_MESSAGES = [
    b"{not json",
    b'{"type": "teleport", "event_id": "x1", "user_id": "u00001", "ts": 1.7e9}',
    b'{"type": "rating", "event_id": "x2", "user_id": "u00001", "item_id": "i00001",'
    b' "ts": 1.7e9, "rating": 11}',
    b'{"type": "click", "event_id": "x3", "user_id": "nobody", "item_id": "i00001", "ts": 1.7e9}',
]


def publish_raw(settings: Settings, messages: list[bytes | None]) -> list[int]:
    """Publish raw values (None: a message without a value), in order, through one producer
    that accepts messages up to 64 MB; return the offset of each."""
    producer = clients.producer(
        settings.bootstrap_servers or "",
        kafka=settings.kafka,
        bulk=True,
        max_message_bytes=64 * 1024 * 1024,
    )
    offsets: list[int] = [-1] * len(messages)
    errors: list[str] = []

    def delivered(i: int) -> Callable[[Any, Message], None]:
        def on_delivery(err: Any, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                offsets[i] = msg.offset() or 0

        return on_delivery

    for i, value in enumerate(messages):
        clients.produce(producer, settings.topics.events, value, on_delivery=delivered(i))
        producer.poll(0)
    assert producer.flush(120) == 0 and not errors, errors[:3]
    return offsets


def publish_stream(settings: Settings, n_events: int, seed: int = 7) -> dict[str, Any]:
    """Profiles, n events, the bad messages and 50 events re-sent; return what was sent."""
    sim = Simulator(SimulatorConfig(n_users=300, n_items=200, seed=seed, bot_share=0.05))
    pub = EventPublisher(
        settings.bootstrap_servers or "", settings.topics.events, kafka=settings.kafka
    )
    events = list(sim.events(n_events))
    profiles = list(sim.profiles())
    for profile in profiles:
        pub.publish(profile)
    for i, e in enumerate(events):
        pub.publish(e)
        if i % 1000 == 500 and i // 1000 < len(BAD_MESSAGES):
            pub.publish(BAD_MESSAGES[i // 1000], key=b"u00001")
    for e in events[1000:1050]:
        pub.publish(e)  # redelivered by a retrying producer, say
    stats = pub.flush()
    assert stats.failed == 0 and stats.delivered == stats.sent
    return {"sent": stats.sent, "end_offsets": stats.end_offsets, "profiles": len(profiles)}


def read_topic(settings: Settings, topic: str, timeout: float = 60.0) -> list[Message]:
    """Every message of ``topic``, read from the start of each partition to its end."""
    c = clients.reader(
        settings.bootstrap_servers or "", "test-reader", kafka=settings.kafka, partition_eof=True
    )
    partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[Message] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while at_end != set(partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: only partitions {sorted(at_end)} read to the end")
            for m in c.consume(1000, 0.5):
                if clients.is_data(m, at_end):
                    out.append(m)
    finally:
        c.close()
    return out
