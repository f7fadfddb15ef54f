"""The commands that run the pipeline and report on it: demo, replay, consume, evaluate."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import (
    FormatOpt,
    MetricsPortOpt,
    ReportOpt,
    SeedOpt,
    StateDirOpt,
    console,
    fail,
    install_signals,
    log,
    require_cluster,
    settings,
)
from cli.progress import LiveProgress, finish
from cli.sources import (
    CLOSED_LOOP_EVENTS,
    CLOSED_LOOP_RATE,
    DEFAULT_POLICIES,
    ClosedLoopOpt,
    ClosedLoopSpec,
    ExplorationOpt,
    FatigueOpt,
    LoopRun,
    PoliciesOpt,
    PositionDecayOpt,
    WindowOpt,
    fit_scale,
    loop_config,
    open_source,
    publish,
    sim_records,
    simulator,
    source_records,
    with_exploration,
)
from stream.config import Settings
from stream.observability.logs import setup_logging


def _start_retrainer(cfg: Settings, bootstrap: str) -> subprocess.Popen[bytes]:
    """The retrainer as a child process (its own core, its own GIL), logging to a file."""
    from stream.config import settings_env

    env = {**os.environ, **settings_env(cfg), "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    log_path = cfg.consumer.state_dir / "retrainer.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"retrainer started (log: {log_path})")
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.app", "retrainer", "--metrics-port", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _run_on_embedded_or_cluster(
    cfg: Settings,
    records: Iterable[Any],
    total: int | None,
    label: str,
    metrics_port: int,
    report: Path | None,
    config: dict[str, Any],
    retrainer: bool = True,
    rate: float | None = None,
    closed_loop: ClosedLoopSpec | None = None,
) -> None:
    """Publish and consume ``records`` in this process (on the embedded broker when no
    cluster is configured), with the retrainer as a child process; then report.

    With ``closed_loop`` the records come from it instead: simulated users ask an
    in-process server, which follows the consumer's model-state topic, for their slates.
    """
    from consumers.pipeline import build_report, run_pipeline
    from stream.kafka.broker import kafka_cluster, stop_process
    from stream.observability.metrics import PipelineMetrics

    metrics = PipelineMetrics()
    port = metrics.serve(cfg.metrics.host, metrics_port)
    console.print(f"metrics on http://{cfg.metrics.host}:{port}/metrics")
    worker = None
    run: LoopRun | None = None
    with kafka_cluster(cfg) as bootstrap, contextlib.ExitStack() as stack:
        console.print(f"broker at {bootstrap} (embedded: {not cfg.bootstrap_servers})")
        install: Callable[[Callable[[], None]], None] = install_signals
        if closed_loop is not None:
            run = stack.enter_context(closed_loop.start(cfg, bootstrap, metrics.registry))
            records = run.loop.records(closed_loop.events)
            install = _also_closing(run.loop.close)
        try:
            if retrainer and cfg.drift.enabled:
                worker = _start_retrainer(cfg, bootstrap)
            extra = run.loop.metrics.progress_text if run is not None else None
            with LiveProgress(total, label, extra) as live:
                result = run_pipeline(
                    cfg,
                    bootstrap,
                    records,
                    metrics=metrics,
                    on_batch=live.update,
                    install_stop=install,
                    wait_for_retrains=worker is not None,
                    rate=rate,
                )
                live.update(result.run.learner, force=True)
        finally:
            stop_process(worker)
    pub = result.published
    loop_report = {"closed_loop": run.report()} if run is not None else {}
    rep = build_report(
        result.run.learner,
        result.run.events_per_second,
        config,
        published={"sent": pub.sent, "delivered": pub.delivered, "failed": pub.failed},
        publish_seconds=round(result.publish_seconds, 3),
        interrupted=result.interrupted,
        **loop_report,
    )
    finish(rep, report, result.run.learner)
    if pub.failed:
        raise fail(f"{pub.failed} events were not delivered: {pub.errors[:3]}")


def _also_closing(close: Callable[[], None]) -> Callable[[Callable[[], None]], None]:
    """``install_signals`` whose stop also closes the closed loop (which may be waiting for
    the first serving state, or pacing itself, inside the publisher thread)."""

    def install(stop: Callable[[], None]) -> None:
        def both() -> None:
            close()
            stop()

        install_signals(both)

    return install


def demo(
    events: Annotated[
        int | None,
        typer.Option(
            "--events",
            min=1,
            help="Interaction events [default: 100000; with --drift-at, drift-at + 200000; "
            "closed loop: 150000, with --drift-at, drift-at + 150000].",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Events per second to publish [default: as fast as possible; with "
            "--drift-at, 8000, so the stream goes on while the retrainer works; closed "
            "loop: 1500, so model updates reach the server while users keep asking].",
        ),
    ] = None,
    seed: SeedOpt = 42,
    metrics_port: MetricsPortOpt = 9108,
    report: ReportOpt = None,
    bot_share: Annotated[
        float, typer.Option(help="Share of bot users (closed loop: they ask for nothing).")
    ] = 0.02,
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
    closed_loop: ClosedLoopOpt = False,
    policies: PoliciesOpt = DEFAULT_POLICIES,
    exploration: ExplorationOpt = None,
    window: WindowOpt = 400,
    fatigue: FatigueOpt = 0.85,
    position_decay: PositionDecayOpt = 0.5,
) -> None:
    """Run the whole loop on the embedded broker: simulator -> Kafka -> consumer -> report.

    Drift detection runs on the live stream; when it decides, the retrainer rebuilds the
    models (hyperparameter search, champion/challenger) and the consumer swaps them in.
    With --closed-loop the simulated users are shown what the live models recommend.
    """
    setup_logging(log_level)
    if events is None:
        base = CLOSED_LOOP_EVENTS if closed_loop else 100_000
        events = base if drift_at is None else drift_at + (150_000 if closed_loop else 200_000)
    if rate is None and drift_at is not None and not closed_loop:
        rate = 8000.0
    state = state_dir or Path(tempfile.mkdtemp(prefix="feedback-loop-demo-"))
    cfg = with_exploration(settings(state, seed, registry_in_state=True), exploration)
    sim = simulator(seed, bot_share, drift_at, drift_duration, drift_share)
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
        "closed_loop": closed_loop,
        **cfg.model_dump(mode="json"),
    }
    spec = None
    if closed_loop:
        # The loop paces itself once the first state is served; the publisher does not.
        loop_rate = rate if rate is not None else CLOSED_LOOP_RATE
        spec = ClosedLoopSpec(
            sim, loop_config(policies, window, loop_rate, fatigue, position_decay), events
        )
        config["rate"], rate = loop_rate, None
    _run_on_embedded_or_cluster(
        cfg, sim_records(sim, events), total, "closed loop" if closed_loop else "demo",
        metrics_port, report, config, retrainer=retrainer, rate=rate, closed_loop=spec,
    )  # fmt: skip


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

    setup_logging(log_level)
    cfg = settings(
        state_dir or Path(tempfile.mkdtemp(prefix="feedback-loop-replay-")),
        registry_in_state=True,
    )
    source = open_source(path, fmt)
    embedded = not cfg.bootstrap_servers
    if consume is None:
        consume = embedded
    cfg, source = fit_scale(cfg, source, consume_here=consume)
    records = paced(source_records(source), speed)
    if not consume:
        publish(cfg, records, None)
        return
    config = {
        "command": "replay",
        "path": str(path),
        "format": source.format,
        "speed": speed,
        **cfg.model_dump(mode="json"),
    }
    _run_on_embedded_or_cluster(
        cfg, records, None, f"replay {source.format}", metrics_port, report, config
    )


def consume(
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
    from consumers.log_guard import BrokerLost, LogTruncated
    from consumers.loop import FeedbackConsumer
    from consumers.pipeline import build_report
    from stream.kafka.broker import ensure_topics
    from stream.observability.metrics import PipelineMetrics

    setup_logging(log_level, json_logs)
    cfg = settings(state_dir, group_id=group_id)
    bootstrap = require_cluster(cfg, "consume")
    ensure_topics(bootstrap, cfg.topics, kafka=cfg.kafka)
    metrics = PipelineMetrics()
    port = metrics.serve(cfg.metrics.host, metrics_port)
    log.info("metrics on http://%s:%d/metrics", cfg.metrics.host, port)
    consumer = FeedbackConsumer(cfg, bootstrap, metrics=metrics)
    install_signals(consumer.request_stop)
    try:
        result = consumer.run(stop_at_end=until_end)
    except (LogTruncated, BrokerLost) as err:
        raise fail(str(err)) from None
    rep = build_report(
        result.learner,
        result.events_per_second,
        {"command": "consume", **cfg.model_dump(mode="json")},
        restored_from_checkpoint=result.restored_from_checkpoint,
    )
    finish(rep, report, result.learner)


def evaluate(
    path: Annotated[Path, typer.Argument(help="The file to evaluate on.")],
    fmt: FormatOpt = None,
    report: ReportOpt = None,
    seed: SeedOpt = 42,
    dead_letters: Annotated[
        Path | None, typer.Option(help="Write rejected records here as JSONL.")
    ] = None,
    retrain_every: Annotated[
        int | None,
        typer.Option(min=1, help="Batch-retrain after every N messages and swap if accepted."),
    ] = None,
    retrain_on_drift: Annotated[
        bool, typer.Option(help="Batch-retrain when the drift policy decides, as the loop does.")
    ] = False,
    freeze_at: Annotated[
        int | None,
        typer.Option(
            min=1, help="Batch-train once after N messages, then only score (frozen reference)."
        ),
    ] = None,
    holdout_events: Annotated[
        int | None, typer.Option(min=100, help="Retrain hold-out window (default: config).")
    ] = None,
    validation_events: Annotated[
        int | None, typer.Option(min=100, help="Retrain validation window (default: config).")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Retrain search trials (default: config).")
    ] = None,
) -> None:
    """Run the consumer's model code over a file, no broker: offline prequential scores.

    With --retrain-every, --retrain-on-drift or --freeze-at, the retrainer's own code runs
    in the loop on exactly the events learned so far, and accepted models are swapped in.
    """
    from consumers.evaluate import evaluate_records
    from consumers.offline_loop import RetrainSchedule
    from consumers.pipeline import build_report

    cfg, source = fit_scale(settings(seed=seed), open_source(path, fmt), consume_here=True)
    retrain_update = {
        k: v
        for k, v in (
            ("holdout_events", holdout_events),
            ("validation_events", validation_events),
            ("trials", trials),
        )
        if v is not None
    }
    if retrain_update:
        cfg = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update=retrain_update)})
    schedule = (
        RetrainSchedule(every=retrain_every, on_drift=retrain_on_drift, freeze_at=freeze_at)
        if retrain_every or retrain_on_drift or freeze_at
        else None
    )

    def on_retrain(r: dict[str, Any]) -> None:
        console.print(
            f"retrain at message {r['event_index']:,} ({r['reason']}): {r['status']}"
            + (
                f", challenger {r['challenger']:.4f} vs champion {r['champion']:.4f}"
                if r.get("champion") is not None
                else ""
            )
        )

    with LiveProgress(None, f"evaluate {source.format}") as live:
        learner, seconds = evaluate_records(
            cfg,
            source_records(source),
            on_progress=live.update,
            dead_letters=dead_letters,
            schedule=schedule,
            on_retrain=on_retrain,
        )
        live.update(learner, force=True)
    config = {
        "command": "evaluate",
        "path": str(path),
        "format": source.format,
        "schedule": schedule.name if schedule is not None else "online only",
        **cfg.model_dump(mode="json"),
    }
    consumed = learner.counts.consumed
    finish(build_report(learner, consumed / seconds if seconds else 0.0, config), report, learner)
