"""A real Prometheus scrapes a running consumer and retrainer: every dashboard query has data,
every annotation query is valid, every alert rule is valid and loaded, and promtool accepts the
expositions and the rules.

The pipeline runs in this process on the session's broker: a publisher thread sends simulated
events in waves (5% bots, a few malformed messages and duplicates in every wave) while a
consumer thread applies them and checkpoints every second, so every counter, histogram and
gauge the dashboard uses keeps moving while Prometheus (``/usr/bin/prometheus``, Debian's
``prometheus`` package) scrapes it every second. The consumer's drift monitor compares windows
of only 100 events, so its data detectors raise (false) alarms early; the first after the
warm-up decides a retrain, which a retrainer thread (its metrics served as a second scrape
target) runs with a small search, so the drift and retrainer panels have data too, and a swap
follows if the challenger wins. Skipped when Prometheus is not installed.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from consumers.loop import FeedbackConsumer
from consumers.retrainer import RetrainWorker
from producers.simulator import ClosedLoop, LoopConfig, LoopMetrics, Simulator, SimulatorConfig
from producers.simulator.closed_loop import http_ready, http_recommender
from stream.config import DriftConfig, RetrainConfig, Settings
from stream.kafka.broker import ensure_topics
from stream.kafka.publisher import EventPublisher
from stream.observability.metrics import PipelineMetrics, RetrainMetrics
from tests.helpers import BAD_MESSAGES as PIPELINE_BAD_MESSAGES
from tests.helpers import child_env, isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DEPLOY_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "dashboards" / "feedback-loop.json"
JOB = "feedback-loop-consumer"
RETRAINER_JOB = "feedback-loop-retrainer"
SERVE_JOB = "feedback-loop-serve"
# The population every publisher of this module simulates (the closed loop included).
POPULATION = SimulatorConfig(n_users=300, n_items=200, seed=13, bot_share=0.05)
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# How long the dashboard may take to have data once Prometheus is up (a retrain included).
DATA_DEADLINE_SECONDS = 40.0
# How often a wait asks Prometheus again (it scrapes and evaluates every second).
POLL_SECONDS = 0.25

# The broker tests' malformed messages, plus an unknown item.
BAD_MESSAGES = [
    *PIPELINE_BAD_MESSAGES,
    b'{"type": "click", "event_id": "x4", "user_id": "u00001", "item_id": "nothing", "ts": 1.7e9}',
]
RATE = re.compile(r"rate\((feedback_loop_[a-z0-9_]+)\[(\w+)\]\)")


# --- the pipeline under observation -----------------------------------------------------------


class Traffic:
    """Publisher, consumer and retrainer threads that keep the metrics moving until stopped."""

    def __init__(
        self,
        settings: Settings,
        metrics: PipelineMetrics,
        retrain_metrics: RetrainMetrics,
        serve_url: str,
        wave: int = 1500,
    ) -> None:
        self.settings, self.wave = settings, wave
        bootstrap = settings.bootstrap_servers or ""
        self.consumer = FeedbackConsumer(settings, bootstrap, metrics=metrics)
        self.retrainer = RetrainWorker(settings, bootstrap, retrain_metrics)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.waves = 0
        # Simulated users asking the serve process for slates, windows of 20 sessions so
        # the loop's gauges move within a second or two.
        self.loop = ClosedLoop(
            Simulator(POPULATION),
            http_recommender(serve_url),
            LoopConfig(rate=400.0, window_sessions=20, ready_timeout=60.0),
            ready=http_ready(serve_url),
            metrics=LoopMetrics(LoopConfig().policies, POPULATION.n_items, 20, metrics.registry),
        )
        self._threads = [
            threading.Thread(target=self._guard(self._publish), name="publisher", daemon=True),
            threading.Thread(target=self._guard(self.consumer.run), name="consumer", daemon=True),
            threading.Thread(target=self._guard(self.retrainer.run), name="retrainer", daemon=True),
            threading.Thread(target=self._guard(self._loop), name="closed-loop", daemon=True),
        ]

    def _guard(self, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as err:  # reported by the tests
                self.errors.append(err)

        return run

    def _loop(self) -> None:
        """The closed loop's sessions (the profiles come from :meth:`_publish`)."""
        s = self.settings
        pub = EventPublisher(s.bootstrap_servers or "", s.topics.events, kafka=s.kafka)
        if not self.loop.wait_ready():
            return
        for event in self.loop.events(10**9):  # until close()
            pub.publish(event)
        pub.flush()

    def _publish(self) -> None:
        sim = Simulator(POPULATION)
        s = self.settings
        pub = EventPublisher(s.bootstrap_servers or "", s.topics.events, kafka=s.kafka)
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
        self.loop.close()
        self._threads[3].join(30)
        self._threads[0].join(30)
        self.consumer.request_stop()
        self.retrainer.request_stop()
        self._threads[1].join(30)
        self._threads[2].join(30)  # after the running retrain, if any (a small one)


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

    def ready(self) -> bool:
        """Serving queries (``/-/ready``); :class:`_Exited` once the process is gone."""
        if self.process.poll() is not None:
            raise _Exited(self.process.returncode)
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False


