"""The whole loop offline: online only vs online + batch retrains vs a frozen batch model.

Each arm runs the consumer's learner over the same ordered stream with
:class:`consumers.offline_loop.OfflineLoop` (the retrainer's own code at the retrain
points, accepted models swapped in as the consumer swaps them):

* ``online``: online learning only;
* ``periodic``: a batch retrain every ``--every`` messages;
* ``drift``: a batch retrain when the drift policy decides;
* ``frozen``: a batch model trained once at ``--freeze-share`` of the stream, then only
  scoring (no learning).

Streams: MovieLens-100K in timestamp order (ratings: RMSE/MAE over the whole stream and its
last 20%) and the seeded simulator with an abrupt taste shift (also log loss, AUC and
recall@10). ``--drift-seeds N`` adds the drift runs over N seeds: retrain request after the
shift, whether the post-drift retrain was accepted, and how long the click log loss takes
to come back to its pre-drift level with and without the retrain::

    .venv/bin/python bench/retrain_loop.py --section /tmp/retrain_loop.md
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.movielens import movielens_100k  # noqa: E402
from bench.report import machine, replace_section  # noqa: E402
from consumers.evaluate import record_bytes  # noqa: E402
from consumers.offline_loop import OfflineLoop, RetrainSchedule  # noqa: E402
from producers.replay import open_source  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import Settings  # noqa: E402
from stream.evaluation import Dwelled, Engagement, Rated  # noqa: E402
from stream.events import encode_event  # noqa: E402

# Pre-drift level: the click log loss over this many messages before the shift; recovered
# when its mean over RECOVERY_SPAN messages after the shift (windows of RECOVERY_WINDOW) is
# back within RECOVERY_TOLERANCE of that level (a single window crosses it by chance).
PRE_WINDOW = 20_000
RECOVERY_WINDOW = 2_500
RECOVERY_SPAN = 10_000
RECOVERY_TOLERANCE = 0.05


@dataclass
class Tail:
    """Prequential losses of the whole stream and of the messages from ``tail_from`` on,
    and the click log loss per message window (for the recovery time)."""

    tail_from: int
    window: int = RECOVERY_WINDOW
    sums: dict[str, list[float]] = field(default_factory=dict)
    windows: dict[int, list[float]] = field(default_factory=dict)

    def _add(self, key: str, value: float, index: int) -> None:
        for part in ("whole", "tail") if index >= self.tail_from else ("whole",):
            s = self.sums.setdefault(f"{part}_{key}", [0.0, 0])
            s[0] += value
            s[1] += 1

    def rating(self, o: Rated, /) -> None:
        self._add("se", o.squared_error, o.event_index)
        self._add("ae", math.sqrt(o.squared_error), o.event_index)

    def engagement(self, o: Engagement, /) -> None:
        self._add("ll", o.loss, o.event_index)
        w = self.windows.setdefault(o.event_index // self.window, [0.0, 0])
        w[0] += o.loss
        w[1] += 1

    def dwell(self, o: Dwelled, /) -> None:
        pass

    def mean(self, key: str) -> float | None:
        s = self.sums.get(key)
        return s[0] / s[1] if s and s[1] else None

    def figures(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for part in ("whole", "tail"):
            se = self.mean(f"{part}_se")
            out[f"{part}_rmse"] = math.sqrt(se) if se is not None else None
            out[f"{part}_mae"] = self.mean(f"{part}_ae")
            out[f"{part}_logloss"] = self.mean(f"{part}_ll")
        return out

    def logloss_between(self, start: int, end: int) -> float:
        ws = [
            w
            for k, w in self.windows.items()
            if start <= k * self.window and (k + 1) * self.window <= end
        ]
        return sum(w[0] for w in ws) / max(1, sum(w[1] for w in ws))

    def recovered_at(self, change: int, level: float) -> int | None:
        """The message index at which the click log loss over the last RECOVERY_SPAN
        messages after ``change`` is back within RECOVERY_TOLERANCE of ``level``."""
        span = RECOVERY_SPAN // self.window
        after = [k for k in sorted(self.windows) if k * self.window >= change]
        for i in range(span - 1, len(after)):
            ws = [self.windows[k] for k in after[i - span + 1 : i + 1]]
            if sum(w[0] for w in ws) / max(1, sum(w[1] for w in ws)) <= level * (
                1 + RECOVERY_TOLERANCE
            ):
                return (after[i] + 1) * self.window
        return None


def settings_for(holdout: int, trials: int, seed: int = 42) -> Settings:
    s = Settings()
    return s.model_copy(
        update={
            "retrain": s.retrain.model_copy(
                update={"holdout_events": holdout, "validation_events": holdout, "trials": trials}
            ),
            "model": s.model.model_copy(update={"seed": seed}),
        }
    )


def run_arm(
    records: list[bytes], settings: Settings, schedule: RetrainSchedule, tail_from: int
) -> dict[str, Any]:
    started = time.perf_counter()
    loop = OfflineLoop(settings, schedule)
    tail = Tail(tail_from)
    loop.learner.observers.append(tail)
    for raw in records:
        loop.process(raw)
    learner = loop.learner
    scores = learner.scores()
    return {
        "schedule": schedule.name,
        **tail.figures(),
        "auc": scores["auc"],
        "recall_at_10": scores["recall_at_10"],
        "retrains": len(loop.retrains),
        "accepted": sum(r["status"] == "accepted" for r in loop.retrains),
        "decisions": [r["event_index"] for r in loop.retrains],
        "statuses": [r["status"] for r in loop.retrains],
        "confidences": [r.get("confidence") for r in loop.retrains],
        "seconds": time.perf_counter() - started,
        "tail": tail,
        "consumed": learner.counts.consumed,
        "dead_lettered": learner.counts.dead_lettered,
        "filtered": learner.counts.filtered,
    }


def movielens_records() -> list[bytes]:
    return [record_bytes(r) for r in open_source(movielens_100k(), "movielens-100k").records()]


def simulator_records(seed: int, n: int, drift_at: int, share: float) -> tuple[list[bytes], int]:
    """The stream and the index of the shift in it (after the profiles)."""
    sim = Simulator(
        SimulatorConfig(seed=seed, bot_share=0.02, drift_at=drift_at, drift_share=share)
    )
    profiles = [encode_event(p) for p in sim.profiles()]
    return profiles + [encode_event(e) for e in sim.events(n)], len(profiles) + drift_at


def _arm_task(
    task: tuple[str, str, dict[str, Any], dict[str, Any]],
) -> tuple[str, str, dict[str, Any]]:
    stream, arm, data, sched = task
    records = movielens_records() if stream == "movielens" else simulator_records(**data)[0]
    settings = settings_for(sched.pop("holdout"), sched.pop("trials"))
    tail_from = int(len(records) * 0.8)
    out = run_arm(records, settings, RetrainSchedule(**sched), tail_from)
    out.pop("tail")
    return stream, arm, out


def _drift_task(task: tuple[int, int, int, float, int, int]) -> dict[str, Any]:
    seed, n, drift_at, share, holdout, trials = task
    records, change = simulator_records(seed, n, drift_at, share)
    out: dict[str, Any] = {"seed": seed, "change": change}
    for arm, schedule in (("online", RetrainSchedule()), ("drift", RetrainSchedule(on_drift=True))):
        r = run_arm(records, settings_for(holdout, trials, seed), schedule, change)
        tail: Tail = r["tail"]
        level = tail.logloss_between(change - PRE_WINDOW, change)
        out[arm] = {
            "level": level,
            "recovered": tail.recovered_at(change, level),
            "decisions": r["decisions"],
            "statuses": r["statuses"],
            "confidences": r["confidences"],
            "logloss_after": r["tail_logloss"],
        }
    return out


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def arms_table(rows: Iterable[tuple[str, dict[str, Any]]], clicks: bool) -> list[str]:
    head = "| arm | RMSE | RMSE last 20% | MAE | MAE last 20% |"
    rule = "|---|---|---|---|---|"
    if clicks:
        head += " log loss | log loss last 20% | AUC | recall@10 |"
        rule += "---|---|---|---|"
    lines = [head + " retrains (accepted) | seconds |", rule + "---|---|"]
    for arm, r in rows:
        cells = [r["whole_rmse"], r["tail_rmse"], r["whole_mae"], r["tail_mae"]]
        if clicks:
            cells += [r["whole_logloss"], r["tail_logloss"], r["auc"], r["recall_at_10"]]
        lines.append(
            f"| {arm} ({r['schedule']}) | "
            + " | ".join(_fmt(c) for c in cells)
            + f" | {r['retrains']} ({r['accepted']}) | {r['seconds']:.0f} |"
        )
    return lines


def drift_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| seed | retrain requested after shift | retrain (confidence) | log loss after shift,"
        " online / loop | recovered (online) | recovered (loop) |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        c = r["change"]
        d = r["drift"]
        first = next((i for i in d["decisions"] if i >= c), None)
        status = "none"
        if first is not None:
            at = d["decisions"].index(first)
            conf = d["confidences"][at]
            status = d["statuses"][at] + (f" ({conf:.2f})" if conf is not None else "")

        def rec(x: int | None, c: int = c) -> str:
            return f"+{x - c:,}" if x is not None else "not in the run"

        lines.append(
            f"| {r['seed']} | {'+' + format(first - c, ',') if first is not None else 'missed'} "
            f"| {status} | {r['online']['logloss_after']:.4f} / {d['logloss_after']:.4f} "
            f"| {rec(r['online']['recovered'])} | {rec(d['recovered'])} |"
        )
    return lines


def arms_lines(
    results: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace, n_ml: int, n_sim: int
) -> list[str]:
    ml, sim = results["movielens"], results["simulator"]
    gain = ml["online"]["whole_rmse"] - ml["periodic"]["whole_rmse"]
    return [
        "",
        "Each arm is the consumer's learner over the same ordered stream, with the retrainer's",
        "own code run in the loop on exactly the events learned so far (`feedback-loop evaluate",
        "--retrain-every N / --retrain-on-drift / --freeze-at N` runs the same), an accepted",
        f"model swapped in. Retrains search {args.trials} trials; frozen: batch-trained once at",
        f"{args.freeze_share:.0%} of the stream, then scoring only.",
        "",
        f"MovieLens-100K in timestamp order ({n_ml:,} messages; hold-out and validation",
        f"{args.ml_holdout:,} events each; every {args.every:,} messages):",
        "",
        *arms_table(ml.items(), clicks=False),
        "",
        f"The loop beats online only by {gain:.4f} RMSE over the whole stream "
        f"({ml['online']['whole_rmse']:.4f} -> {ml['periodic']['whole_rmse']:.4f}).",
        "",
        f"Simulator, seed 7, {args.sim_events:,} events, abrupt taste shift of "
        f"{args.drift_share:.0%} of the users at event {args.drift_at:,} (hold-out and",
        f"validation {args.sim_holdout:,} events each; periodic: every {args.sim_every:,}",
        "messages):",
        "",
        *arms_table(sim.items(), clicks=True),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, default=5000, help="periodic retrain interval (messages)")
    ap.add_argument("--ml-holdout", type=int, default=2500, help="hold-out = validation, MovieLens")
    ap.add_argument(
        "--sim-holdout", type=int, default=2500, help="hold-out = validation, simulator"
    )
    ap.add_argument("--trials", type=int, default=6, help="search trials per retrain")
    ap.add_argument("--freeze-share", type=float, default=0.5)
    ap.add_argument("--sim-events", type=int, default=150_000)
    ap.add_argument("--drift-at", type=int, default=60_000)
    ap.add_argument("--drift-share", type=float, default=0.5)
    ap.add_argument("--sim-every", type=int, default=20_000, help="periodic interval, simulator")
    ap.add_argument("--drift-seeds", type=int, default=10, help="0: skip the per-seed runs")
    ap.add_argument("--only-drift", action="store_true", help="only the per-seed drift runs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--section", type=Path, help="write the BENCHMARKS.md section here")
    ap.add_argument("--out", type=Path, help="or replace the section in this file")
    args = ap.parse_args()
    command = "python bench/retrain_loop.py " + " ".join(sys.argv[1:])
    started = time.perf_counter()
    n_ml = len(movielens_records())
    sim_data = {
        "seed": 7,
        "n": args.sim_events,
        "drift_at": args.drift_at,
        "share": args.drift_share,
    }
    n_sim = len(simulator_records(**sim_data)[0])
    tasks = []
    for stream, n, holdout in (
        ("movielens", n_ml, args.ml_holdout),
        ("simulator", n_sim, args.sim_holdout),
    ):
        base = {"holdout": holdout, "trials": args.trials}
        for arm, sched in (
            ("online", {}),
            ("periodic", {"every": args.every if stream == "movielens" else args.sim_every}),
            ("drift", {"on_drift": True}),
            ("frozen", {"freeze_at": int(n * args.freeze_share)}),
        ):
            tasks.append((stream, arm, sim_data, {**base, **sched}))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    drift_runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.workers) as pool:
        for stream, arm, out in pool.map(_arm_task, [] if args.only_drift else tasks):
            results.setdefault(stream, {})[arm] = out
            print(
                stream,
                arm,
                {k: v for k, v in out.items() if k not in ("decisions", "statuses")},
                flush=True,
            )
        if args.drift_seeds:
            seeds = [
                (
                    seed,
                    args.sim_events,
                    args.drift_at,
                    args.drift_share,
                    args.sim_holdout,
                    args.trials,
                )
                for seed in range(args.drift_seeds)
            ]
            for run in pool.map(_drift_task, seeds):
                drift_runs.append(run)
                print(
                    "drift seed",
                    run["seed"],
                    run["drift"]["decisions"],
                    run["drift"]["statuses"],
                    run["online"]["recovered"],
                    run["drift"]["recovered"],
                    flush=True,
                )
    lines = [
        "## Retrain in the loop",
        "",
        f"Command: `{command}` ({time.perf_counter() - started:.0f} s). Machine: {machine()}.",
    ]
    if results:
        lines += arms_lines(results, args, n_ml, n_sim)
    if drift_runs:
        accepted = 0
        delays, missed = [], 0
        faster = 0
        for r in drift_runs:
            c, d = r["change"], r["drift"]
            first = next((i for i in d["decisions"] if i >= c), None)
            if first is None:
                missed += 1
                continue
            delays.append(first - c)
            accepted += d["statuses"][d["decisions"].index(first)] == "accepted"
            on, lo = r["online"]["recovered"], d["recovered"]
            faster += lo is not None and (on is None or lo < on)
        lines += [
            "",
            f"Abrupt shift, {len(drift_runs)} seeds (same settings; the drift arm against online "
            "only). Recovered: when the click log loss over the last",
            f"{RECOVERY_SPAN:,} messages after the shift is back within {RECOVERY_TOLERANCE:.0%} "
            f"of its mean over the {PRE_WINDOW:,} before it.",
            "",
            *drift_table(drift_runs),
            "",
            f"Median retrain request +{statistics.median(delays):,.0f} messages after the shift, "
            f"{missed} missed; post-drift retrain accepted in {accepted} of {len(drift_runs)}; "
            f"the loop recovered sooner than online only in {faster} of {len(drift_runs)}.",
        ]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.section:
        args.section.write_text(section)
    if args.out:
        replace_section(args.out, "retrain_loop", section)


if __name__ == "__main__":
    main()
