"""Memory of a long-running consumer's learner: per user held and per event seen.

Runs the consumer's learner (``FeedbackLearner.process`` on the encoded events, as the
consumer applies them, no broker) over one seeded simulator stream with a large population,
and at each checkpoint of the stream (``--at``, in messages) records:

* the process's resident memory above what it was before the first message (``/proc``);
* the size of the learner pickled as the checkpoint would save it;
* the users and items the learner holds.

Bytes per user divide the learner's resident growth by the users held; bytes per event
divide it by the messages applied (the de-duplication window of event ids grows with the
events up to ``ConsumerConfig.dedup_window``). With ``--max-users`` the learner keeps at
most that many users (least recently seen evicted)::

    .venv/bin/python bench/memory.py --at 1000000 3000000 --section /tmp/memory.md
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import Settings  # noqa: E402
from stream.events import encode_event  # noqa: E402
from stream.learner import FeedbackLearner  # noqa: E402


def resident_bytes() -> int:
    """The process's resident set size now."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def users_and_items(learner: FeedbackLearner) -> tuple[int, int]:
    implicit = learner.models.implicit  # every user and item with an interaction
    return implicit.n_users, implicit.n_items


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    sim = Simulator(SimulatorConfig(seed=args.seed, n_users=args.users, n_items=args.items))
    overrides: dict[str, Any] = {}
    if args.max_users is not None:
        overrides["max_users"] = args.max_users
    settings = Settings().model_copy(
        update={"consumer": Settings().consumer.model_copy(update=overrides)}
    )
    learner = FeedbackLearner(settings)
    process = learner.process
    gc.collect()
    base = resident_bytes()
    rows: list[dict[str, Any]] = []
    stops = sorted(args.at)
    messages, started = 0, time.perf_counter()
    for profile in sim.profiles():
        process(encode_event(profile))
        messages += 1
    for event in sim.events(stops[-1]):
        process(encode_event(event))
        messages += 1
        if messages >= stops[0]:
            stops.pop(0)
            gc.collect()
            grown = resident_bytes() - base
            users, items = users_and_items(learner)
            pickled = len(pickle.dumps(learner, protocol=pickle.HIGHEST_PROTOCOL))
            row = {
                "messages": messages,
                "users": users,
                "items": items,
                "resident_mib": grown / 2**20,
                "pickled_mib": pickled / 2**20,
                "bytes_per_user": grown / max(users, 1),
                "bytes_per_event": grown / messages,
                "pickled_per_user": pickled / max(users, 1),
                "seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(
                f"{messages:,} messages: {users:,} users, {items:,} items, "
                f"+{row['resident_mib']:.0f} MiB resident, {row['pickled_mib']:.0f} MiB pickled",
                flush=True,
            )
            if not stops:
                break
    return rows


def section(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    cap = f", at most {args.max_users:,} users held" if args.max_users else ""
    lines = [
        "### Memory of the learner",
        "",
        f"Simulator population of {args.users:,} users and {args.items:,} items (seed "
        f"{args.seed}){cap}; default settings (de-duplication window "
        f"{Settings().consumer.dedup_window:,} event ids). Machine: {machine()}.",
        "",
        f"    .venv/bin/python bench/memory.py --at {' '.join(str(a) for a in args.at)} "
        f"--users {args.users} --items {args.items}"
        + (f" --max-users {args.max_users}" if args.max_users else ""),
        "",
        "| messages | users held | items | resident growth | pickled checkpoint "
        "| resident per user | resident per message | pickled per user |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['messages']:,} | {r['users']:,} | {r['items']:,} "
            f"| {r['resident_mib']:.0f} MiB | {r['pickled_mib']:.0f} MiB "
            f"| {r['bytes_per_user']:,.0f} B | {r['bytes_per_event']:,.0f} B "
            f"| {r['pickled_per_user']:,.0f} B |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--at", type=int, nargs="+", default=[1_000_000, 3_000_000])
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-users", type=int, default=None)
    ap.add_argument("--section", type=Path, help="Write the Markdown section to this file.")
    args = ap.parse_args()
    rows = measure(args)
    text = section(args, rows)
    print(text)
    if args.section is not None:
        args.section.write_text(text)


if __name__ == "__main__":
    main()
