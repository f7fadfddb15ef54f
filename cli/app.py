"""The ``feedback-loop`` command line.

    feedback-loop demo --events 100000 --report r.json   # everything, on the embedded broker
    feedback-loop broker                                 # a standalone embedded broker
    feedback-loop simulate --events 100000               # publish simulated events
    feedback-loop replay u.data --format movielens-100k  # publish a file's events
    feedback-loop consume --until-end --report r.json    # the long-running consumer
    feedback-loop evaluate u.data                        # the models over a file, no broker
    feedback-loop status                                 # a running consumer, from /metrics
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stream.config import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Real-time personalization pipeline: feedback events -> Kafka -> online models.",
)
console = Console(stderr=True)
log = logging.getLogger("feedback_loop")

ReportOpt = Annotated[
    Path | None, typer.Option("--report", help="Write a JSON summary to this file.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random source.")]
MetricsPortOpt = Annotated[
    int, typer.Option("--metrics-port", help="Prometheus /metrics port (0 = any free port).")
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Checkpoint directory (model state + offsets)."),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="movielens-100k, movielens-csv, recbole or events; guessed when omitted.",
    ),
]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _settings(
    state_dir: Path | None = None, seed: int | None = None, registry_in_state: bool = False
) -> Settings:
    settings = Settings()
    if state_dir is not None:
        settings.consumer = settings.consumer.model_copy(update={"state_dir": state_dir})
    if registry_in_state:
        settings.retrain = settings.retrain.model_copy(
            update={"registry_dir": settings.consumer.state_dir / "registry"}
        )
    if seed is not None:
        settings.model = settings.model.model_copy(update={"seed": seed})
    return settings


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def _require_cluster(settings: Settings, command: str) -> str:
    if not settings.bootstrap_servers:
        raise _fail(
            f"`{command}` needs a running Kafka: set KAFKA_BOOTSTRAP_SERVERS (for example to "
            "the address printed by `feedback-loop broker`). The embedded broker keeps data "
            "in memory only, so `demo` and `replay` start their own when it is unset."
        )
    return settings.bootstrap_servers


def _install_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, _frame: object) -> None:
        console.print(f"[yellow]{signal.Signals(signum).name}: stopping after this batch...[/]")
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class LiveProgress:
    """A progress bar with the live prequential scores, updated at most 10 times a second."""

    def __init__(self, total: int | None, label: str) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[scores]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(label, total=total, scores="")
        self._last = 0.0
        self._started = time.perf_counter()

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, learner: Any, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        s, c = learner.scores(), learner.counts
        rate = c.consumed / max(now - self._started, 1e-9)
        parts = [f"{rate:,.0f} ev/s"]
        parts += [f"{k}={v:.3f}" for k, v in s.items() if v is not None]
        if c.dead_lettered:
            parts.append(f"dlq={c.dead_lettered}")
        life = getattr(learner, "lifecycle", None)
        if life is not None:
            if life.alarms:
                parts.append(f"alarms={len(life.alarms)}")
            if life.pending is not None:
                parts.append("[magenta]retraining[/]")
            if life.version:
                parts.append(f"[green]model v{life.version}[/]")
        self.progress.update(self.task, completed=c.consumed, scores=" ".join(parts))


def _print_summary(report: dict[str, Any]) -> None:
    table = Table(title="feedback-loop summary", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("baseline", justify="right")
    base = report.get("baseline", {})
    for key in ("consumed", "applied", "dead_lettered", "filtered", "duplicates"):
        table.add_row(key, f"{report[key]:,}", "")
    for key in ("rmse", "mae", "logloss", "auc", "recall_at_10"):
        val = report.get(key)
        ref = base.get(key) if key != "auc" else 0.5
        table.add_row(
            key,
            "-" if val is None else f"{val:.4f}",
            "" if ref is None else f"{ref:.4f}",
        )
    table.add_row("events_per_second", f"{report['events_per_second']:,.0f}", "")
    if "drift_alarms" in report:
        table.add_row("drift alarms", str(len(report["drift_alarms"])), "")
        done = [r for r in report["retrains"] if r.get("status") != "requested"]
        table.add_row("retrains (finished/requested)", f"{len(done)}/{len(report['retrains'])}", "")
        table.add_row("swaps", str(len(report["swaps"])), "")
        table.add_row("model version", str(report["model_version"]), "")
    table.add_row("counts reconcile", str(report.get("reconciles")), "")
    console.print(table)


def _finish(report: dict[str, Any], path: Path | None, learner: Any = None) -> None:
    from consumers.pipeline import write_report

    _print_summary(report)
    if path is not None:
        write_report(path, report)
        console.print(f"report written to [bold]{path}[/]")
        if learner is not None:
            from consumers.plot import plot_report

            learner.close_timeline()
            png = plot_report(learner.timeline, report, path.with_suffix(".png"))
            console.print(f"plot written to [bold]{png}[/]")


def _start_retrainer(settings: Settings, bootstrap: str) -> subprocess.Popen[bytes]:
    """The retrainer as a child process (its own core, its own GIL), logging to a file."""
    from stream.config import settings_env

    env = {**os.environ, **settings_env(settings), "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    log_path = settings.consumer.state_dir / "retrainer.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"retrainer started (log: {log_path})")
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.app", "retrainer", "--metrics-port", "0"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )


def _run_on_embedded_or_cluster(
    settings: Settings,
    records: Iterable[Any],
    total: int | None,
    label: str,
    metrics_port: int,
    report: Path | None,
    config: dict[str, Any],
    retrainer: bool = True,
    rate: float | None = None,
) -> None:
    from consumers.pipeline import build_report, run_pipeline
    from stream.kafka.broker import kafka_cluster, stop_process
    from stream.observability.metrics import PipelineMetrics

    metrics = PipelineMetrics()
    port = metrics.serve(settings.metrics.host, metrics_port)
    console.print(f"metrics on http://{settings.metrics.host}:{port}/metrics")
    worker = None
    with kafka_cluster(settings) as bootstrap:
        console.print(f"broker at {bootstrap} (embedded: {not settings.bootstrap_servers})")
        try:
            if retrainer and settings.drift.enabled:
                worker = _start_retrainer(settings, bootstrap)
            with LiveProgress(total, label) as live:
                result = run_pipeline(
                    settings,
                    bootstrap,
                    records,
                    metrics=metrics,
                    on_batch=live.update,
                    install_stop=_install_signals,
                    wait_for_retrains=worker is not None,
                    rate=rate,
                )
                live.update(result.run.learner, force=True)
        finally:
            stop_process(worker)
    pub = result.published
    rep = build_report(
        result.run.learner,
        result.run.events_per_second,
        config,
        published={"sent": pub.sent, "delivered": pub.delivered, "failed": pub.failed},
        publish_seconds=round(result.publish_seconds, 3),
        interrupted=result.interrupted,
    )
    _finish(rep, report, result.run.learner)
    if pub.failed:
        raise _fail(f"{pub.failed} events were not delivered: {pub.errors[:3]}")


def _simulator(
    seed: int,
    bot_share: float,
    drift_at: int | None,
    drift_duration: int = 0,
    drift_share: float = 0.5,
) -> Any:
    from producers.simulator import Simulator, SimulatorConfig

    try:
        return Simulator(
            SimulatorConfig(
                seed=seed,
                bot_share=bot_share,
                drift_at=drift_at,
                drift_duration=drift_duration,
                drift_share=drift_share,
            )
        )
    except ValueError as err:
        raise _fail(str(err)) from None


def _sim_records(sim: Any, events: int) -> Iterator[Any]:
    yield from sim.profiles()
    yield from sim.events(events)


@app.command()
def demo(
    events: Annotated[
        int | None,
        typer.Option(
            "--events", min=1,
            help="Interaction events [default: 100000; with --drift-at, drift-at + 200000].",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Events per second to publish [default: as fast as possible; with "
            "--drift-at, 8000, so the stream goes on while the retrainer works].",
        ),
    ] = None,
    seed: SeedOpt = 42,
    metrics_port: MetricsPortOpt = 9108,
    report: ReportOpt = None,
    bot_share: Annotated[float, typer.Option(help="Share of bot users.")] = 0.02,
    drift_at: Annotated[
        int | None,
        typer.Option(help="Interaction event at which tastes and preferences change."),
    ] = None,
    drift_duration: Annotated[
        int, typer.Option(help="Events over which the drift happens (0 = abrupt).")
    ] = 0,
    drift_share: Annotated[float, typer.Option(help="Share of users whose tastes change.")] = 0.5,
    retrainer: Annotated[
        bool,
        typer.Option("--retrainer/--no-retrainer", help="Run the retrainer (child process)."),
    ] = True,
    state_dir: StateDirOpt = None,
    log_level: str = "WARNING",
) -> None:
    """Run the whole loop on the embedded broker: simulator -> Kafka -> consumer -> report.

    Drift detection runs on the live stream; when it decides, the retrainer rebuilds the
    models (hyperparameter search, champion/challenger) and the consumer swaps them in.
    """
    _setup_logging(log_level)
    if events is None:
        events = 100_000 if drift_at is None else drift_at + 200_000
    if rate is None and drift_at is not None:
        rate = 8000.0
    state = state_dir or Path(tempfile.mkdtemp(prefix="feedback-loop-demo-"))
    settings = _settings(state, seed, registry_in_state=True)
    sim = _simulator(seed, bot_share, drift_at, drift_duration, drift_share)
    total = sim.config.n_users + sim.config.n_items + events
    config = {
        "command": "demo",
        "events": events,
        "seed": seed,
        "bot_share": bot_share,
        "drift_at": drift_at,
        "drift_duration": drift_duration,
        "drift_share": drift_share,
        "rate": rate,
        **settings.model_dump(mode="json"),
    }
    _run_on_embedded_or_cluster(
        settings, _sim_records(sim, events), total, "demo", metrics_port, report, config,
        retrainer=retrainer, rate=rate,
    )


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 9092,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu) until Ctrl-C; data stays in memory."""
    from stream.kafka.broker import EmbeddedBroker, ensure_topics

    settings = Settings()
    with EmbeddedBroker(port=port) as b:
        ensure_topics(b.bootstrap_servers, settings.topics)
        console.print(f"export KAFKA_BOOTSTRAP_SERVERS={b.bootstrap_servers}")
        stop = False

        def handler(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        while not stop:
            time.sleep(0.2)
    console.print("broker stopped")


def _publish(settings: Settings, records: Iterable[Any], total: int | None) -> None:
    from stream.kafka.broker import ensure_topics
    from stream.kafka.publisher import EventPublisher

    bootstrap = _require_cluster(settings, "publish")
    ensure_topics(bootstrap, settings.topics)
    pub = EventPublisher(bootstrap, settings.topics.events)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True

    _install_signals(stop)
    with Progress(console=console) as progress:
        task = progress.add_task("publishing", total=total)
        for i, record in enumerate(records, 1):
            if stopped:
                break
            pub.publish(record)
            if i % 2000 == 0:
                progress.update(task, completed=i)
        stats = pub.flush()
        progress.update(task, completed=stats.sent)
    console.print(
        f"published {stats.sent:,}: delivered {stats.delivered:,}, failed {stats.failed:,}"
    )
    if stats.failed or stats.pending:
        raise _fail(f"{stats.failed + stats.pending} events not delivered: {stats.errors[:3]}")


@app.command()
def simulate(
    events: Annotated[int, typer.Option("--events", min=1)] = 100_000,
    seed: SeedOpt = 42,
    bot_share: float = 0.02,
    drift_at: int | None = None,
) -> None:
    """Publish simulated profiles and events to KAFKA_BOOTSTRAP_SERVERS."""
    settings = _settings()
    _require_cluster(settings, "simulate")
    sim = _simulator(seed, bot_share, drift_at)
    total = sim.config.n_users + sim.config.n_items + events
    _publish(settings, _sim_records(sim, events), total)


def _open_source(path: Path, fmt: str | None) -> Any:
    from producers.replay import open_source

    try:
        return open_source(path, fmt)
    except (ValueError, OSError) as err:
        raise _fail(str(err)) from None


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="The file to replay.")],
    fmt: FormatOpt = None,
    speed: Annotated[
        float | None, typer.Option(help="Replay event time at this factor (default: max).")
    ] = None,
    consume: Annotated[
        bool | None,
        typer.Option(
            "--consume/--no-consume",
            help="Also run the consumer in this process (default: on the embedded broker).",
        ),
    ] = None,
    metrics_port: MetricsPortOpt = 9108,
    report: ReportOpt = None,
    state_dir: StateDirOpt = None,
    log_level: str = "WARNING",
) -> None:
    """Replay a file's events in timestamp order into Kafka."""
    from producers.replay import paced

    _setup_logging(log_level)
    settings = _settings(
        state_dir or Path(tempfile.mkdtemp(prefix="feedback-loop-replay-")),
        registry_in_state=True,
    )
    source = _open_source(path, fmt)
    records = paced(source.records(), speed)
    embedded = not settings.bootstrap_servers
    if consume is None:
        consume = embedded
    if not consume:
        _publish(settings, records, None)
        return
    config = {
        "command": "replay",
        "path": str(path),
        "format": source.format,
        "speed": speed,
        **settings.model_dump(mode="json"),
    }
    _run_on_embedded_or_cluster(
        settings, records, None, f"replay {source.format}", metrics_port, report, config
    )


