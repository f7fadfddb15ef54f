"""The `feedback-loop` commands as a user runs them: real processes and JSON reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.events import encode_event
from tests.helpers import wait_until

REPORT_KEYS = {
    "consumed",
    "applied",
    "dead_lettered",
    "filtered",
    "duplicates",
    "rmse",
    "mae",
    "logloss",
    "auc",
    "recall_at_10",
    "events_per_second",
    "config",
}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run(
        [sys.executable, "-m", "cli.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    assert report.keys() >= REPORT_KEYS
    total = report["applied"] + report["dead_lettered"] + report["filtered"]
    assert report["consumed"] == total + report["duplicates"]
    return report


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_the_loop_and_beats_naive_baselines(tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    proc = run_cli(
        "demo",
        "--events",
        "30000",
        "--report",
        str(report_path),
        "--metrics-port",
        "0",
        "--seed",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    r = load(report_path)
    cfg = r["config"]
    assert cfg["events"] == 30000 and cfg["seed"] == 3
    assert r["consumed"] == 30000 + 1000 + 500  # events + user and item profiles
    assert r["filtered"] > 0 and r["dead_lettered"] == 0
    assert r["rmse"] < r["baseline"]["rmse"]
    assert r["logloss"] < r["baseline"]["logloss"]
    assert r["auc"] > 0.6
    assert r["recall_at_10"] > 0.0
    assert r["events_per_second"] > 0
    assert r["retrains"] == [] and r["swaps"] == [] and r["model_version"] == 0
    assert "feedback-loop summary" in proc.stderr
    assert report_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
@pytest.mark.slow
def test_replay_of_an_events_file_on_the_embedded_broker(tmp_path: Path) -> None:
    sim = Simulator(SimulatorConfig(n_users=50, n_items=40, seed=1))
    lines = [encode_event(e) for e in [*sim.profiles(), *sim.events(3000)]]
    lines.insert(200, b'{"type": "rating", "event_id": "broken"')  # a torn line
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report_path = tmp_path / "replay.json"
    proc = run_cli("replay", str(path), "--report", str(report_path), "--metrics-port", "0")
    assert proc.returncode == 0, proc.stderr
    r = load(report_path)
    assert r["consumed"] == len(lines)
    assert r["dead_lettered"] == 1
    assert r["config"]["format"] == "events"
    assert {"drift_alarms", "retrains", "swaps"} <= r.keys()
    assert report_path.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.slow
def test_evaluate_matches_replay_semantics_without_a_broker(tmp_path: Path) -> None:
    sim = Simulator(SimulatorConfig(n_users=50, n_items=40, seed=1))
    events = [*sim.profiles(), *sim.events(3000)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(encode_event(e) for e in events) + b"\n")
    report_path = tmp_path / "eval.json"
    proc = run_cli("evaluate", str(path), "--report", str(report_path))
    assert proc.returncode == 0, proc.stderr
    r = load(report_path)
    assert r["consumed"] == len(events) and r["dead_lettered"] == 0
    assert r["rmse"] is not None


def test_evaluate_rejects_a_missing_file_clearly(tmp_path: Path) -> None:
    proc = run_cli("evaluate", str(tmp_path / "nope.data"), "--format", "movielens-100k")
    assert proc.returncode == 2
    assert "nope.data" in proc.stderr


def test_consume_without_a_broker_explains_what_to_do() -> None:
    proc = run_cli("consume")
    assert proc.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in proc.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_stops_the_demo_cleanly_and_still_writes_the_report(tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.app",
            "demo",
            "--events",
            "5000000",
            "--report",
            str(report_path),
            "--metrics-port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoint = tmp_path / "state" / "partitions" / "feedback.events-0" / "checkpoint.pkl"
    # Ready: the consumer is running and has checkpointed events.
    wait_until(checkpoint.exists, "a checkpoint written", proc=proc)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    r = load(report_path)
    assert r["interrupted"] is True
    assert 0 < r["consumed"] < 5_000_000
    assert "SIGINT" in err