class _Exited(Exception):
    """Prometheus exited (its port taken by someone else in between, for instance)."""


def wait_until(
    what: str,
    ok: Callable[[], bool],
    seconds: float,
    check: Callable[[], None] = lambda: None,
    context: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``ok`` until it holds; fail after ``seconds``. ``check`` raises early on errors.

    Prometheus has no push notification for "scraped" or "evaluated": its API is polled, at
    a fraction of the 1 s scrape and evaluation interval.
    """
    deadline = time.monotonic() + seconds
    while not ok():
        check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}\n{context()}")
        time.sleep(POLL_SECONDS)


def start_prometheus(binary: str, config: Path, workdir: Path) -> Prometheus:
    """Start Prometheus on a free loopback port and wait until it is ready."""
    last = ""
    for attempt in range(3):  # the free port may be taken by someone else in between
        port = free_port()
        log = workdir / f"prometheus-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
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
        try:
            wait_until("Prometheus to be ready", prom.ready, 30)
            return prom
        except (AssertionError, _Exited):
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


def scrape_config(yaml: ModuleType, ports: dict[str, int]) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml's jobs named in ``ports`` (job -> port), pointed at
    this process, every 1 s."""
    deployed = yaml.safe_load(DEPLOY_CONFIG.read_text(encoding="utf-8"))
    jobs = []
    for name, port in ports.items():
        # A job the deployment does not scrape (yet) gets the defaults.
        (job,) = [j for j in deployed["scrape_configs"] if j["job_name"] == name] or [
            {"job_name": name, "metrics_path": "/metrics"}
        ]
        jobs.append(
            {
                **job,
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }
        )
    return {
        "global": {
            **deployed.get("global", {}),
            "scrape_interval": "1s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(ALERTS)],
        "scrape_configs": jobs,
    }


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Stack:
    prometheus: Prometheus
    metrics_url: str
    retrainer_metrics_url: str
    serve_metrics_url: str
    traffic: Traffic
    notes: list[str] = field(default_factory=list)

    def check_traffic(self) -> None:
        assert not self.traffic.errors, f"the pipeline failed: {self.traffic.errors!r}"

    def wait_for(self, what: str, ok: Callable[[], bool], seconds: float) -> None:
        """Wait until ``ok`` holds, failing early if the pipeline fails."""
        wait_until(what, ok, seconds, self.check_traffic, self.prometheus.log_tail)


@pytest.fixture(scope="module")
def yaml() -> ModuleType:
    return pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def installed() -> str:
    """The Prometheus binary (and promtool beside it); skips when they are not installed."""
    if not os.access(PROMETHEUS, os.X_OK) or not os.access(PROMTOOL, os.X_OK):
        pytest.skip(
            f"Prometheus is not installed ({PROMETHEUS}, {PROMTOOL}): apt-get install "
            "prometheus (CI does, see .ci/run)"
        )
    return PROMETHEUS


@pytest.fixture(scope="module")
def stack(
    installed: str, bootstrap: str, tmp_path_factory: pytest.TempPathFactory, yaml: ModuleType
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus")
    base = isolated_settings(
        bootstrap,
        workdir / "state",
        checkpoint_every_seconds=1.0,  # checkpoint histogram and counter move every second
    )
    tag = base.consumer.group_id
    settings = base.model_copy(
        update=dict(
            # The consumer publishes model state (every second) to a topic of this module's own.
            topics=base.topics.model_copy(update={"model_state": f"{tag}.model-state"}),
            # Windows of 100 events: the data detectors alarm early and often. The first alarm
            # after 10000 events (a few seconds of traffic) decides a retrain (one alarm of a data
            # detector suffices); the cooldown keeps it the only one.
            drift=DriftConfig(window=100, warmup_events=10_000, cooldown_events=10**9),
            # A small retrain: a few thousand events of history, two trials.
            retrain=RetrainConfig(
                registry_dir=workdir / "registry",
                holdout_events=1000,
                validation_events=1000,
                trials=2,
                timeout_seconds=20.0,
                group_id=f"r-{tag}",
            ),
        )
    )
    ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
    metrics = PipelineMetrics()
    metrics_port = metrics.serve("127.0.0.1", 0)
    retrain_metrics = RetrainMetrics()
    retrainer_port = retrain_metrics.serve("127.0.0.1", 0)
    serve_port = free_port()
    serve_url = f"http://127.0.0.1:{serve_port}"
    traffic = Traffic(settings, metrics, retrain_metrics, serve_url)
    config = workdir / "prometheus.yml"
    ports = {JOB: metrics_port, RETRAINER_JOB: retrainer_port, SERVE_JOB: serve_port}
    config.write_text(json.dumps(scrape_config(yaml, ports), indent=2))  # JSON is YAML
    prom = start_prometheus(installed, config, workdir)  # before the pipeline's threads: it forks
    serve = start_serve(settings, serve_port, workdir)
    try:
        # Prometheus must see every counter at its initial value before the traffic moves it,
        # or rate() and increase() miss the first step (a retrain request, a retrain).
        for job in ports:
            if job == SERVE_JOB:
                continue  # it takes a few seconds to start, and nothing asks it before
            wait_until(
                f"a first scrape of {job}",
                functools.partial(at_least, prom, f'up{{job="{job}"}}', 1),
                30,
                context=prom.log_tail,
            )
        traffic.start()
        try:
            yield Stack(
                prom,
                f"http://127.0.0.1:{metrics_port}/metrics",
                f"http://127.0.0.1:{retrainer_port}/metrics",
                f"{serve_url}/metrics",
                traffic,
            )
        finally:
            traffic.close()
    finally:
        stop_prometheus(prom)
        stop_serve(serve)


def start_serve(settings: Settings, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``feedback-loop serve`` on ``port``, following the settings' model-state topic."""
    env = {**child_env(settings), "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or ""}
    with (workdir / "serve.log").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.app", "serve", "--port", str(port),
             "--log-level", "WARNING"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig(),
        )  # fmt: skip


def stop_serve(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def values(answer: dict[str, Any]) -> list[float]:
    """The sample values of an instant-query answer (vector or scalar)."""
    data = answer.get("data", {})
    if data.get("resultType") == "scalar":
        return [float(data["result"][1])]
    return [float(series["value"][1]) for series in data.get("result", [])]


def range_values(prom: Prometheus, expr: str, seconds: float = 300) -> list[dict[str, Any]]:
    """The series of a range query over the last ``seconds``, as Grafana runs annotations."""
    end = time.time()
    answer = prom.get(
        "/api/v1/query_range",
        query=expr,
        start=f"{end - seconds:.3f}",
        end=f"{end:.3f}",
        step="1",
    )
    assert answer["status"] == "success", (expr, answer)
    series: list[dict[str, Any]] = answer["data"]["result"]
    return series


def at_least(prom: Prometheus, expr: str, minimum: float) -> bool:
    """The query's first value is at least ``minimum``."""
    got = values(prom.query(expr))
    return bool(got) and got[0] >= minimum


@pytest.fixture(scope="module")
def scraped(stack: Stack) -> Stack:
    """The stack once Prometheus has scraped the consumer and the retrainer a few times."""
    prom = stack.prometheus
    for job in (JOB, RETRAINER_JOB, SERVE_JOB):
        scrapes = f'sum_over_time(up{{job="{job}"}}[1m])'
        stack.wait_for(
            f"at least 5 successful scrapes of {job}",
            functools.partial(at_least, prom, scrapes, 5),
            30,
        )
    targets = prom.get("/api/v1/targets")["data"]["activeTargets"]
    assert sorted(t["labels"]["job"] for t in targets) == sorted((JOB, RETRAINER_JOB, SERVE_JOB))
    stack.wait_for(
        "every target up",
        lambda: all(
            t["health"] == "up" for t in prom.get("/api/v1/targets")["data"]["activeTargets"]
        ),
        10,
    )
    return stack


def panel_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = board["panels"] + [p for row in board["panels"] for p in row.get("panels", [])]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def annotation_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(a["name"], a["expr"]) for a in board["annotations"]["list"] if "expr" in a]


def alert_exprs(yaml: ModuleType) -> list[tuple[str, str]]:
    alerts = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [(r["alert"], r["expr"]) for g in alerts["groups"] for r in g["rules"]]


# --- the tests --------------------------------------------------------------------------------


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
        scraped.wait_for(
            "data in every panel",
            all_have_data,
            DATA_DEADLINE_SECONDS,
        )
    except AssertionError:
        raise AssertionError(
            "dashboard queries without data after "
            f"{DATA_DEADLINE_SECONDS:.0f} s:\n"
            + "\n".join(f"  {k}: {v}" for k, v in problems.items())
        ) from None
    # Both processes are up, and the rate() windows hold at least two samples of each counter
    # (drift signals exist from their first occurrence: wait for them).
    for job in (JOB, RETRAINER_JOB, SERVE_JOB):
        assert values(prom.query(f'min(up{{job="{job}"}})')) == [1.0], job
    windows = {m.groups() for _title, expr in exprs for m in RATE.finditer(expr)}
    assert len(windows) >= 12, windows
    for metric, window in sorted(windows):
        scraped.wait_for(
            f"2 samples of {metric} in {window}",
            functools.partial(at_least, prom, f"min(count_over_time({metric}[{window}]))", 2),
            10,
        )


def test_drift_and_retrain_reach_the_dashboard(scraped: Stack) -> None:
    """Drift alarms, the retrain they decide, its outcome and the annotations of the cycle."""
    prom = scraped.prometheus
    for expr in (
        "sum(feedback_loop_drift_alarms_total)",
        'sum(feedback_loop_drift_signals_total{outcome="decided"})',
        "sum(feedback_loop_retrain_requests_total)",
        'sum(feedback_loop_retrains_total{outcome=~"accepted|rejected"})',
        "feedback_loop_retrain_trials_total",
        "feedback_loop_retrain_duration_seconds_count",
    ):
        scraped.wait_for(
            f"{expr} >= 1",
            functools.partial(at_least, prom, expr, 1),
            DATA_DEADLINE_SECONDS,
        )
    failed = values(prom.query('sum(feedback_loop_retrains_total{outcome="failed"})'))
    assert failed == [0.0], scraped.traffic.consumer.learner.lifecycle.retrains
    # Every drift detector of DriftMonitor.default reports its statistic and threshold.
    detectors = {
        s["metric"]["detector"]
        for s in prom.query("feedback_loop_drift_threshold")["data"]["result"]
    }
    assert len(detectors) == 10, detectors
    annotations = dict(annotation_exprs())
    assert len(annotations) == 2, annotations
    for name, expr in annotations.items():
        assert prom.query(expr)["status"] == "success", (name, expr)
    requested = annotations["Retrain requests"]
    assert range_values(prom, requested), requested
    # An accepted retrain is swapped in: the model version changes (the swaps annotation).
    if at_least(prom, 'sum(feedback_loop_retrains_total{outcome="accepted"})', 1):
        scraped.wait_for(
            "the accepted model swapped in",
            functools.partial(at_least, prom, "max(feedback_loop_model_version)", 1),
            20,
        )
        swapped = annotations["Model swaps"]
        scraped.wait_for(
            "a model-swap annotation",
            lambda: bool(range_values(prom, swapped)),
            10,
        )


def test_traffic_reaches_every_outcome(scraped: Stack) -> None:
    """Dead letters, filtered bots and duplicates all have data (so do their panels)."""
    prom = scraped.prometheus
    for expr in (
        "sum(feedback_loop_events_dead_lettered_total)",
        'feedback_loop_events_filtered_total{reason="bot"}',
        "feedback_loop_events_duplicate_total",
        "sum(feedback_loop_events_applied_total)",
    ):
        scraped.wait_for(
            f"{expr} >= 1",
            functools.partial(at_least, prom, expr, 1),
            DATA_DEADLINE_SECONDS,
        )
    kinds = prom.query("sum by (kind) (feedback_loop_events_dead_lettered_total) > 0")
    assert {s["metric"]["kind"] for s in kinds["data"]["result"]} >= {"malformed_json"}


def test_every_alert_rule_is_valid_and_loaded(scraped: Stack, yaml: ModuleType) -> None:
    prom = scraped.prometheus
    rules = alert_exprs(yaml)
    assert {name for name, _ in rules} >= {
        "ConsumerDown",
        "ConsumerLagHigh",
        "DeadLetterRateHigh",
        "DriftDetected",
        "RetrainFailed",
        "RetrainerDown",
    }
    for name, expr in rules:
        answer = prom.query(expr)
        assert answer["status"] == "success", (name, answer)  # firing or not: may be empty

    def loaded() -> dict[str, dict[str, Any]]:
        groups = prom.get("/api/v1/rules")["data"]["groups"]
        return {r["name"]: r for g in groups for r in g["rules"]}

    scraped.wait_for(
        "every rule evaluated",
        lambda: (
            set(loaded()) == {n for n, _ in rules}
            and all(r["health"] == "ok" for r in loaded().values())
        ),
        20,
    )
    for name, rule in loaded().items():
        assert rule["type"] == "alerting", name
        assert not rule.get("lastError"), (name, rule["lastError"])
    # Healthy consumer and retrainer: both are scraped, so neither Down alert is pending or
    # firing (the rule is evaluated, see above, and inactive).
    for alert in ("ConsumerDown", "RetrainerDown"):
        assert loaded()[alert]["state"] == "inactive", loaded()[alert]
        firing = prom.query(f'ALERTS{{alertname="{alert}"}}')
        assert firing["status"] == "success" and firing["data"]["result"] == [], firing


@pytest.mark.parametrize(
    ("url", "metric"),
    [
        ("metrics_url", b"feedback_loop_drift_statistic"),
        ("retrainer_metrics_url", b"feedback_loop_retrains_total"),
        ("serve_metrics_url", b"feedback_loop_serve_requests_total"),
    ],
)
def test_promtool_accepts_the_exposition(scraped: Stack, url: str, metric: bytes) -> None:
    with urllib.request.urlopen(getattr(scraped, url), timeout=10) as r:
        exposition = r.read()
    assert metric in exposition
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == "", output  # no lint findings at all


@pytest.mark.usefixtures("installed")
def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
