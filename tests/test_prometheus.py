"""A real Prometheus scrapes a running consumer: every dashboard query has data, every alert
rule is valid and loaded, and promtool accepts the exposition and the rules.

The pipeline runs in this process on the session's broker: a publisher thread sends simulated
events in waves (5% bots, a few malformed messages and duplicates in every wave) while a
consumer thread applies them and checkpoints every second, so every counter, histogram and
gauge the dashboard uses keeps moving while Prometheus (``/usr/bin/prometheus``, Debian's
``prometheus`` package) scrapes it every second. Skipped when Prometheus is not installed.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from consumers.loop import FeedbackConsumer
from producers.simulator import Simulator, SimulatorConfig
from stream.broker import ensure_topics
from stream.config import ConsumerConfig, Settings, Topics
from stream.metrics import PipelineMetrics
from stream.publisher import EventPublisher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DEPLOY_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "dashboards" / "feedback-loop.json"
JOB = "feedback-loop-consumer"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# How long the dashboard may take to have data once Prometheus is up.
DATA_DEADLINE_SECONDS = 40.0

BAD_MESSAGES = [
    b"{not json",
    b'{"type": "teleport", "event_id": "x1", "user_id": "u00001", "ts": 1.7e9}',
    b'{"type": "rating", "event_id": "x2", "user_id": "u00001", "item_id": "i00001",'
    b' "ts": 1.7e9, "rating": 11}',
    b'{"type": "click", "event_id": "x3", "user_id": "nobody", "item_id": "i00001",'
    b' "ts": 1.7e9}',
    b'{"type": "click", "event_id": "x4", "user_id": "u00001", "item_id": "nothing",'
    b' "ts": 1.7e9}',
]
RATE = re.compile(r"rate\((feedback_loop_[a-z0-9_]+)\[(\w+)\]\)")


# --- the pipeline under observation -----------------------------------------------------------


class Traffic:
    """Publisher and consumer threads that keep the metrics moving until stopped."""

    def __init__(self, settings: Settings, metrics: PipelineMetrics, wave: int = 1500) -> None:
        self.settings, self.wave = settings, wave
        self.consumer = FeedbackConsumer(
            settings, settings.bootstrap_servers or "", metrics=metrics
        )
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.waves = 0
        self._threads = [
            threading.Thread(target=self._guard(self._publish), name="publisher", daemon=True),
            threading.Thread(target=self._guard(self.consumer.run), name="consumer", daemon=True),
        ]

    def _guard(self, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as err:  # reported by the tests
                self.errors.append(err)

        return run

    def _publish(self) -> None:
        sim = Simulator(SimulatorConfig(n_users=300, n_items=200, seed=13, bot_share=0.05))
        pub = EventPublisher(self.settings.bootstrap_servers or "", self.settings.topics.events)
        for profile in sim.profiles():
            pub.publish(profile)
        while not self.stop.is_set():
            events = list(sim.events(self.wave))
            for i, event in enumerate(events):
                pub.publish(event)
                if i == self.wave // 2:
                    pub.publish(BAD_MESSAGES[self.waves % len(BAD_MESSAGES)], key=b"u00001")
            for event in events[:10]:
                pub.publish(event)  # re-sent by a retrying producer: duplicates
            stats = pub.flush()
            if stats.failed:
                raise RuntimeError(f"{stats.failed} events not delivered: {stats.errors[:3]}")
            self.waves += 1
            self.stop.wait(0.5)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        self._threads[0].join(30)
        self.consumer.request_stop()
        self._threads[1].join(30)


# --- Prometheus -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> Callable[[], None] | None:
    """Linux: a preexec_fn that SIGTERMs Prometheus if this test process dies untidily."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here, not after the fork
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # pragma: no cover (runs in the child before exec)
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: str) -> dict[str, Any]:
        """GET an API path; the JSON answer, error answers (HTTP 400/422) included."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as r:
                body = r.read()
        except urllib.error.HTTPError as err:
            body = err.read()
        answer: dict[str, Any] = json.loads(body)
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def start_prometheus(config: Path, workdir: Path) -> Prometheus:
    """Start Prometheus on a free loopback port and wait until it is ready."""
    last = ""
    for attempt in range(3):  # the free port may be taken by someone else in between
        port = free_port()
        log = workdir / f"prometheus-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / f'tsdb-{attempt}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_pdeathsig(),
            )
        prom = Prometheus(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return prom
            except OSError:
                pass
            time.sleep(0.2)
        last = prom.log_tail()
        stop_prometheus(prom)
    raise AssertionError(f"Prometheus did not start:\n{last}")


def stop_prometheus(prom: Prometheus) -> None:
    if prom.process.poll() is None:
        prom.process.terminate()
        try:
            prom.process.wait(15)
        except subprocess.TimeoutExpired:
            prom.process.kill()
            prom.process.wait(15)


def scrape_config(yaml: ModuleType, metrics_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml's consumer job, pointed at this process, every 1 s."""
    deployed = yaml.safe_load(DEPLOY_CONFIG.read_text(encoding="utf-8"))
    (job,) = [j for j in deployed["scrape_configs"] if j["job_name"] == JOB]
    job = {
        **job,
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
    }
    return {
        "global": {
            **deployed.get("global", {}),
            "scrape_interval": "1s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(ALERTS)],
        "scrape_configs": [job],
    }


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Stack:
    prometheus: Prometheus
    metrics_url: str
    traffic: Traffic
    notes: list[str] = field(default_factory=list)

    def check_traffic(self) -> None:
        assert not self.traffic.errors, f"the pipeline failed: {self.traffic.errors!r}"


@pytest.fixture(scope="module")
def yaml() -> ModuleType:
    return pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def installed() -> None:
    if not os.access(PROMETHEUS, os.X_OK) or not os.access(PROMTOOL, os.X_OK):
        pytest.skip(
            f"Prometheus is not installed ({PROMETHEUS}, {PROMTOOL}): apt-get install "
            "prometheus (CI does, see .ci/run)"
        )


@pytest.fixture(scope="module")
def stack(
    installed: None, bootstrap: str, tmp_path_factory: pytest.TempPathFactory, yaml: ModuleType
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus")
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        bootstrap_servers=bootstrap,
        topics=Topics(
            events=f"{tag}.events",
            dead_letters=f"{tag}.dead-letters",
            control=f"{tag}.control",
            models=f"{tag}.models",
        ),
        consumer=ConsumerConfig(
            group_id=f"g-{tag}",
            state_dir=workdir / "state",
            checkpoint_every_seconds=1.0,  # checkpoint histogram and counter move every second
        ),
    )
    ensure_topics(bootstrap, settings.topics)
    metrics = PipelineMetrics()
    metrics_port = metrics.serve("127.0.0.1", 0)
    traffic = Traffic(settings, metrics)
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps(scrape_config(yaml, metrics_port), indent=2))  # JSON is YAML
    prom = start_prometheus(config, workdir)  # before the pipeline's threads: it forks
    try:
        traffic.start()
        try:
            yield Stack(prom, f"http://127.0.0.1:{metrics_port}/metrics", traffic)
        finally:
            traffic.close()
    finally:
        stop_prometheus(prom)


