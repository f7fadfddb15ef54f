"""Hybrid cold start, with and without, in one run over the same ordered stream.

MovieLens-100K in timestamp order (``u.data`` with ``u.user`` and ``u.item`` as profiles):
every record goes once through the consumer's admission (validation, de-duplication, known
ids; the bot filter set out of reach, since real MovieLens users rate dozens of titles a
minute), and each admitted interaction is learned by two fresh model bundles that differ
only in ``ModelConfig.cold_start``. Both score each rating before learning it (prequential,
as the consumer does); the bench reports the RMSE over each user's first ``--first``
ratings, over every new item's first ratings, and over the whole stream.

The simulator part does the same over a seeded simulator stream and reports the click
model's log loss on each user's first ``--first`` clicks and impressions, and overall::

    .venv/bin/python bench/cold_start.py --section /tmp/cold_start.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.movielens import MovieLensUnavailable, movielens_100k  # noqa: E402
from bench.report import machine  # noqa: E402
from consumers.evaluate import record_bytes  # noqa: E402
from producers.replay import open_source  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import ConsumerConfig, ModelConfig, Settings  # noqa: E402
from stream.evaluation import BinaryScore  # noqa: E402
from stream.events import (  # noqa: E402
    Admission,
    ClickEvent,
    ImpressionEvent,
    InteractionEvent,
    RatingEvent,
    encode_event,
)
from stream.models import ModelBundle  # noqa: E402

ARMS = ("without", "with")


@dataclass
class SquaredErrors:
    """Sum of squared errors and count, for an RMSE."""

    total: float = 0.0
    n: int = 0

    def add(self, error: float) -> None:
        self.total += error * error
        self.n += 1

    @property
    def rmse(self) -> float:
        return math.sqrt(self.total / self.n) if self.n else float("nan")


@dataclass
class RatingRun:
    """Prequential rating errors of one arm: all, users' first N, items' first N."""

    whole: SquaredErrors = field(default_factory=SquaredErrors)
    first_of_user: SquaredErrors = field(default_factory=SquaredErrors)
    first_of_item: SquaredErrors = field(default_factory=SquaredErrors)


def bundles(settings: Settings) -> dict[str, ModelBundle]:
    """Two fresh bundles, without and with cold start, otherwise the same config."""
    limits = settings.limits
    out = {}
    for arm in ARMS:
        cfg = settings.model.model_copy(update={"cold_start": arm == "with"})
        out[arm] = ModelBundle.fresh(
            cfg, limits.rating_min, limits.rating_max, limits.dwell_cap_seconds
        )
    return out


def bench_settings(seed: int) -> Settings:
    # The bot filter is the consumer's defence against inhuman rates; MovieLens users rate
    # many titles a minute, and this bench measures models, so it admits every rating.
    return Settings(
        model=ModelConfig(seed=seed),
        consumer=ConsumerConfig(bot_events_per_minute=10**9),
    )


def admitted(
    settings: Settings, raws: Iterable[bytes]
) -> Iterator[tuple[Admission, InteractionEvent]]:
    """Every admitted interaction, with the admission that holds the profiles so far
    (profiles are stored by the admission itself; rejected and dropped messages vanish)."""
    admission = Admission.from_settings(settings)
    for raw in raws:
        event = admission.admit_raw(raw)
        if isinstance(event, InteractionEvent):
            yield admission, event


def movielens(path: Path, seed: int, first: int) -> dict[str, RatingRun]:
    """Prequential rating errors of both arms over MovieLens-100K in timestamp order."""
    settings = bench_settings(seed)
    models = bundles(settings)
    runs = {arm: RatingRun() for arm in ARMS}
    seen_user: dict[str, int] = {}
    seen_item: dict[str, int] = {}
    records = map(record_bytes, open_source(path, "movielens-100k").records())
    for admission, event in admitted(settings, records):
        if not isinstance(event, RatingEvent):
            continue
        users, items = admission.profiles.users, admission.profiles.items
        nu = seen_user[event.user_id] = seen_user.get(event.user_id, 0) + 1
        ni = seen_item[event.item_id] = seen_item.get(event.item_id, 0) + 1
        for arm in ARMS:
            predicted = models[arm].learn(event, users, items, score=True)
            assert predicted is not None
            error = event.rating - predicted
            run = runs[arm]
            run.whole.add(error)
            if nu <= first:
                run.first_of_user.add(error)
            if ni <= first:
                run.first_of_item.add(error)
    return runs


def simulator(events: int, seed: int, first: int) -> dict[str, dict[str, BinaryScore]]:
    """Click log loss of both arms on users' first engagement events and overall."""
    settings = bench_settings(seed)
    models = bundles(settings)
    scores = {arm: {"first": BinaryScore(), "whole": BinaryScore()} for arm in ARMS}
    sim = Simulator(SimulatorConfig(seed=seed, bot_share=0.0))
    raws = (encode_event(e) for e in [*sim.profiles(), *sim.events(events)])
    seen: dict[str, int] = {}
    for admission, event in admitted(settings, raws):
        if not isinstance(event, ClickEvent | ImpressionEvent):  # ratings, dwell
            for arm in ARMS:
                models[arm].learn(event, admission.profiles.users, admission.profiles.items)
            continue
        n = seen[event.user_id] = seen.get(event.user_id, 0) + 1
        clicked = isinstance(event, ClickEvent)
        for arm in ARMS:
            p = models[arm].learn(
                event, admission.profiles.users, admission.profiles.items, score=True
            )
            assert p is not None
            scores[arm]["whole"].update(clicked, p)
            if n <= first:
                scores[arm]["first"].update(clicked, p)
    return scores


