"""Quality with 1, 2 and 4 consumers: the same stream through the broker, partitioned.

    .venv/bin/python bench/scale_quality.py [--events 100000] [--out BENCHMARKS.md]

For k in 1, 2, 4: a topic of k partitions on the embedded broker, the stream published to it
(keyed by user, item profiles to every partition), then k consumers of one group (threads of
this process, sharing one state dir) apply it to the end, their partitions' learners
exchanging item deltas. Prequential click log loss and rating RMSE are pooled over the
partitions' final checkpoints (each partition's scores, weighted by its events) and compared
with k = 1. Streams: the seeded simulator and MovieLens-100K (ratings only: RMSE).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.movielens import movielens_100k  # noqa: E402
from bench.report import machine, replace_section  # noqa: E402
from consumers.loop import FeedbackConsumer  # noqa: E402
from producers.replay import open_source  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import ConsumerConfig, Limits, Settings, Topics  # noqa: E402
from stream.kafka.broker import EmbeddedBroker, ensure_topics  # noqa: E402
from stream.kafka.partitions import PartitionStore  # noqa: E402
from stream.kafka.publisher import EventPublisher, Record  # noqa: E402
from stream.learner import FeedbackLearner  # noqa: E402


def pooled(learners: list[FeedbackLearner]) -> tuple[float | None, float | None, int]:
    """Click log loss and rating RMSE over every partition's events; messages consumed."""
    n = sum(lr.click_score.n for lr in learners)
    m = sum(lr.rating_score.n for lr in learners)
    logloss = (
        sum((lr.click_score.logloss or 0.0) * lr.click_score.n for lr in learners) / n
        if n
        else None
    )
    sq = sum((lr.rating_score.rmse or 0.0) ** 2 * lr.rating_score.n for lr in learners)
    return logloss, (math.sqrt(sq / m) if m else None), sum(lr.counts.consumed for lr in learners)


def run(
    bootstrap: str, records: list[Record], k: int, limits: Limits, state: Path, every: int
) -> tuple[float | None, float | None, int]:
    tag = uuid.uuid4().hex[:8]
    topics = Topics.prefixed(tag).model_copy(update={"events_partitions": k})
    settings = Settings(
        bootstrap_servers=bootstrap,
        topics=topics,
        limits=limits,
        consumer=ConsumerConfig(
            group_id=f"g-{tag}", state_dir=state / tag, share_items_every=every
        ),
    )
    ensure_topics(bootstrap, topics, kafka=settings.kafka)
    pub = EventPublisher(bootstrap, topics.events, kafka=settings.kafka)
    for r in records:
        pub.publish(r)
    stats = pub.flush()
    assert stats.failed == 0, stats.errors[:3]
    consumers = [FeedbackConsumer(settings, bootstrap) for _ in range(k)]
    threads = [threading.Thread(target=c.run, kwargs={"stop_at_end": True}) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = PartitionStore(settings.consumer.state_dir, topics.events)
    learners = []
    for p in range(k):
        ckpt = store.load(p)
        assert ckpt is not None, f"partition {p} has no checkpoint"
        learners.append(ckpt.state)
    out = pooled(learners)
    assert out[2] == stats.sent, (out[2], stats.sent)  # every message applied once
    return out


def fmt(x: float | None) -> str:
    return f"{x:.4f}" if x is not None else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--out", type=Path)
    default_every = ConsumerConfig().share_items_every
    ap.add_argument(
        "--every",
        type=int,
        default=default_every,
        help=f"exchange item deltas every this many messages (default {default_every})",
    )
    args = ap.parse_args()
    sim = Simulator(SimulatorConfig(seed=42, bot_share=0.02))
    streams: dict[str, tuple[list[Record], Limits]] = {
        f"simulator, {args.events:,} events": (
            [*sim.profiles(), *sim.events(args.events)],
            Limits(),
        ),
        "MovieLens-100K": (
            list(open_source(movielens_100k(), "movielens-100k").records()),
            Limits(),
        ),
    }
    rows = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        for name, (records, limits) in streams.items():
            base: tuple[float | None, float | None, int] | None = None
            for k in (1, 2, 4):
                logloss, rmse, consumed = run(
                    broker.bootstrap_servers, records, k, limits, Path(tmp), args.every
                )
                base = base or (logloss, rmse, consumed)

                def rel(x: float | None, b: float | None) -> str:
                    return f"{(x / b - 1) * 100:+.2f}%" if x is not None and b else "-"

                row = (
                    f"| {name} | {k} | {consumed:,} | {fmt(logloss)} ({rel(logloss, base[0])}) "
                    f"| {fmt(rmse)} ({rel(rmse, base[1])}) |"
                )
                print(row, flush=True)
                rows.append(row)
    body = "\n".join(
        [
            "## Quality with 1, 2 and 4 consumers (issue 11)",
            "",
            f"Machine: {machine()}.",
            f"Command: `python bench/scale_quality.py --events {args.events}"
            + ("" if args.every == default_every else f" --every {args.every}")
            + (f" --out {args.out}`" if args.out else "`"),
            "",
            "k partitions and k consumers of one group (threads of one process, one shared "
            f"state dir), the partitions' learners exchanging item deltas every {args.every} "
            "messages" + (" (the default)" if args.every == default_every else "") + ". "
            "Prequential scores pooled over the partitions' final checkpoints; "
            "in brackets, the change against one consumer on one partition.",
            "",
            "| stream | consumers (= partitions) | messages | click log loss | rating RMSE |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    if args.out:
        replace_section(args.out, "scale-quality", body)


if __name__ == "__main__":
    main()
