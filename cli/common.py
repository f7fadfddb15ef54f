"""What every command shares: the console, the options, the settings, signals, errors.

>>> cfg = settings(Path("/tmp/st"), seed=7, registry_in_state=True)
>>> cfg.consumer.state_dir, cfg.retrain.registry_dir, cfg.model.seed
(PosixPath('/tmp/st'), PosixPath('/tmp/st/registry'), 7)
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stream.config import Settings
from stream.kafka.clients import check_kafka_config

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
        help="movielens-100k, movielens-csv, recbole, events or archive (a directory of"
        " archived events); guessed when omitted.",
    ),
]


def settings(
    state_dir: Path | None = None,
    seed: int | None = None,
    registry_in_state: bool = False,
    group_id: str | None = None,
) -> Settings:
    """The environment's settings with the command's options applied (a derived copy)."""
    base = Settings()
    try:
        check_kafka_config(base.kafka)
    except ValueError as err:
        raise fail(str(err)) from None
    update: dict[str, Any] = {}
    consumer: dict[str, Any] = {}
    if state_dir is not None:
        consumer["state_dir"] = state_dir
    if group_id:
        consumer["group_id"] = group_id
    if consumer:
        update["consumer"] = base.consumer.model_copy(update=consumer)
    if registry_in_state:
        state = consumer.get("state_dir", base.consumer.state_dir)
        update["retrain"] = base.retrain.model_copy(update={"registry_dir": state / "registry"})
    if seed is not None:
        update["model"] = base.model.model_copy(update={"seed": seed})
    return base.model_copy(update=update)


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; raise the result to exit with status 2."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def require_cluster(settings: Settings, command: str) -> str:
    if not settings.bootstrap_servers:
        raise fail(
            f"`{command}` needs a running Kafka: set KAFKA_BOOTSTRAP_SERVERS (for example to "
            "the address printed by `feedback-loop broker`). The embedded broker keeps data "
            "in memory only, so `demo` and `replay` start their own when it is unset."
        )
    return settings.bootstrap_servers


def install_signals(stop: Callable[[], None]) -> None:
    """SIGINT and SIGTERM call ``stop`` (which finishes the batch, checkpoints and exits)."""

    def handler(signum: int, _frame: object) -> None:
        console.print(f"[yellow]{signal.Signals(signum).name}: stopping after this batch...[/]")
        stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
