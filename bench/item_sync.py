"""Cost and quality of sharing the item model between learners of several partitions.

A seeded simulator stream is split by user into ``k`` parts, one learner per part; the
learners take turns processing ``every`` events each, then exchange deltas (every learner
takes its delta, all others apply it). Printed per (k, every): pooled prequential click log
loss and rating RMSE (over all learners' events), mean bytes per delta, microseconds per
take and per apply; and the per-event cost of learning with and without sharing.

    .venv/bin/python bench/item_sync.py --events 60000 --items 1700 --users 3000 \\
        --parts 2,4 --every 50,200,1000
"""

from __future__ import annotations

import argparse
import math
import time

from producers.simulator import SimulatorConfig, split_by_user
from stream.config import Settings
from stream.events import Event
from stream.learner import FeedbackLearner


def pooled(learners: list[FeedbackLearner]) -> tuple[float, float]:
    n = sum(lr.click_score.n for lr in learners)
    logloss = sum((lr.click_score.logloss or 0.0) * lr.click_score.n for lr in learners) / n
    m = sum(lr.rating_score.n for lr in learners)
    sq = sum((lr.rating_score.rmse or 0.0) ** 2 * lr.rating_score.n for lr in learners)
    return logloss, math.sqrt(sq / m)


def run(parts: list[list[Event]], every: int, share: bool) -> dict[str, float]:
    learners = [FeedbackLearner(Settings()) for _ in parts]
    syncs = [lr.share_items(i, 1.0 / len(parts)) for i, lr in enumerate(learners)]
    if not share:
        syncs = []
    learn_s = take_s = apply_s = 0.0
    takes = applies = size = deltas = 0
    for start in range(0, max(map(len, parts)), every):
        t0 = time.perf_counter()
        for learner, part in zip(learners, parts, strict=True):
            for e in part[start : start + every]:
                learner.apply(e)
        learn_s += time.perf_counter() - t0
        if not syncs:
            continue
        t0 = time.perf_counter()
        taken = [s.take() for s in syncs]
        take_s += time.perf_counter() - t0
        takes += len(taken)
        raws = [d.to_bytes() for d in taken if d is not None]
        size += sum(map(len, raws))
        deltas += len(raws)
        t0 = time.perf_counter()
        for s in syncs:
            for d in taken:
                if d is not None and s.apply(d):
                    applies += 1
        apply_s += time.perf_counter() - t0
    logloss, rmse = pooled(learners)
    n_events = sum(map(len, parts))
    return {
        "logloss": logloss,
        "rmse": rmse,
        "us_per_event": learn_s / n_events * 1e6,
        "bytes": size / max(deltas, 1),
        "us_take": take_s / max(takes, 1) * 1e6,
        "us_apply": apply_s / max(applies, 1) * 1e6,
        "items": learners[0].models.implicit.n_items,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--items", type=int, default=1700)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--parts", default="2,4")
    ap.add_argument("--every", default="50,200,1000")
    args = ap.parse_args()
    cfg = SimulatorConfig(n_users=args.users, n_items=args.items, seed=args.seed)
    run(split_by_user(cfg, 5000, 1), 10**9, share=False)  # warm up (imports, caches)
    one = run(split_by_user(cfg, args.events, 1), 10**9, share=False)
    print(
        f"1 learner: logloss {one['logloss']:.4f} rmse {one['rmse']:.4f} "
        f"{one['us_per_event']:.1f} us/event",
        flush=True,
    )
    for k in map(int, args.parts.split(",")):
        parts = split_by_user(cfg, args.events, k)
        alone = run(split_by_user(cfg, args.events, k, items_everywhere=True), 10**9, share=False)
        print(
            f"{k} learners apart: logloss {alone['logloss']:.4f} rmse {alone['rmse']:.4f} "
            f"{alone['us_per_event']:.1f} us/event",
            flush=True,
        )
        for every in map(int, args.every.split(",")):
            r = run(parts, every, share=True)
            print(
                f"{k} learners, exchange every {every} events each: logloss {r['logloss']:.4f} "
                f"({r['logloss'] / one['logloss'] - 1:+.2%}) rmse {r['rmse']:.4f} "
                f"({r['rmse'] / one['rmse'] - 1:+.2%}) | {r['us_per_event']:.1f} us/event | "
                f"delta {r['bytes']:,.0f} B, take {r['us_take']:,.0f} us, "
                f"apply {r['us_apply']:,.0f} us ({r['items']:,} items)",
                flush=True,
            )


if __name__ == "__main__":
    main()
