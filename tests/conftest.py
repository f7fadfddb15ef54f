"""Shared fixtures: one embedded Tansu broker for the whole test session, fresh topics per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.config import ConsumerConfig, Settings, Topics
from stream.kafka.broker import EmbeddedBroker, ensure_topics


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker: the one in KAFKA_BOOTSTRAP_SERVERS, else an embedded Tansu."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    log_file = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log_file) as broker:
        yield broker.bootstrap_servers


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


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    """Settings with topics and a consumer group of this test's own."""
    s = isolated_settings(bootstrap, tmp_path / "state", checkpoint_every_events=5000)
    ensure_topics(bootstrap, s.topics)
    return s


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess use the same topics, group and broker."""
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
            "FEEDBACK_LOOP_TOPICS__EVENTS": settings.topics.events,
            "FEEDBACK_LOOP_TOPICS__DEAD_LETTERS": settings.topics.dead_letters,
            "FEEDBACK_LOOP_TOPICS__CONTROL": settings.topics.control,
            "FEEDBACK_LOOP_TOPICS__MODELS": settings.topics.models,
            "FEEDBACK_LOOP_CONSUMER__GROUP_ID": settings.consumer.group_id,
        }
    )
    return env