@app.command("consume")
def consume_command(
    until_end: Annotated[
        bool, typer.Option("--until-end", help="Stop once caught up with the topic.")
    ] = False,
    metrics_port: MetricsPortOpt = 9108,
    report: ReportOpt = None,
    state_dir: StateDirOpt = None,
    group_id: Annotated[str | None, typer.Option(help="Consumer group id.")] = None,
    log_level: str = "INFO",
    json_logs: Annotated[
        bool, typer.Option("--json-logs", help="Log JSON lines (ts, level, logger, msg, fields).")
    ] = False,
) -> None:
    """The long-running consumer: events -> online models, checkpointed; SIGTERM stops it."""
    from consumers.loop import FeedbackConsumer
    from consumers.pipeline import build_report
    from stream.kafka.broker import ensure_topics
    from stream.observability.logs import setup_logging
    from stream.observability.metrics import PipelineMetrics

    setup_logging(log_level, json_logs)
    settings = _settings(state_dir)
    if group_id:
        settings.consumer = settings.consumer.model_copy(update={"group_id": group_id})
    bootstrap = _require_cluster(settings, "consume")
    ensure_topics(bootstrap, settings.topics)
    metrics = PipelineMetrics()
    port = metrics.serve(settings.metrics.host, metrics_port)
    log.info("metrics on http://%s:%d/metrics", settings.metrics.host, port)
    consumer = FeedbackConsumer(settings, bootstrap, metrics=metrics)
    _install_signals(consumer.request_stop)
    result = consumer.run(stop_at_end=until_end)
    rep = build_report(
        result.learner,
        result.events_per_second,
        {"command": "consume", **settings.model_dump(mode="json")},
        restored_from_checkpoint=result.restored_from_checkpoint,
    )
    _finish(rep, report, result.learner)


