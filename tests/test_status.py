"""`feedback-loop status` against a real /metrics endpoint (no broker needed)."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from cli.app import app
from stream.learner import Counts
from stream.observability import status
from stream.observability.metrics import PipelineMetrics
from stream.observability.status import Snapshot, StatusError, collect, render, scrape


@dataclass
class Lifecycle:
    """What the metrics read of a learner's lifecycle."""

    version: int = 0
    retrains: list[dict[str, Any]] = field(default_factory=list)
    swaps: list[dict[str, Any]] = field(default_factory=list)
    monitor: Any = None
    policy: Any = field(default_factory=lambda: SimpleNamespace(outcomes=Counter()))
    control_rejected: dict[str, int] = field(default_factory=dict)
    requests_expired: int = 0


def traffic() -> Counts:
    return Counts(
        consumed=1000,
        applied=990,
        dead_lettered=5,
        filtered=4,
        duplicates=1,
        consumed_by_type={"click": 600, "rating": 400},
        dead_letters_by_kind={"malformed_json": 3, "unknown_user": 2},
        filtered_by_reason={"bot": 4},
    )


@dataclass
class Learner:
    """A stand-in learner: what the metrics read of one at scrape time."""

    counts: Counts = field(default_factory=Counts)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    rates: dict[str, float | None] = field(default_factory=dict)

    def scores(self) -> dict[str, float | None]:
        return self.rates


@pytest.fixture
def served() -> Iterator[tuple[Learner, str]]:
    """Metrics reading a :class:`Learner` with some traffic, served on a free loopback port."""
    m = PipelineMetrics()
    port = m.serve("127.0.0.1", 0)
    learner = Learner()
    m.track(lambda: learner)  # the counters count from here
    learner.counts = traffic()
    learner.rates = {"rmse": 0.93, "auc": 0.71}
    m.lag.labels("0").set(5)
    m.lag.labels("1").set(7)
    yield learner, f"http://127.0.0.1:{port}/metrics"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_collect_reads_the_counts(served: tuple[Learner, str]) -> None:
    _m, url = served
    info = collect(url, interval=0)
    assert info["url"] == url
    assert info["consumer_lag_messages"] == 12
    assert info["lag_by_partition"] == {"0": 5, "1": 7}
    assert info["events_consumed_total"] == 1000
    assert info["events_per_second"] is None  # one scrape: no rate
    assert info["events_applied_total"] == 990
    assert info["events_dead_lettered_total"] == 5
    assert info["dead_letters_by_kind"] == {"malformed_json": 3, "unknown_user": 2}
    assert info["events_filtered_total"] == 4
    assert info["events_duplicate_total"] == 1
    assert info["prequential"]["rmse"] == {"rating_mf": pytest.approx(0.93)}
    assert info["prequential"]["auc"] == {"engagement": pytest.approx(0.71)}
    assert info["model_version"] == 0  # learned online from scratch, no swap yet
    assert "drift" not in info  # no learner observed yet: no detector series
    text = render(info)
    for expected in (
        "12 messages",
        "partition 1: 7",
        "1,000 messages",
        "malformed_json 3",
        "rating_mf 0.9300",
        "engagement 0.7100",
    ):
        assert expected in text


def test_rate_from_two_scrapes(
    served: tuple[Learner, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    learner, url = served

    def scrape_then_consume(url: str, timeout: float) -> Snapshot:
        """500 more clicks right after the first scrape, before the second."""
        snap = status_scrape(url, timeout)
        if not scrapes:
            learner.counts.consumed_by_type["click"] += 500
        scrapes.append(snap)
        return snap

    scrapes: list[Snapshot] = []
    status_scrape = status.scrape
    monkeypatch.setattr(status, "scrape", scrape_then_consume)
    info = collect(url, interval=0.5)
    assert len(scrapes) == 2
    elapsed = scrapes[1].at - scrapes[0].at
    assert elapsed >= 0.5
    assert info["events_consumed_total"] == 1500
    assert info["events_per_second"] == pytest.approx(500 / elapsed, abs=0.1)
    assert "/s)" in render(info)


def test_model_version_and_drift_when_exported(served: tuple[Learner, str]) -> None:
    learner, url = served
    row = {"name": "adwin", "statistic": 0.25, "threshold": 0.5, "in_drift": True, "n_alarms": 1}
    learner.lifecycle.monitor = SimpleNamespace(snapshot=lambda: [row])
    learner.lifecycle.version = 4
    learner.lifecycle.retrains += [{"reason": "drift"}, {"reason": "manual"}]
    info = collect(url, interval=0)
    assert info["model_version"] == 4
    assert info["retrain_requests_total"] == 2
    assert info["model_swaps_total"] == 0
    assert info["drift"] == {"adwin": {"state": 1, "statistic": 0.25, "threshold": 0.5}}
    text = render(info)
    assert "model version" in text and "drift adwin" in text and "state 1" in text


def test_cli_status(served: tuple[Learner, str]) -> None:
    _m, url = served
    result = CliRunner().invoke(app, ["status", "--metrics-url", url, "--interval", "0"])
    assert result.exit_code == 0, result.output
    assert "feedback-loop status of" in result.output
    assert "12 messages" in result.output
    args = ["status", "--metrics-url", url, "--json", "--interval", "0.2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = orjson.loads(result.stdout)
    assert info["events_consumed_total"] == 1000
    assert info["events_per_second"] == 0


def test_unreachable_endpoint_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(StatusError, match="cannot reach .*Connection refused"):
        scrape(url, timeout=2)
    result = CliRunner().invoke(app, ["status", "--metrics-url", url, "--interval", "0"])
    assert result.exit_code == 2
    assert "cannot reach" in result.output


class _OtherExporter(BaseHTTPRequestHandler):
    """Some other process's metrics on /metrics, 404 elsewhere."""

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = b"# TYPE node_load1 gauge\nnode_load1 0.5\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_not_a_consumer_endpoint() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherExporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(StatusError, match="serves no feedback_loop_"):
            scrape(f"{base}/metrics")
        with pytest.raises(StatusError, match="HTTP 404"):
            scrape(f"{base}/elsewhere")
    finally:
        server.shutdown()
        server.server_close()
