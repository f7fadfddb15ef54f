"""Helpers shared by the tests: isolated settings, child-process environments, test streams.

Test modules import from here, never from each other.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from producers.simulator import Simulator, SimulatorConfig
from stream.config import ConsumerConfig, Settings, Topics, settings_env
from stream.kafka.publisher import EventPublisher


def isolated_settings(bootstrap: str, state_dir: Path, **consumer: object) -> Settings:
    """Settings with topics, a consumer group and a state dir of their own."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        bootstrap_servers=bootstrap,
        topics=Topics(
            events=f"{tag}.events",
            dead_letters=f"{tag}.dead-letters",
            control=f"{tag}.control",
            models=f"{tag}.models",
        ),
        consumer=ConsumerConfig(group_id=f"g-{tag}", state_dir=state_dir, **consumer),  # type: ignore[arg-type]
    )


def child_env(settings: Settings) -> dict[str, str]:
    """This environment plus what makes a child process use exactly ``settings``."""
    return {**os.environ, **settings_env(settings)}


BAD_MESSAGES = [
    b"{not json",
    b'{"type": "teleport", "event_id": "x1", "user_id": "u00001", "ts": 1.7e9}',
    b'{"type": "rating", "event_id": "x2", "user_id": "u00001", "item_id": "i00001",'
    b' "ts": 1.7e9, "rating": 11}',
    b'{"type": "click", "event_id": "x3", "user_id": "nobody", "item_id": "i00001",'
    b' "ts": 1.7e9}',
]


def publish_stream(settings: Settings, n_events: int, seed: int = 7) -> dict[str, Any]:
    """Profiles, n events, the bad messages and 50 re-sent duplicates; return what was sent."""
    sim = Simulator(SimulatorConfig(n_users=300, n_items=200, seed=seed, bot_share=0.05))
    pub = EventPublisher(settings.bootstrap_servers or "", settings.topics.events)
    events = list(sim.events(n_events))
    profiles = list(sim.profiles())
    for e in profiles:
        pub.publish(e)
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
    c = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
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
                err = m.error()
                if err is None:
                    out.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition() or 0)
    finally:
        c.close()
    return out
