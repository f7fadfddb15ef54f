"""Scenario tests: simulated drift on the embedded broker, the real retrainer, real swaps."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.loop import FeedbackConsumer
from consumers.plot import windowed
from producers.simulator import Simulator, SimulatorConfig
from stream.config import RetrainConfig, Settings
from stream.kafka.publisher import EventPublisher
from tests.helpers import child_env, partition_checkpoint

# End to end with a real retrainer process: minutes, so left out of the fast lane.
pytestmark = [pytest.mark.integration, pytest.mark.scenario, pytest.mark.slow]

EVENTS = 150_000
DRIFT_AT = 60_000
SPLIT = 100_000


def scenario_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "retrain": RetrainConfig(
                registry_dir=tmp_path / "registry",
                trials=6,
                holdout_events=8000,
                validation_events=8000,
                group_id=settings.consumer.group_id + "-retrainer",
            )
        }
    )


@pytest.fixture
def retrainer(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The retrainer as its own process, as `feedback-loop demo` runs it."""
    s = scenario_settings(settings, tmp_path)
    log = open(tmp_path / "retrainer.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.app", "retrainer", "--metrics-port", "0"],
        env=child_env(s),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield s
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def run_scenario(settings: Settings, **sim: Any) -> tuple[Any, dict[str, Any], int]:
    """Publish and consume the stream in two halves; the consumer is restarted (from its
    checkpoint) in between, after any retrain it asked for has been answered, so a swap
    lands mid-stream and the second half shows the swapped model at work."""
    simulator = Simulator(SimulatorConfig(seed=21, bot_share=0.02, **sim))
    pub = EventPublisher(
        settings.bootstrap_servers or "", settings.topics.events, kafka=settings.kafka
    )
    for profile in simulator.profiles():
        pub.publish(profile)
    profiles = pub.stats.sent
    for half in (SPLIT, EVENTS - SPLIT):
        for event in simulator.events(half):
            pub.publish(event)
        stats = pub.flush()
        assert stats.failed == 0
        consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
        consumer.wait_for_retrains = True
        consumer.stop_at(stats.end_offsets)
        learner = consumer.run().learner
    c = learner.counts
    assert c.consumed == stats.sent and c.reconciles(), "an event was lost or applied twice"
    ckpt = partition_checkpoint(settings).load()
    assert ckpt is not None and ckpt.offsets == {
        (settings.topics.events, p): o for p, o in stats.end_offsets.items()
    }
    return learner, learner.summary(), profiles


def mean_logloss(learner: Any, start: int, end: int) -> float:
    w = windowed(learner.timeline)
    vals = [
        v
        for i, v in zip(w["index"], w["logloss"], strict=True)
        if start < i <= end and not math.isnan(v)
    ]
    return sum(vals) / len(vals)


def test_abrupt_drift_triggers_one_retrain_and_the_swap_recovers(retrainer: Settings) -> None:
    learner, summary, profiles = run_scenario(retrainer, drift_at=DRIFT_AT, drift_share=0.8)
    change = DRIFT_AT + profiles  # the drift's position in the consumed stream
    alarms = [a for a in summary["drift_alarms"] if a["event_index"] >= change]
    assert alarms, "the drift was not detected"
    # The data detectors do alarm in this run (so their silence before the change means
    # something): after the change, not before it.
    data_alarms = [a["event_index"] for a in summary["drift_alarms"] if a["kind"] == "data"]
    assert data_alarms and min(data_alarms) >= change, data_alarms
    assert len(summary["retrains"]) == 1, summary["retrains"]
    retrain = summary["retrains"][0]
    assert retrain["start_event_index"] >= change
    assert retrain["status"] == "accepted", retrain
    assert retrain["challenger_holdout"] < retrain["champion_holdout"]
    assert [s["model_version"] for s in summary["swaps"]] == [retrain["version"]]
    swap_at = summary["swaps"][0]["event_index"]
    pre = mean_logloss(learner, change - 30_000, change)
    post = mean_logloss(learner, swap_at, EVENTS + profiles)
    assert post <= pre * 1.05, (pre, post)


def test_stationary_stream_launches_no_retrain(retrainer: Settings) -> None:
    learner, summary, _ = run_scenario(retrainer)
    assert summary["retrains"] == []
    assert summary["swaps"] == []
    assert not [a for a in summary["drift_alarms"] if a["kind"] == "data"]
    # ...although every data detector compared windows with its reference all along (no
    # swap, so no reset: the counts cover the whole stream).
    monitor = learner.lifecycle.monitor
    assert monitor is not None
    windows = {n: d.n_windows for n, d in monitor.detectors.items() if d.kind == "data"}
    assert len(windows) == 4 and min(windows.values()) >= 2, windows


def test_gradual_drift_is_detected(retrainer: Settings) -> None:
    _learner, summary, profiles = run_scenario(
        retrainer, drift_at=DRIFT_AT, drift_duration=30_000, drift_share=0.8
    )
    change = DRIFT_AT + profiles
    assert [a for a in summary["drift_alarms"] if a["event_index"] >= change]
    assert len(summary["retrains"]) >= 1
