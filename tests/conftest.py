"""Shared fixtures: one embedded Tansu broker for the whole test session, fresh topics per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import movielens
from stream.config import Settings
from stream.kafka.broker import EmbeddedBroker, ensure_topics
from tests.helpers import isolated_settings


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


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    """Settings with topics and a consumer group of this test's own."""
    s = isolated_settings(bootstrap, tmp_path / "state", checkpoint_every_events=5000)
    ensure_topics(bootstrap, s.topics, kafka=s.kafka)
    return s


@pytest.fixture(scope="session")
def ml100k_real() -> Iterator[Path]:
    """The real MovieLens-100K (``u.data``), from the cache or the recbole wheel on PyPI."""
    try:
        yield movielens.movielens_100k()
    except movielens.MovieLensUnavailable as err:
        pytest.skip(f"MovieLens-100K unavailable (needs `pip download recbole` once): {err.reason}")