def values(answer: dict[str, Any]) -> list[float]:
    """The sample values of an instant-query answer (vector or scalar)."""
    data = answer.get("data", {})
    if data.get("resultType") == "scalar":
        return [float(data["result"][1])]
    return [float(series["value"][1]) for series in data.get("result", [])]


def at_least(prom: Prometheus, expr: str, minimum: float) -> bool:
    """The query's first value is at least ``minimum``."""
    got = values(prom.query(expr))
    return bool(got) and got[0] >= minimum


def wait_for(stack: Stack, what: str, ok: Callable[[], bool], deadline: float) -> None:
    while not ok():
        stack.check_traffic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{stack.prometheus.log_tail()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scraped(stack: Stack) -> Stack:
    """The stack once Prometheus has scraped the consumer a few times."""
    prom = stack.prometheus
    scrapes = f'count_over_time(up{{job="{JOB}"}}[1m])'
    wait_for(
        stack,
        "at least 5 scrapes of the consumer",
        lambda: at_least(prom, scrapes, 5),
        time.monotonic() + 30,
    )
    (target,) = prom.get("/api/v1/targets")["data"]["activeTargets"]
    assert target["health"] == "up", target
    assert target["labels"]["job"] == JOB
    return stack


def panel_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = board["panels"] + [p for row in board["panels"] for p in row.get("panels", [])]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def alert_exprs(yaml: ModuleType) -> list[tuple[str, str]]:
    alerts = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [(r["alert"], r["expr"]) for g in alerts["groups"] for r in g["rules"]]


# --- the tests --------------------------------------------------------------------------------


UNBOUNDED_LABELS = {"user", "user_id", "item", "item_id", "event_id", "session_id", "id", "ts"}
NON_BASE_UNITS = re.compile(r"_(milli|micro|nano)seconds|_(ms|us|minutes?|hours?|kb|mb)(_|$)")


def test_metric_hygiene() -> None:
    """Needs no Prometheus: names, help texts, units and labels of every metric."""
    from prometheus_client.metrics import MetricWrapperBase

    metrics = PipelineMetrics()
    wrappers = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    families = {f.name: f for f in metrics.registry.collect()}
    assert len(families) >= 10
    for family in families.values():
        name = family.name
        assert name.startswith("feedback_loop_"), name
        assert family.documentation.strip() and family.documentation != name, name
        assert not NON_BASE_UNITS.search(name), f"{name}: use base units (_seconds)"
        if family.type == "histogram" or re.search(r"latency|duration|_time", name):
            assert name.endswith(("_seconds", "_bytes", "_messages")), f"{name}: unit suffix"
        if "lag" in name:
            assert name.endswith("_messages"), name
    labels = {(w._name, n) for w in wrappers for n in w._labelnames}
    labels |= {(f.name, n) for f in families.values() for s in f.samples for n in s.labels}
    unbounded = sorted((m, n) for m, n in labels if n in UNBOUNDED_LABELS)
    assert not unbounded, f"unbounded labels (ids): {unbounded}"


def test_every_dashboard_query_returns_data(scraped: Stack) -> None:
    prom = scraped.prometheus
    exprs = panel_exprs()
    assert len(exprs) >= 20
    problems: dict[str, str] = {}

    def all_have_data() -> bool:
        problems.clear()
        for title, expr in exprs:
            answer = prom.query(expr)
            if answer["status"] != "success":
                problems[f"{title}: {expr}"] = f"invalid: {answer.get('error')}"
                continue
            got = values(answer)
            if not got:
                problems[f"{title}: {expr}"] = "no data"
            elif not any(math.isfinite(v) for v in got):
                problems[f"{title}: {expr}"] = f"only NaN/Inf: {got}"
        return not problems

    try:
        wait_for(
            scraped,
            "data in every panel",
            all_have_data,
            time.monotonic() + DATA_DEADLINE_SECONDS,
        )
    except AssertionError:
        raise AssertionError(
            "dashboard queries without data after "
            f"{DATA_DEADLINE_SECONDS:.0f} s:\n"
            + "\n".join(f"  {k}: {v}" for k, v in problems.items())
        ) from None
    # The consumer is up, and the rate() windows hold at least two samples of each counter.
    assert values(prom.query(f'min(up{{job="{JOB}"}})')) == [1.0]
    windows = {m.groups() for _title, expr in exprs for m in RATE.finditer(expr)}
    assert len(windows) >= 8, windows
    for metric, window in sorted(windows):
        counts = values(prom.query(f"min(count_over_time({metric}[{window}]))"))
        assert counts and counts[0] >= 2, (metric, window, counts)


def test_traffic_reaches_every_outcome(scraped: Stack) -> None:
    """Dead letters, filtered bots and duplicates all have data (so do their panels)."""
    prom = scraped.prometheus
    for expr in (
        "sum(feedback_loop_events_dead_lettered_total)",
        'feedback_loop_events_filtered_total{reason="bot"}',
        "feedback_loop_events_duplicate_total",
        "sum(feedback_loop_events_applied_total)",
    ):
        wait_for(
            scraped,
            f"{expr} >= 1",
            functools.partial(at_least, prom, expr, 1),
            time.monotonic() + DATA_DEADLINE_SECONDS,
        )
    kinds = prom.query("sum by (kind) (feedback_loop_events_dead_lettered_total) > 0")
    assert {s["metric"]["kind"] for s in kinds["data"]["result"]} >= {"malformed_json"}


def test_every_alert_rule_is_valid_and_loaded(scraped: Stack, yaml: ModuleType) -> None:
    prom = scraped.prometheus
    rules = alert_exprs(yaml)
    assert {name for name, _ in rules} >= {"ConsumerDown", "ConsumerLagHigh", "DeadLetterRateHigh"}
    for name, expr in rules:
        answer = prom.query(expr)
        assert answer["status"] == "success", (name, answer)  # firing or not: may be empty

    def loaded() -> dict[str, dict[str, Any]]:
        groups = prom.get("/api/v1/rules")["data"]["groups"]
        return {r["name"]: r for g in groups for r in g["rules"]}

    wait_for(
        scraped,
        "every rule evaluated",
        lambda: set(loaded()) == {n for n, _ in rules}
        and all(r["health"] == "ok" for r in loaded().values()),
        time.monotonic() + 20,
    )
    for name, rule in loaded().items():
        assert rule["type"] == "alerting", name
        assert not rule.get("lastError"), (name, rule["lastError"])
    # Healthy consumer: it is scraped, so ConsumerDown is not firing.
    firing = prom.query('ALERTS{alertname="ConsumerDown"}')
    assert firing["data"]["result"] == []


def test_promtool_accepts_the_exposition(scraped: Stack) -> None:
    with urllib.request.urlopen(scraped.metrics_url, timeout=10) as r:
        exposition = r.read()
    assert b"feedback_loop_events_consumed_total" in exposition
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output  # no lint findings at all


def test_promtool_accepts_the_alert_rules(scraped: Stack) -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