def section(
    args: argparse.Namespace,
    ml: dict[str, RatingRun] | None,
    ml_seconds: float,
    sim: dict[str, dict[str, BinaryScore]],
    sim_seconds: float,
) -> str:
    lines = [
        "## Cold start",
        "",
        f"Machine: {machine()}.",
        "",
        "```bash",
        f".venv/bin/python bench/cold_start.py --first {args.first} --seed {args.seed} "
        f"--events {args.events}",
        "```",
        "",
        "Two model bundles learn the same admitted stream in one run, differing only in "
        "`ModelConfig.cold_start` (a new user's bias and factors start from the mean of "
        "the warm users of their segments, a new item's from the warm items of its genres). "
        "Every prediction is made before learning (prequential).",
        "",
    ]
    if ml is None:
        lines += ["MovieLens-100K: not available on this machine.", ""]
    else:
        lines += [
            f"MovieLens-100K in timestamp order ({ml['with'].whole.n:,} ratings, "
            f"{ml_seconds:.0f} s for both arms):",
            "",
            f"| cold start | RMSE, users' first {args.first} | RMSE, items' first "
            f"{args.first} | RMSE, whole stream |",
            "|---|---|---|---|",
        ]
        for arm in ARMS:
            r = ml[arm]
            lines.append(
                f"| {arm} | {r.first_of_user.rmse:.4f} ({r.first_of_user.n:,}) | "
                f"{r.first_of_item.rmse:.4f} ({r.first_of_item.n:,}) | {r.whole.rmse:.4f} |"
            )
        lines.append("")
    lines += [
        f"Simulator ({args.events:,} events, seed {args.seed}, {sim_seconds:.0f} s for both "
        "arms), click model:",
        "",
        f"| cold start | log loss, users' first {args.first} shown | log loss, all | AUC, all |",
        "|---|---|---|---|",
    ]
    for arm in ARMS:
        s = sim[arm]
        lines.append(
            f"| {arm} | {s['first'].logloss:.4f} ({s['first'].n:,}) | "
            f"{s['whole'].logloss:.4f} | {s['whole'].auc:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=int, default=10, help="Ratings (events) counted as first.")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--events", type=int, default=100_000, help="Simulator events.")
    ap.add_argument("--section", type=Path, help="Also write the markdown section here.")
    args = ap.parse_args()
    ml: dict[str, RatingRun] | None
    started = time.perf_counter()
    try:
        ml = movielens(movielens_100k(), args.seed, args.first)
    except MovieLensUnavailable as exc:
        print(f"MovieLens-100K unavailable: {exc.reason}", file=sys.stderr)
        ml = None
    ml_seconds = time.perf_counter() - started
    started = time.perf_counter()
    sim = simulator(args.events, args.seed, args.first)
    sim_seconds = time.perf_counter() - started
    text = section(args, ml, ml_seconds, sim, sim_seconds)
    print(text)
    if args.section is not None:
        args.section.write_text(text)


if __name__ == "__main__":
    main()
