"""The operational commands: broker, simulate, retrainer, retrain, rollback, forget, status."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    MetricsPortOpt,
    ReportOpt,
    SeedOpt,
    console,
    fail,
    install_signals,
    log,
    require_cluster,
    settings,
)
from cli.sources import (
    CLOSED_LOOP_RATE,
    DEFAULT_POLICIES,
    ClosedLoopOpt,
    ClosedLoopSpec,
    ExplorationOpt,
    FatigueOpt,
    PoliciesOpt,
    PositionDecayOpt,
    WindowOpt,
    loop_config,
    publish,
    sim_records,
    simulator,
    with_exploration,
)
from stream.config import Settings
from stream.observability.logs import setup_logging


def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 9092,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu) until Ctrl-C; data stays in memory."""
    from stream.kafka.broker import EmbeddedBroker, ensure_topics

    cfg = settings()
    stop = threading.Event()
    with EmbeddedBroker(port=port) as b:
        ensure_topics(b.bootstrap_servers, cfg.topics, kafka=cfg.kafka)
        console.print(f"export KAFKA_BOOTSTRAP_SERVERS={b.bootstrap_servers}")
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.2):  # a timeout, so the main thread gets to run the handlers
            code = b.exit_code()
            if code is not None:
                # Its data is gone with it: clients must not go on as if it were only slow.
                raise fail(f"the broker process exited with code {code}; its data is lost")
    console.print("broker stopped")


def simulate(
    events: Annotated[int, typer.Option("--events", min=1)] = 100_000,
    seed: SeedOpt = 42,
    bot_share: float = 0.02,
    drift_at: int | None = None,
    closed_loop: ClosedLoopOpt = False,
    rate: Annotated[
        float | None,
        typer.Option(help="Closed loop: events per second (default: 1500).", min=0.001),
    ] = None,
    policies: PoliciesOpt = DEFAULT_POLICIES,
    exploration: ExplorationOpt = None,
    window: WindowOpt = 400,
    fatigue: FatigueOpt = 0.85,
    position_decay: PositionDecayOpt = 0.5,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            help="Closed loop: Prometheus /metrics port of the loop's "
            "ground truth (0 = any free port).",
        ),
    ] = 9110,
    report: ReportOpt = None,
) -> None:
    """Publish simulated profiles and events to KAFKA_BOOTSTRAP_SERVERS.

    With --closed-loop, users are shown what the cluster's live models recommend: this
    process follows the model-state topic (as `serve` does) and reports ground truth per
    policy (a consumer must be running and publishing model state).
    """
    cfg = with_exploration(settings(), exploration)
    bootstrap = require_cluster(cfg, "simulate")
    sim = simulator(seed, bot_share, drift_at)
    total = sim.config.n_users + sim.config.n_items + events
    if not closed_loop:
        publish(cfg, sim_records(sim, events), total)
        return
    _simulate_closed_loop(
        cfg, bootstrap, ClosedLoopSpec(
            sim, loop_config(policies, window, rate or CLOSED_LOOP_RATE, fatigue,
                             position_decay), events,
        ), total, metrics_port, report,
    )  # fmt: skip


def _simulate_closed_loop(
    cfg: Settings,
    bootstrap: str,
    spec: ClosedLoopSpec,
    total: int,
    metrics_port: int,
    report: Path | None,
) -> None:
    from prometheus_client import CollectorRegistry

    from cli.progress import print_closed_loop
    from stream.kafka.broker import ensure_topics
    from stream.observability.metrics import serve

    ensure_topics(bootstrap, cfg.topics, kafka=cfg.kafka)
    registry = CollectorRegistry()
    port = serve(registry, cfg.metrics.host, metrics_port)
    console.print(f"closed-loop metrics on http://{cfg.metrics.host}:{port}/metrics")
    console.print(f"waiting for the model state on {cfg.topics.model_state}...")
    with spec.start(cfg, bootstrap, registry) as run:
        loop = run.loop
        publish(
            cfg, loop.records(spec.events), total, on_stop=loop.close,
            status=loop.metrics.progress_text,
        )  # fmt: skip
        section = run.report()
    print_closed_loop(section)
    if report is not None:
        from consumers.pipeline import write_report

        write_report(report, {"closed_loop": section, "config": {"command": "simulate"}})
        console.print(f"report written to [bold]{report}[/]")


