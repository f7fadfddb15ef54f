"""The deployment files agree with the code: compose, Dockerfile, Prometheus, Grafana.

No Docker needed. YAML files need PyYAML (skipped without it); `docker-compose config` and
promtool checks run when those binaries are on PATH (Debian: docker-compose, prometheus).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.serve_metrics import ServeMetrics
from producers.simulator.loop_metrics import LoopMetrics
from stream.config import ServingConfig, Topics
from stream.observability.metrics import PipelineMetrics, RetrainMetrics
from stream.serving.state import ServingState

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARD = ROOT / "dashboards" / "feedback-loop.json"
GENERATOR = ROOT / "dashboards" / "generate.py"

METRIC_NAME = re.compile(r"feedback_loop_[a-z0-9_]+")
JOB = "feedback-loop-consumer"
RETRAINER_JOB = "feedback-loop-retrainer"
CONSUMER_PORT = 9108  # `feedback-loop consume`'s default --metrics-port
RETRAINER_PORT = 9109  # `feedback-loop retrainer`'s default --metrics-port
SERVE_PORT = ServingConfig().port  # `feedback-loop serve`'s default --port


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yaml() -> ModuleType:
    return pytest.importorskip("yaml")


def load_yaml(yaml: ModuleType, path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(yaml: ModuleType) -> dict[str, Any]:
    return load_yaml(yaml, COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def alerts(yaml: ModuleType) -> dict[str, Any]:
    return load_yaml(yaml, ALERTS)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a list of K=V."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: cond or {} for name, cond in deps.items()}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    nested = [p for row in panels if row.get("type") == "row" for p in row.get("panels", [])]
    return panels + nested


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def annotation_queries() -> list[dict[str, Any]]:
    """The dashboard's Prometheus annotation queries (not Grafana's built-in one)."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [a for a in board["annotations"]["list"] if not a.get("builtIn")]


def alert_rules(alerts: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in alerts["groups"] for rule in group["rules"]]


