"""Where the commands' events come from (the simulator, the closed loop, a file) and
publishing them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
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


def parse_policies(text: str) -> tuple[str, ...]:
    """``--policies random,model`` as a tuple; unknown names fail with the known ones."""
    from stream.serving.recommender import POLICIES

    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if not names or unknown or len(set(names)) != len(names):
        raise fail(f"--policies: give distinct names among {', '.join(POLICIES)}; got {text!r}")
    return names


@dataclass
class LoopRun:
    """A closed loop wired to an in-process server: the loop and the serving state it reads."""

    loop: Any  # producers.simulator.ClosedLoop
    state: Any  # stream.serving.state.ServingState

    def report(self) -> dict[str, Any]:
        """The loop's report plus how far the served state got (proof that the consumer's
        updates reached the recommender)."""
        out: dict[str, Any] = self.loop.report()
        meta = self.state.meta
        out["serving_state"] = {
            "records_applied": self.state.records_applied,
            "sequence": None if meta is None else meta.sequence,
            "model_version": None if meta is None else meta.version,
            "users": self.state.n_users,
            "items": self.state.n_items,
        }
        return out


@dataclass
class ClosedLoopSpec:
    """What ``--closed-loop`` runs: simulated users asking the serving path for slates."""

    sim: Any  # producers.simulator.Simulator
    loop_config: Any  # producers.simulator.LoopConfig
    events: int

    @contextlib.contextmanager
    def start(self, settings: Settings, bootstrap: str, registry: Any = None) -> Iterator[LoopRun]:
        """Follow the model-state topic in this process (what ``serve`` runs: a
        :class:`ServingState` fed by a :class:`StateFollowerThread`, a :class:`Recommender`),
        and a :class:`ClosedLoop` that asks it for slates; the loop's ground truth goes to
        ``registry`` (a Prometheus registry) when given."""
        from consumers.state_follower import StateFollowerThread
        from producers.simulator import ClosedLoop, LoopMetrics
        from stream.serving.recommender import Recommender
        from stream.serving.state import ServingState

        state = ServingState.from_config(settings.serving)
        recommender = Recommender(state, settings.serving)
        follower = StateFollowerThread(
            bootstrap, settings.topics.model_state, state, kafka=settings.kafka
        )
        cfg = self.loop_config
        metrics = LoopMetrics(
            cfg.policies, len(self.sim.item_ids), cfg.window_sessions, registry=registry
        )

        def recommend(user_id: str, k: int, policy: str) -> Any:
            return recommender.recommend(user_id, k, policy)  # type: ignore[arg-type]

        loop = ClosedLoop(self.sim, recommend, cfg, ready=follower.ready, metrics=metrics)
        follower.start()
        try:
            yield LoopRun(loop, state)
        finally:
            loop.close()
            follower.stop()


def loop_config(
    policies: str, window: int, rate: float | None, fatigue: float, position_decay: float
) -> Any:
    from producers.simulator import LoopConfig

    try:
        return LoopConfig(
            policies=parse_policies(policies),
            window_sessions=window,
            rate=rate,
            fatigue=fatigue,
            position_decay=position_decay,
        )
    except ValueError as err:
        raise fail(str(err)) from None


def open_source(path: Path, fmt: str | None) -> Any:
    from producers.replay import open_source as open_file

    try:
        return open_file(path, fmt)
    except (ValueError, OSError) as err:
        raise fail(str(err)) from None


def fit_scale(settings: Settings, source: Any, consume_here: bool) -> tuple[Settings, Any]:
    """The settings and the source (a ``ReplaySource``) a command runs a file with.

    When this process consumes the file and the environment declares no rating scale
    (``FEEDBACK_LOOP_LIMITS__RATING_MIN`` / ``_MAX`` / ``_STEP``), the format's own scale
    applies: half stars for MovieLens CSV. Otherwise the configured scale stands, shared
    with the other processes, and the file's ratings are checked against it before
    anything is published (see :func:`source_records`).
    """
    from producers.replay import SCALE_FIELDS

    scale = source.rating_scale
    if consume_here and scale is not None and not settings.limits.model_fields_set & SCALE_FIELDS:
        return settings.model_copy(update={"limits": scale.applied_to(settings.limits)}), source
    return settings, source.checked_against(settings.limits)


def source_records(source: Any) -> Iterator[Any]:
    """The source's records; a broken file, or ratings off the configured scale, fail the
    command with the reason before anything is published."""
    try:
        records: Iterator[Any] = source.records()
    except (ValueError, OSError) as err:
        raise fail(str(err)) from None
    return records


def publish(
    settings: Settings,
    records: Iterable[Any],
    total: int | None,
    on_stop: Callable[[], None] | None = None,
    status: Callable[[], str] | None = None,
) -> None:
    """Publish ``records`` to the configured cluster, with a progress bar; Ctrl-C stops
    (and calls ``on_stop``, so a source that waits can give up). ``status`` adds a live
    text to the progress line."""
    from stream.kafka.broker import ensure_topics
    from stream.kafka.publisher import EventPublisher

    bootstrap = require_cluster(settings, "publish")
    ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
    pub = EventPublisher(bootstrap, settings.topics.events, kafka=settings.kafka)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        if on_stop is not None:
            on_stop()

    install_signals(stop)
    with Progress(console=console) as progress:
        task = progress.add_task("publishing", total=total)
        for i, record in enumerate(records, 1):
            if stopped:
                break
            pub.publish(record)
            if i % 2000 == 0:
                progress.update(task, completed=i)
                if status is not None:
                    progress.update(task, description=f"publishing {status()}")
        stats = pub.flush()
        progress.update(task, completed=stats.sent)
    console.print(
        f"published {stats.sent:,}: delivered {stats.delivered:,}, failed {stats.failed:,}"
    )
    if stats.failed or stats.pending:
        raise fail(f"{stats.failed + stats.pending} events not delivered: {stats.errors[:3]}")


# Options shared by `demo --closed-loop` and `simulate --closed-loop`.
ClosedLoopOpt = Annotated[
    bool,
    typer.Option(
        "--closed-loop",
        help="Simulated users ask the serving path (following the model-state topic in "
        "this process) for their slates and react to them; report ground truth per policy.",
    ),
]
PoliciesOpt = Annotated[
    str,
    typer.Option(help="Closed loop: policies compared, users split among them by a seeded hash."),
]
ExplorationOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0, max=1.0,
        help="Closed loop: share of slots the explore policy fills at random "
        "(default: FEEDBACK_LOOP_SERVING__EXPLORATION, 0.1).",
    ),
]  # fmt: skip
WindowOpt = Annotated[
    int, typer.Option(min=1, help="Closed loop: sessions per window of the CTR timeline.")
]
FatigueOpt = Annotated[
    float,
    typer.Option(
        min=0.0, max=1.0,
        help="Closed loop: appeal kept by an item per earlier impression to the same user.",
    ),
]  # fmt: skip
PositionDecayOpt = Annotated[
    float,
    typer.Option(min=0.0, help="Closed loop: P(examine position j) = (1 + j) ** -decay."),
]
DEFAULT_POLICIES = "random,popular,model,explore"
# Closed-loop pacing: slow enough that the consumer's state (published every second) keeps
# up with the sessions, fast enough for a run of a couple of minutes.
CLOSED_LOOP_RATE = 1500.0
CLOSED_LOOP_EVENTS = 150_000


def with_exploration(settings: Settings, exploration: float | None) -> Settings:
    """``settings`` with the serving exploration share replaced (when given)."""
    if exploration is None:
        return settings
    serving = settings.serving.model_copy(update={"exploration": exploration})
    return settings.model_copy(update={"serving": serving})