def retrainer(
    metrics_port: MetricsPortOpt = 9109,
    once: Annotated[bool, typer.Option(help="Exit after one retrain request.")] = False,
    log_level: str = "INFO",
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")] = False,
) -> None:
    """The retrainer worker: serves retrain requests from the control topic until stopped."""
    from consumers.retrainer import RetrainWorker
    from stream.observability.metrics import RetrainMetrics

    setup_logging(log_level, json_logs)
    cfg = settings()
    bootstrap = require_cluster(cfg, "retrainer")
    metrics = RetrainMetrics()
    port = metrics.serve(cfg.metrics.host, metrics_port)
    log.info("retrainer metrics on http://%s:%d/metrics", cfg.metrics.host, port)
    worker = RetrainWorker(cfg, bootstrap, metrics)
    install_signals(worker.request_stop)
    worker.run(max_requests=1 if once else None)


def retrain(
    reason: Annotated[str, typer.Option(help="Why (logged and reported).")] = "manual",
) -> None:
    """Ask the consumers to request a retrain (manual trigger), queued on the control topic.

    The control topic is durable: consumers act on the trigger when they next read it (after
    the retrain in progress, if any), and the retrainer serves the request when it runs.
    """
    from stream.events import RetrainTrigger
    from stream.kafka.control import publish_control

    cfg = settings()
    bootstrap = require_cluster(cfg, "retrain")
    publish_control(bootstrap, cfg.topics.control, RetrainTrigger(reason=reason), kafka=cfg.kafka)
    console.print(
        f"retrain trigger queued on {cfg.topics.control}: each consumer requests a retrain "
        "once no other is in progress; the retrainer serves it when it runs"
    )


def rollback(
    registry_dir: Annotated[
        Path | None, typer.Option(help="Model registry directory (default: settings).")
    ] = None,
) -> None:
    """Make the previous model version current again and tell the consumers to load it."""
    from stream.events import ModelActivated
    from stream.kafka.control import publish_control
    from stream.lifecycle import ModelRegistry, RegistryError

    cfg = settings()
    bootstrap = require_cluster(cfg, "rollback")
    registry = ModelRegistry(registry_dir or cfg.retrain.registry_dir)
    try:
        version = registry.rollback()
    except RegistryError as err:
        raise fail(str(err)) from None
    publish_control(bootstrap, cfg.topics.control, ModelActivated(version=version), kafka=cfg.kafka)
    console.print(f"rolled back to model version {version}; consumers will swap it in")


def forget(
    user_id: Annotated[str, typer.Argument(help="The user to erase (a deletion request).")],
) -> None:
    """Erase a user: the consumers purge the user's state and filter their later events."""
    from stream.events import ForgetUser
    from stream.kafka.control import publish_control

    if not user_id:
        raise fail("the user id must not be empty")
    cfg = settings()
    bootstrap = require_cluster(cfg, "forget")
    publish_control(bootstrap, cfg.topics.control, ForgetUser(user_id=user_id), kafka=cfg.kafka)
    console.print(f"forget request published on {cfg.topics.control}")


def status(
    metrics_url: Annotated[
        str, typer.Option("--metrics-url", help="The consumer's /metrics endpoint.")
    ] = "http://127.0.0.1:9108/metrics",
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0, help="Scrape twice this many seconds apart for rates (0: once)."
        ),
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Lag, throughput, dead letters, scores (and drift) of a running consumer, from /metrics."""
    import orjson

    from stream.observability.status import StatusError, collect, render

    try:
        info = collect(metrics_url, interval)
    except StatusError as err:
        raise fail(str(err)) from None
    if as_json:
        typer.echo(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(render(info))
