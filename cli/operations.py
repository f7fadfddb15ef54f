"""The operational commands: broker, simulate, retrainer, retrain, rollback, status."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    MetricsPortOpt,
    SeedOpt,
    console,
    fail,
    install_signals,
    log,
    require_cluster,
    settings,
)
from cli.sources import publish, sim_records, simulator
from stream.config import Settings
from stream.observability.logs import setup_logging


def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 9092,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu) until Ctrl-C; data stays in memory."""
    from stream.kafka.broker import EmbeddedBroker, ensure_topics

    cfg = Settings()
    stop = threading.Event()
    with EmbeddedBroker(port=port) as b:
        ensure_topics(b.bootstrap_servers, cfg.topics)
        console.print(f"export KAFKA_BOOTSTRAP_SERVERS={b.bootstrap_servers}")
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.2):  # a timeout, so the main thread gets to run the handlers
            pass
    console.print("broker stopped")


def simulate(
    events: Annotated[int, typer.Option("--events", min=1)] = 100_000,
    seed: SeedOpt = 42,
    bot_share: float = 0.02,
    drift_at: int | None = None,
) -> None:
    """Publish simulated profiles and events to KAFKA_BOOTSTRAP_SERVERS."""
    cfg = settings()
    require_cluster(cfg, "simulate")
    sim = simulator(seed, bot_share, drift_at)
    total = sim.config.n_users + sim.config.n_items + events
    publish(cfg, sim_records(sim, events), total)


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
    """Ask the running consumers to request a retrain now (manual trigger)."""
    from stream.events import RetrainTrigger
    from stream.kafka.control import publish_control

    cfg = settings()
    bootstrap = require_cluster(cfg, "retrain")
    publish_control(bootstrap, cfg.topics.control, RetrainTrigger(reason=reason))
    console.print(f"retrain trigger published on {cfg.topics.control}")


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
    publish_control(bootstrap, cfg.topics.control, ModelActivated(version=version))
    console.print(f"rolled back to model version {version}; consumers will swap it in")


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
