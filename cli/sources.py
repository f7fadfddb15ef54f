"""Where the commands' events come from (the simulator, a file) and publishing them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.progress import Progress

from cli.common import console, fail, install_signals, require_cluster
from stream.config import Settings


def simulator(
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
        raise fail(str(err)) from None


def sim_records(sim: Any, events: int) -> Iterator[Any]:
    """The profiles first (events of unknown users are dead-lettered), then the events."""
    yield from sim.profiles()
    yield from sim.events(events)


def open_source(path: Path, fmt: str | None) -> Any:
    from producers.replay import open_source as open_file

    try:
        return open_file(path, fmt)
    except (ValueError, OSError) as err:
        raise fail(str(err)) from None


def publish(settings: Settings, records: Iterable[Any], total: int | None) -> None:
    """Publish ``records`` to the configured cluster, with a progress bar; Ctrl-C stops."""
    from stream.kafka.broker import ensure_topics
    from stream.kafka.publisher import EventPublisher

    bootstrap = require_cluster(settings, "publish")
    ensure_topics(bootstrap, settings.topics)
    pub = EventPublisher(bootstrap, settings.topics.events)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True

    install_signals(stop)
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
        raise fail(f"{stats.failed + stats.pending} events not delivered: {stats.errors[:3]}")