@app.command()
def evaluate(
    path: Annotated[Path, typer.Argument(help="The file to evaluate on.")],
    fmt: FormatOpt = None,
    report: ReportOpt = None,
    seed: SeedOpt = 42,
    dead_letters: Annotated[
        Path | None, typer.Option(help="Write rejected records here as JSONL.")
    ] = None,
) -> None:
    """Run the consumer's model code over a file, no broker: offline prequential scores."""
    from consumers.evaluate import evaluate_records
    from consumers.pipeline import build_report

    settings = _settings(seed=seed)
    source = _open_source(path, fmt)
    with LiveProgress(None, f"evaluate {source.format}") as live:
        learner, seconds = evaluate_records(
            settings, source.records(), on_progress=live.update, dead_letters=dead_letters
        )
        live.update(learner, force=True)
    config = {
        "command": "evaluate",
        "path": str(path),
        "format": source.format,
        **settings.model_dump(mode="json"),
    }
    consumed = learner.counts.consumed
    _finish(
        build_report(learner, consumed / seconds if seconds else 0.0, config), report, learner
    )


@app.command()
def retrainer(
    metrics_port: MetricsPortOpt = 9109,
    once: Annotated[bool, typer.Option(help="Exit after one retrain request.")] = False,
    log_level: str = "INFO",
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")] = False,
) -> None:
    """The retrainer worker: serves retrain requests from the control topic until stopped."""
    from consumers.retrainer import RetrainWorker
    from stream.observability.logs import setup_logging
    from stream.observability.metrics import RetrainMetrics

    setup_logging(log_level, json_logs)
    settings = _settings()
    bootstrap = _require_cluster(settings, "retrainer")
    metrics = RetrainMetrics()
    port = metrics.serve(settings.metrics.host, metrics_port)
    log.info("retrainer metrics on http://%s:%d/metrics", settings.metrics.host, port)
    worker = RetrainWorker(settings, bootstrap, metrics)
    _install_signals(worker.request_stop)
    worker.run(max_requests=1 if once else None)