def exposed_series_names() -> set[str]:
    """Every series name the consumer's, the retrainer's, the server's and the closed loop's
    registries can expose."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    loop = CollectorRegistry()
    LoopMetrics(("model",), 1, registry=loop)
    registries = (
        PipelineMetrics().registry,
        RetrainMetrics().registry,
        ServeMetrics(ServingState(), lambda: False).registry,
        loop,
    )
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_has_the_services(services: dict[str, Any]) -> None:
    expected = {
        "kafka",
        "kafka-init",
        "consumer",
        "retrainer",
        "simulator",
        "serve",
        "prometheus",
        "grafana",
    }
    assert expected <= set(services)


def test_compose_depends_on_existing_services(services: dict[str, Any]) -> None:
    edges = [(name, dep) for name, service in services.items() for dep in depends_on(service)]
    assert edges, "no service depends on another"
    for name, dep in edges:
        assert dep in services, f"{name} depends on unknown service {dep!r}"
        assert dep != name


def test_compose_waits_for_topics(services: dict[str, Any]) -> None:
    assert depends_on(services["kafka-init"])["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in services["kafka"]
    for name in ("consumer", "retrainer", "simulator", "serve"):
        cond = depends_on(services[name]).get("kafka-init", {}).get("condition")
        assert cond == "service_completed_successfully", name


def test_kafka_init_creates_every_topic(services: dict[str, Any]) -> None:
    init = services["kafka-init"]
    script = json.dumps([init.get("entrypoint"), init.get("command")])
    assert "kafka-topics.sh" in script
    topics = Topics()
    for topic in (topics.events, topics.dead_letters, topics.control, topics.model_state):
        assert f"create {topic} " in script, topic
    # A new server bootstraps from the latest record of each entity.
    assert f"create {topics.model_state} 1 --config cleanup.policy=compact" in script
    assert environment(init)["EVENTS_PARTITIONS"].endswith(":-1}")


def test_consumer_and_simulator(services: dict[str, Any]) -> None:
    consumer, simulator = services["consumer"], services["simulator"]
    env = environment(consumer)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["FEEDBACK_LOOP_METRICS__HOST"] == "0.0.0.0"
    assert consumer["command"] == ["consume"]
    assert any(str(v).endswith(":/state") for v in consumer.get("volumes", []))
    assert any(str(p).split(":")[-1] == str(CONSUMER_PORT) for p in consumer.get("ports", []))
    assert environment(simulator)["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert simulator["command"][0] == "simulate"
    assert simulator["restart"] == "no"
    for service in (consumer, simulator):
        assert service["build"]["context"] == "."


def test_serve_service(services: dict[str, Any]) -> None:
    serve, consumer = services["serve"], services["consumer"]
    assert serve["command"] == ["serve", "--host", "0.0.0.0", "--port", str(SERVE_PORT)]
    assert serve["build"] == consumer["build"]
    assert environment(serve)["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert any(str(p).split(":")[-1] == str(SERVE_PORT) for p in serve.get("ports", []))
    assert "/healthz" in json.dumps(serve["healthcheck"]["test"])


def test_dockerfile_exposes_the_ports() -> None:
    exposed = re.search(r"^EXPOSE (.+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert exposed is not None
    assert {str(CONSUMER_PORT), str(SERVE_PORT)} <= set(exposed.group(1).split())


def test_retrainer_shares_the_registry(compose: dict[str, Any], services: dict[str, Any]) -> None:
    consumer, retrainer = services["consumer"], services["retrainer"]
    assert retrainer["command"] == ["retrainer", "--metrics-port", str(RETRAINER_PORT)]
    assert retrainer["build"]["context"] == consumer["build"]["context"] == "."
    assert retrainer["build"].get("dockerfile") == consumer["build"].get("dockerfile")
    env = environment(retrainer)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["FEEDBACK_LOOP_METRICS__HOST"] == "0.0.0.0"
    assert any(str(p).split(":")[-1] == str(RETRAINER_PORT) for p in retrainer.get("ports", []))
    # One named volume holds the registry: the retrainer writes versions, the consumer loads them.
    registries = set()
    for service in (consumer, retrainer):
        assert environment(service)["FEEDBACK_LOOP_RETRAIN__REGISTRY_DIR"] == "/registry"
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
        registries.add(mounts["/registry"])
    (volume,) = registries
    assert volume in (compose.get("volumes") or {}), volume
    assert "registry" in volume


def test_compose_bind_mounts_exist(services: dict[str, Any]) -> None:
    binds = [
        (name, source)
        for name, service in services.items()
        for source in (str(volume).split(":")[0] for volume in service.get("volumes", []))
        if source.startswith(".")
    ]
    assert binds, "no bind mounts found: the compose file's volumes changed shape"
    for name, source in binds:
        assert (ROOT / source).exists(), f"{name}: {source} is missing"


def test_grafana_provisioning(yaml: ModuleType, services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    env = environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = dict(str(v).split(":")[:2] for v in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (datasource,) = load_yaml(yaml, PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["uid"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(yaml, PROVISIONING / "dashboards" / "feedback-loop.yml")["providers"]
    assert provider["options"]["path"] == mounts["./dashboards"]
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        f"{mounts['./dashboards']}/{DASHBOARD.name}"
    )


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not on PATH")
def test_docker_compose_config() -> None:
    result = run("docker-compose", "-f", str(COMPOSE), "config", "-q")
    assert result.returncode == 0, result.stderr


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    last = dict(instructions)  # the instruction that takes effect
    assert last["FROM"].startswith("python:3.11-slim")
    assert json.loads(last["ENTRYPOINT"]) == ["feedback-loop"]
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(kw == "VOLUME" and "/state" in rest for kw, rest in instructions)
    assert any(kw == "RUN" and "pip install" in rest and " ." in rest for kw, rest in instructions)
    sources = [
        source
        for kw, rest in instructions
        if kw == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert sources, "no COPY from the build context"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY source {source} is missing"


# --- dashboard -------------------------------------------------------------------------------


def test_dashboard_is_the_generator_output() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == generator().render(), (
        "dashboards/feedback-loop.json is out of date: run python dashboards/generate.py"
    )


def test_dashboard_shape() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] == "feedback-loop"
    assert board["schemaVersion"] == 39
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert [p["title"] for p in panels if p["type"] == "row"] == [
        "Overview", "Throughput", "Latency", "Consumer lag", "Prequential quality",
        "Checkpoints", "Drift and retraining", "Retrainer", "Closed loop", "Serving",
    ]  # fmt: skip
    assert len([p for p in panels if p["type"] != "row"]) >= 30
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "prometheus"
            assert t["expr"].strip()
    exprs = "\n".join(dashboard_exprs())
    assert "sum by (type) (rate(feedback_loop_events_consumed_total[1m]))" in exprs
    # Drift: statistic and threshold of both kinds of detector, alarms, signals, retrains.
    for kind in ('detector=~"engagement_logloss_.+|rating_se_.+"', 'detector=~".+_(js|psi)"'):
        for metric in ("statistic", "threshold"):
            assert f"feedback_loop_drift_{metric}{{{kind}}}" in exprs, (metric, kind)
    for metric in (
        "drift_state",
        "drift_alarms_total",
        "drift_signals_total",
        "model_version",
        "retrain_requests_total",
        "model_swaps_total",
        "retrains_total",
        "retrain_duration_seconds_bucket",
        "retrain_trials_total",
        "retrain_best_quality_ratio",
        "retrain_in_progress",
    ):
        assert f"feedback_loop_{metric}" in exprs, metric
    assert f'up{{job="{RETRAINER_JOB}"}}' in exprs
    annotations = {a["expr"]: a for a in annotation_queries()}
    assert set(annotations) == {
        "changes(feedback_loop_model_version[1m]) > 0",
        "increase(feedback_loop_retrain_requests_total[1m]) > 0",
    }
    for a in annotations.values():
        assert a["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        assert a["enable"] and a["name"]
    for metric in ("rmse", "mae", "logloss", "auc", "recall_at_10"):
        assert f"max by (model) (feedback_loop_prequential_{metric})" in exprs
    for hist in ("batch_processing_seconds", "event_latency_seconds"):
        for q in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({q}, sum by (le) (rate(feedback_loop_{hist}_bucket" in exprs


# --- metric names --------------------------------------------------------------------------


def check_names(exprs: list[str], where: str) -> set[str]:
    known = exposed_series_names()
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    unknown = sorted(used - known)
    assert not unknown, f"{where} uses metrics that stream/metrics.py does not define: {unknown}"
    return used


def test_dashboard_metric_names_exist() -> None:
    exprs = dashboard_exprs() + [a["expr"] for a in annotation_queries()]
    used = check_names(exprs, "the dashboard")
    assert len(used) >= 10, used  # the regex does find the names


def test_alert_metric_names_exist(alerts: dict[str, Any]) -> None:
    rules = alert_rules(alerts)
    assert {r["alert"] for r in rules} >= {
        "ConsumerDown",
        "ConsumerLagHigh",
        "DeadLetterRateHigh",
        "DriftDetected",
        "RetrainFailed",
        "RetrainerDown",
    }
    used = check_names([r["expr"] for r in rules], "alerts.yml")
    assert {
        "feedback_loop_consumer_lag_messages",
        "feedback_loop_events_dead_lettered_total",
        "feedback_loop_events_consumed_total",
        "feedback_loop_drift_state",
        "feedback_loop_retrains_total",
    } <= used


def test_metric_name_check_catches_typos() -> None:
    with pytest.raises(AssertionError, match="feedback_loop_events_consumed"):
        check_names(["rate(feedback_loop_events_consumed[1m])"], "test")  # no _total
    with pytest.raises(AssertionError, match="feedback_loop_prequential_rmse_bucket"):
        check_names(["feedback_loop_prequential_rmse_bucket"], "test")


def test_prometheus_scrapes_the_consumer(yaml: ModuleType, services: dict[str, Any]) -> None:
    config = load_yaml(yaml, PROMETHEUS)
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    assert job["scrape_interval"] == "5s"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"consumer:{CONSUMER_PORT}"]
    mounts = dict(str(v).split(":")[:2] for v in services["prometheus"]["volumes"])
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert any(f'job="{JOB}"' in r["expr"] for r in alert_rules(load_yaml(yaml, ALERTS)))


def test_prometheus_scrapes_the_retrainer(yaml: ModuleType, services: dict[str, Any]) -> None:
    config = load_yaml(yaml, PROMETHEUS)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == RETRAINER_JOB]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"retrainer:{RETRAINER_PORT}"]
    assert "retrainer" in depends_on(services["prometheus"])
    rules = alert_rules(load_yaml(yaml, ALERTS))
    assert any(f'job="{RETRAINER_JOB}"' in r["expr"] for r in rules)


# --- promtool --------------------------------------------------------------------------------

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH")


@needs_promtool
def test_promtool_check_rules_and_config() -> None:
    result = run("promtool", "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    result = run("promtool", "check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_dashboard_queries_are_valid_promql(yaml: ModuleType, tmp_path: Path) -> None:
    exprs = dashboard_exprs() + [a["expr"] for a in annotation_queries()]
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run("promtool", "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alerts_fire_when_they_should(
    yaml: ModuleType, alerts: dict[str, Any], tmp_path: Path
) -> None:
    # Annotations are prose: leave them out and test what the rules do.
    stripped = {
        "groups": [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in alerts["groups"]
        ]
    }
    rules_path = tmp_path / "alerts.yml"
    rules_path.write_text(yaml.safe_dump(stripped))
    main = f'job="{JOB}", instance="consumer:9108"'
    other = f'job="{JOB}", instance="other:9108"'
    retrainer = f'job="{RETRAINER_JOB}", instance="retrainer:{RETRAINER_PORT}"'
    tests = {
        "rule_files": [str(rules_path)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"up{{{main}}}", "values": "1 1 0 0 0 0 0"},
                    {"series": f"up{{{other}}}", "values": "1x6"},
                    # 60000 + 60000: each partition below the threshold, their sum above.
                    {
                        "series": f'feedback_loop_consumer_lag_messages{{{main}, partition="0"}}',
                        "values": "0 60000x12",
                    },
                    {
                        "series": f'feedback_loop_consumer_lag_messages{{{main}, partition="1"}}',
                        "values": "0 60000x12",
                    },
                    {
                        "series": f'feedback_loop_consumer_lag_messages{{{other}, partition="0"}}',
                        "values": "90000x12",
                    },
                    # 10% dead-lettered on main, 1% on other.
                    {
                        "series": f'feedback_loop_events_consumed_total{{{main}, type="rating"}}',
                        "values": "0+1000x15",
                    },
                    {
                        "series": (
                            f'feedback_loop_events_dead_lettered_total{{{main}, kind="decode"}}'
                        ),
                        "values": "0+100x15",
                    },
                    {
                        "series": f'feedback_loop_events_consumed_total{{{other}, type="rating"}}',
                        "values": "0+1000x15",
                    },
                    {
                        "series": (
                            f'feedback_loop_events_dead_lettered_total{{{other}, kind="decode"}}'
                        ),
                        "values": "0+10x15",
                    },
                    # dwell_psi in alarm from 2m to 5m on main (max by detector: one alert for
                    # both consumers); rating_se_adwin only for one minute, too short to fire.
                    {
                        "series": f'feedback_loop_drift_state{{{main}, detector="dwell_psi"}}',
                        "values": "0 0 1 1 1 1 0 0",
                    },
                    {
                        "series": f'feedback_loop_drift_state{{{other}, detector="dwell_psi"}}',
                        "values": "0x7",
                    },
                    {
                        "series": (
                            f'feedback_loop_drift_state{{{main}, detector="rating_se_adwin"}}'
                        ),
                        "values": "0 1 0 0 0 0 0 0",
                    },
                    # One failed retrain at 3m; accepted ones all along do not alert.
                    {
                        "series": f'feedback_loop_retrains_total{{{retrainer}, outcome="failed"}}',
                        "values": "0 0 0 1x20",
                    },
                    {
                        "series": (
                            f'feedback_loop_retrains_total{{{retrainer}, outcome="accepted"}}'
                        ),
                        "values": "0+1x22",
                    },
                    {"series": f"up{{{retrainer}}}", "values": "1 1 0 0 0 0 0"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "ConsumerDown", "exp_alerts": []},
                    {
                        "eval_time": "4m",
                        "alertname": "ConsumerDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "job": JOB,
                                    "instance": "consumer:9108",
                                }
                            }
                        ],
                    },
                    {"eval_time": "3m", "alertname": "ConsumerLagHigh", "exp_alerts": []},
                    {
                        "eval_time": "8m",
                        "alertname": "ConsumerLagHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": JOB,
                                    "instance": "consumer:9108",
                                }
                            }
                        ],
                    },
                    {"eval_time": "3m", "alertname": "DeadLetterRateHigh", "exp_alerts": []},
                    {
                        "eval_time": "12m",
                        "alertname": "DeadLetterRateHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": JOB,
                                    "instance": "consumer:9108",
                                }
                            }
                        ],
                    },
                    {"eval_time": "1m", "alertname": "DriftDetected", "exp_alerts": []},
                    {"eval_time": "2m", "alertname": "DriftDetected", "exp_alerts": []},
                    {
                        "eval_time": "4m",
                        "alertname": "DriftDetected",
                        "exp_alerts": [
                            {"exp_labels": {"severity": "info", "detector": "dwell_psi"}}
                        ],
                    },
                    {"eval_time": "7m", "alertname": "DriftDetected", "exp_alerts": []},
                    {"eval_time": "2m", "alertname": "RetrainFailed", "exp_alerts": []},
                    {
                        "eval_time": "4m",
                        "alertname": "RetrainFailed",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": RETRAINER_JOB,
                                    "instance": f"retrainer:{RETRAINER_PORT}",
                                    "outcome": "failed",
                                }
                            }
                        ],
                    },
                    {"eval_time": "20m", "alertname": "RetrainFailed", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "RetrainerDown", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "RetrainerDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": RETRAINER_JOB,
                                    "instance": f"retrainer:{RETRAINER_PORT}",
                                }
                            }
                        ],
                    },
                ],
            }
        ],
    }
    tests_path = tmp_path / "alerts-test.yml"
    tests_path.write_text(yaml.safe_dump(tests))
    result = run("promtool", "test", "rules", str(tests_path))
    assert result.returncode == 0, result.stdout + result.stderr