@app.command()
def retrain(
    reason: Annotated[str, typer.Option(help="Why (logged and reported).")] = "manual",
) -> None:
    """Ask the running consumers to request a retrain now (manual trigger)."""
    from stream.events import RetrainTrigger
    from stream.kafka.control import publish_control

    settings = _settings()
    bootstrap = _require_cluster(settings, "retrain")
    publish_control(bootstrap, settings.topics.control, RetrainTrigger(reason=reason))
    console.print(f"retrain trigger published on {settings.topics.control}")


@app.command()
def rollback(
    registry_dir: Annotated[
        Path | None, typer.Option(help="Model registry directory (default: settings).")
    ] = None,
) -> None:
    """Make the previous model version current again and tell the consumers to load it."""
    from stream.events import ModelActivated
    from stream.kafka.control import publish_control
    from stream.lifecycle import ModelRegistry, RegistryError

    settings = _settings()
    bootstrap = _require_cluster(settings, "rollback")
    registry = ModelRegistry(registry_dir or settings.retrain.registry_dir)
    try:
        version = registry.rollback()
    except RegistryError as err:
        raise _fail(str(err)) from None
    publish_control(bootstrap, settings.topics.control, ModelActivated(version=version))
    console.print(f"rolled back to model version {version}; consumers will swap it in")


@app.command()
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
        raise _fail(str(err)) from None
    if as_json:
        typer.echo(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(render(info))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
