"""Drift detector benchmark: detection delay, false alarms, cost; writes a BENCHMARKS.md section.

    .venv/bin/python bench/drift.py [--events 300000] [--seeds 10] [--out-section]

1. Synthetic loss streams with a known change point, every concept detector of
   ``DriftMonitor.default()``: engagement log loss (model probabilities ~ Beta(3, 17), clicks
   drawn with a logit shift tuned so the mean log loss is 0.40, then 0.48 = +20 %) and rating
   squared error (Gaussian errors, RMSE 0.90 then 1.00 = +23 % squared error). Abrupt and
   gradual (linear over K events) changes; delay = first alarm after the change starts, mean
   over seeds; the same for a *decrease* (which must not alarm).
2. Stationary streams of the same kind: false alarms per million events.
   (1 and 2 feed numpy block means to ``LossDriftDetector.update_block``, which is what
   ``update`` does every ``block_size`` losses.)
3. Data detectors on i.i.d. categorical streams drawn from the distributions the simulator
   produced (stationary: false alarms; shifted half-way to a rotated distribution: delay).
4. End to end: the simulator through ``FeedbackLearner``, the monitor fed with
   the learner's own prequential scores (``learner.drift`` if the learner has one, else a
   ``DriftMonitor`` fed by a loop that mirrors the learner: predict, then apply). Three runs
   with one seed: no drift, abrupt drift (``drift_at``, ``drift_share`` 0.5) and gradual drift
   (``drift_duration``).
5. Cost per update, amortized, of the hot-path calls.

Without ``--out-section`` the markdown is printed; with it, the text between
``<!-- drift:begin -->`` and ``<!-- drift:end -->`` in BENCHMARKS.md (``--out``) is replaced
(the markers and section are appended when absent), nothing else in the file is touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, replace_section  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import Settings  # noqa: E402
from stream.drift import (  # noqa: E402
    CusumDriftDetector,
    DataMethod,
    Decision,
    DistributionDriftDetector,
    DriftMonitor,
    LossDriftDetector,
    RetrainPolicy,
    Signal,
)
from stream.learner import FeedbackLearner  # noqa: E402

# -------------------------------------------------------------------------- synthetic losses

_Q_SAMPLE = np.random.default_rng(12345).beta(3, 17, 400_000)


def _expected_logloss(shift: float) -> float:
    q = _Q_SAMPLE
    r = 1.0 / (1.0 + np.exp(-(np.log(q / (1 - q)) + shift)))
    return float(np.mean(-(r * np.log(q) + (1 - r) * np.log1p(-q))))


def logit_shift_for(mean: float) -> float:
    """Logit shift of the true click probability that gives this expected log loss."""
    lo, hi = -5.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _expected_logloss(mid) < mean else (lo, mid)
    return (lo + hi) / 2


def logloss_stream(shifts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Log losses of a model predicting q ~ Beta(3, 17) when clicks follow logit(q) + shift."""
    n = shifts.size
    q = rng.beta(3, 17, n)
    r = 1.0 / (1.0 + np.exp(-(np.log(q / (1 - q)) + shifts)))
    clicked = rng.random(n) < r
    return np.where(clicked, -np.log(q), -np.log1p(-q))


def se_stream(rmse: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Squared errors of Gaussian rating errors with the given RMSE per event."""
    return (rng.standard_normal(rmse.size) * rmse) ** 2


@dataclasses.dataclass(frozen=True)
class LossCase:
    stream: str  # "logloss" or "se"
    before: float  # logit shift (logloss) or RMSE (se)
    after: float
    decrease: float


def _profile(n: int, start: int | None, duration: int, before: float, after: float) -> np.ndarray:
    values = np.full(n, before)
    if start is not None:
        ramp = np.clip((np.arange(n) - start + 1) / max(duration, 1), 0.0, 1.0)
        values = before + (after - before) * np.where(np.arange(n) >= start, ramp, 0.0)
    return values


def run_loss(
    task: tuple[str, dict[str, Any], str, float, float, int, int | None, int, int],
) -> tuple[list[int], float]:
    """One synthetic run; returns the alarm event indices and the seconds spent in the detector."""
    method, params, stream, before, after, n, start, duration, seed = task
    rng = np.random.default_rng(seed)
    prof = _profile(n, start, duration, before, after)
    losses = logloss_stream(prof, rng) if stream == "logloss" else se_stream(prof, rng)
    block = params["block_size"]
    det = LossDriftDetector("bench", method, seed=seed, **params)  # type: ignore[arg-type]
    means = losses[: n - n % block].reshape(-1, block).mean(axis=1).tolist()
    fired = []
    t = time.perf_counter()
    for i, m in enumerate(means):
        idx = (i + 1) * block - 1
        if det.update_block(m, idx) is not None:
            fired.append(idx)
    return fired, time.perf_counter() - t


# ---------------------------------------------------------------------------- end to end


def gradual_config(base: SimulatorConfig, drift_at: int, duration: int) -> SimulatorConfig:
    """``base`` with a gradual drift; a clear error while the simulator cannot do it."""
    if "drift_duration" not in {f.name for f in dataclasses.fields(SimulatorConfig)}:
        raise RuntimeError(
            "producers.simulator.SimulatorConfig has no drift_duration field yet "
            "(gradual drift: tastes interpolated over drift_duration events from drift_at)"
        )
    return dataclasses.replace(base, drift_at=drift_at, drift_duration=duration)  # type: ignore[call-arg]


@dataclasses.dataclass
class SimRun:
    label: str
    signals: list[Signal]
    snapshot: list[dict[str, Any]]
    reference: dict[str, list[int]]
    max_before: dict[str, float]  # largest statistic before drift_at, by detector
    max_after: dict[str, float]  # from drift_at on
    levels: list[tuple[float, float]]  # (log loss, rating SE) per LEVEL window
    seconds: float
    events: int


def learner_monitor(learner: FeedbackLearner) -> DriftMonitor:
    """The learner's own drift monitor (``learner.drift`` or ``learner.lifecycle.monitor``)."""
    monitor = getattr(learner, "drift", None)
    if monitor is None:
        monitor = getattr(getattr(learner, "lifecycle", None), "monitor", None)
    if not isinstance(monitor, DriftMonitor):
        raise RuntimeError(
            "the learner has no DriftMonitor (learner.drift / learner.lifecycle.monitor): "
            "is settings.drift.enabled false?"
        )
    return monitor


def _sums(learner: FeedbackLearner) -> tuple[int, float, int, float]:
    """Prequential (clicks scored, log-loss sum, ratings scored, squared-error sum) so far."""
    c, r = learner.click_score, learner.rating_score
    return c.n, (c.logloss or 0.0) * c.n, r.n, (r.rmse or 0.0) ** 2 * r.n


LEVEL = 20_000  # events per loss-level window


def level_windows(n: int, drift_at: int) -> list[tuple[int, int]]:
    """Windows of the loss levels: before the drift point, just after it, at the end."""
    return [(drift_at - LEVEL, drift_at), (drift_at, drift_at + LEVEL), (n - LEVEL, n)]


def run_simulator(label: str, cfg: SimulatorConfig, n: int, drift_at: int) -> SimRun:
    """The learner over ``n`` simulated events (profiles first), collecting its drift signals."""
    sim = Simulator(cfg)
    learner = FeedbackLearner(Settings())
    for p in sim.profiles():
        learner.apply(p)
    monitor = learner_monitor(learner)
    dets = list(monitor.detectors.values())
    ticks = {d.name: 0 for d in dets}
    max_before = {d.name: -math.inf for d in dets}
    max_after = {d.name: -math.inf for d in dets}
    bounds = sorted({b for w in level_windows(n, drift_at) for b in w})
    at: dict[int, tuple[int, float, int, float]] = {}
    signals: list[Signal] = []
    apply = learner.apply
    started = time.perf_counter()
    for k, event in enumerate(sim.events(n)):
        if k in bounds:
            at[k] = _sums(learner)
        apply(event)
        signals.extend(monitor.drain())
        best = max_after if k >= drift_at else max_before
        for d in dets:
            tick = d.n_windows if isinstance(d, DistributionDriftDetector) else d.n_blocks
            if tick != ticks[d.name]:
                ticks[d.name] = tick
                if d.statistic > best[d.name]:
                    best[d.name] = d.statistic
    at[n] = _sums(learner)
    seconds = time.perf_counter() - started
    levels = []
    for a, b in level_windows(n, drift_at):
        x, y = at[a], at[b]
        levels.append(((y[1] - x[1]) / max(y[0] - x[0], 1), (y[3] - x[3]) / max(y[2] - x[2], 1)))
    reference = {
        d.name: list(d.reference or []) for d in dets if isinstance(d, DistributionDriftDetector)
    }
    return SimRun(
        label, signals, monitor.snapshot(), reference, max_before, max_after, levels, seconds, n
    )


def _sim_task(task: tuple[str, SimulatorConfig, int, int]) -> SimRun:
    return run_simulator(*task)


# -------------------------------------------------------------------------- data detectors


def run_data(
    task: tuple[str, int, str, int, list[float], list[float] | None, int, int, int],
) -> tuple[list[int], float]:
    """Alarm indices and the largest statistic of one categorical stream."""
    name, k, method, window, p0, p1, n, change, seed = task
    rng = np.random.default_rng(seed)
    cats = rng.choice(k, n, p=np.asarray(p0)).tolist()
    if p1 is not None:
        cats[change:] = rng.choice(k, n - change, p=np.asarray(p1)).tolist()
    det = DistributionDriftDetector(name, k, method=method, window=window)  # type: ignore[arg-type]
    fired, top, windows = [], 0.0, 0
    for i, c in enumerate(cats):
        if det.update(c, i) is not None:
            fired.append(i)
        if det.n_windows != windows:
            windows = det.n_windows
            top = max(top, det.statistic)
    return fired, top


# ---------------------------------------------------------------------------------- costs


def _timeit(fn: Callable[[], None], n: int) -> float:
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def costs(n: int = 200_000) -> list[tuple[str, float]]:
    """Amortized microseconds per call (best of 3, the bare loop's cost subtracted)."""
    rng = np.random.default_rng(0)
    losses = logloss_stream(np.zeros(n), rng).tolist()
    cats = rng.integers(0, 12, n).tolist()
    dwell = rng.lognormal(4.0, 0.7, n).tolist()
    ref = configured_monitor()
    concept = [d for d in ref.detectors.values() if isinstance(d, LossDriftDetector)]
    eng = next(d.block_size for d in concept if d.name.startswith("engagement"))
    rat = next(d.block_size for d in concept if d.name.startswith("rating"))
    cusum = Settings().drift.cusum_block_size
    window = next(
        d.window for d in ref.detectors.values() if isinstance(d, DistributionDriftDetector)
    )

    def monitor_loop(method: str, data: list[Any]) -> Callable[[], None]:
        def run() -> None:
            f = getattr(configured_monitor(), method)
            for i, v in enumerate(data):
                f(v, i)

        return run

    def detector_loop(factory: Callable[[], Any], data: list[Any]) -> Callable[[], None]:
        def run() -> None:
            up = factory().update
            for i, v in enumerate(data):
                up(v, i)

        return run

    def empty() -> None:
        for _i, _v in enumerate(losses):
            pass

    base = _timeit(empty, n)
    calls: list[tuple[str, Callable[[], None]]] = [
        (
            f"`DriftMonitor.observe_engagement_loss` (3 River detectors, block {eng}, and the "
            f"CUSUM, block {cusum})",
            monitor_loop("observe_engagement_loss", losses),
        ),
        (
            "`CusumDriftDetector.update`, block " + str(cusum),
            detector_loop(functools.partial(CusumDriftDetector, "x", cusum), losses),
        ),
        (
            f"`DriftMonitor.observe_rating_error` (2 detectors, block {rat})",
            monitor_loop("observe_rating_error", losses),
        ),
    ]
    for method in ("adwin", "page_hinkley", "kswin"):
        calls.append(
            (
                f"`LossDriftDetector.update`, {method}, block {eng}",
                detector_loop(
                    functools.partial(LossDriftDetector, "x", method, block_size=eng), losses
                ),
            )
        )
    data_methods: tuple[DataMethod, ...] = ("psi", "js")
    for dm in data_methods:
        calls.append(
            (
                f"`DistributionDriftDetector.update`, {dm}, window {window}, 12 categories",
                detector_loop(
                    functools.partial(DistributionDriftDetector, "x", 12, dm, window), cats
                ),
            )
        )
    calls += [
        (
            "`DriftMonitor.observe_click_genre` (1 detector)",
            monitor_loop("observe_click_genre", cats),
        ),
        (
            "`DriftMonitor.observe_dwell` (bucketing + 1 detector)",
            monitor_loop("observe_dwell", dwell),
        ),
    ]
    return [(name, max(_timeit(fn, n) - base, 0.0)) for name, fn in calls]


# ------------------------------------------------------------------- retrain decisions


# The demo's simulator (`feedback-loop demo --drift-at 60000`: bots, half the users change
# tastes) and the population of the end-to-end runs above (no bots).
DECISION_DRIFT_AT = 60_000
DECISION_EVENTS = 150_000
POPULATIONS: dict[str, dict[str, Any]] = {
    "demo": {"bot_share": 0.02, "drift_share": 0.5},
    "bench": {"drift_share": 0.5},
}


@dataclasses.dataclass
class DecisionRun:
    """The alarms of one simulator run through ``FeedbackLearner``, its own monitor."""

    population: str
    seed: int
    drift_at: int | None  # in the learner's event index (profiles included)
    events: int
    signals: list[Signal]
    max_cusum: float  # largest statistic of the calibrated CUSUM
    seconds: float
    # (block mean, event index) the CUSUM saw: to replay other CUSUM settings offline.
    cusum_blocks: list[tuple[float, int]]


def run_decisions(task: tuple[str, int, int, bool]) -> DecisionRun:
    """One seeded run; every alarm of the learner's monitor, in order (drained every event
    block: a signal keeps the event index it was raised at)."""
    population, seed, n, drift = task
    cfg = SimulatorConfig(
        seed=seed, drift_at=DECISION_DRIFT_AT if drift else None, **POPULATIONS[population]
    )
    sim = Simulator(cfg)
    learner = FeedbackLearner(Settings())
    for p in sim.profiles():
        learner.apply(p)
    start = learner.counts.consumed
    monitor = learner_monitor(learner)
    cusum = next(d for d in monitor.detectors.values() if isinstance(d, CusumDriftDetector))
    blocks: list[tuple[float, int]] = []
    update_block = cusum.update_block

    def recorded(mean: float, event_index: int) -> Signal | None:
        blocks.append((mean, event_index))
        return update_block(mean, event_index)

    cusum.update_block = recorded  # type: ignore[method-assign]
    signals: list[Signal] = []
    top = 0.0
    apply = learner.apply
    t = time.perf_counter()
    for k, event in enumerate(sim.events(n)):
        apply(event)
        if cusum.statistic > top:
            top = cusum.statistic
        if k % 1000 == 999:
            signals.extend(monitor.drain())
    signals.extend(monitor.drain())
    return DecisionRun(
        population,
        seed,
        start + DECISION_DRIFT_AT if drift else None,
        n,
        signals,
        top,
        time.perf_counter() - t,
        blocks,
    )


# The policy before the calibrated CUSUM: one data alarm decided, nothing decided alone.
PREVIOUS_POLICY = {"data_confirmations": 1, "deciding_detectors": ()}


def decisions_of(run: DecisionRun, previous: bool = False) -> list[Decision]:
    """What the retrain policy (``Settings().drift``) decides on the run's alarms; nothing is
    retrained, so the monitor is never reset and the replay is exact. ``previous``: the
    detectors and policy before the CUSUM (its alarms left out, :data:`PREVIOUS_POLICY`)."""
    config = Settings().drift
    signals = run.signals
    if previous:
        config = config.model_copy(update=PREVIOUS_POLICY)
        signals = [s for s in signals if s.detector != "engagement_logloss_cusum"]
    policy = RetrainPolicy(config)
    return [d for s in signals if (d := policy.consider(s)) is not None]


def _after(index: int, drift_at: int) -> str:
    return f"{index - drift_at:+,}"


def decision_section(runs: list[DecisionRun], command: str, elapsed: float) -> str:
    """The markdown of the decisions mode: per seed first alarm and decision, summaries."""
    d = Settings().drift
    lines = [
        "### Retrain decisions: abrupt shifts and long stationary runs",
        "",
        f"Machine: {machine()}.",
        f"Command: `{command.strip()}` ({elapsed:.0f} s).",
        "",
        "The simulator through `FeedbackLearner` (its own monitor, `Settings().drift`), every "
        "alarm replayed through the retrain policy (`RetrainPolicy.consider`, nothing "
        f"retrained or reset). Policy: warm-up {d.warmup_events:,} events; an alarm of "
        + ", ".join(f"`{n}`" for n in d.deciding_detectors)
        + f" decides alone (CUSUM blocks of {d.cusum_block_size}, threshold "
        f"{d.cusum_threshold:g}); otherwise {d.confirmations} distinct detectors or "
        f"{d.data_confirmations} distinct data detectors within {d.confirm_within:,} events. "
        "*Before*: the same alarms without the CUSUM's through the previous policy (a data "
        "alarm decided alone, nothing else did). Abrupt: half the users change "
        f"tastes at interaction event {DECISION_DRIFT_AT:,} of {DECISION_EVENTS:,}; "
        "populations `demo` (`feedback-loop demo --drift-at 60000`: 2 % bots) and `bench` "
        "(no bots, as the end-to-end runs above). Events after the shift in interaction "
        "events.",
        "",
    ]
    for population in POPULATIONS:
        drifted = [r for r in runs if r.population == population and r.drift_at is not None]
        if not drifted:
            continue
        lines += [
            f"**Abrupt shift, population `{population}`**",
            "",
            "| seed | first alarm after the shift | decision | before: decision | alarms "
            "before the shift | s |",
            "|---:|---|---|---|---:|---:|",
        ]
        firsts, decided, missed, before = [], [], 0, []
        for r in drifted:
            assert r.drift_at is not None
            after = [s for s in r.signals if s.event_index >= r.drift_at]
            early = len(r.signals) - len(after)
            dec = [x for x in decisions_of(r) if x.event_index >= r.drift_at]
            prev = [x for x in decisions_of(r, previous=True) if x.event_index >= r.drift_at]
            if prev:
                before.append(prev[0].event_index - r.drift_at)
            first = after[0] if after else None
            if first is not None:
                firsts.append(first.event_index - r.drift_at)
            if dec:
                decided.append(dec[0].event_index - r.drift_at)
            else:
                missed += 1
            lines.append(
                f"| {r.seed} | "
                + (
                    f"{_after(first.event_index, r.drift_at)} `{first.detector}`"
                    if first
                    else "none"
                )
                + " | "
                + (f"{_after(dec[0].event_index, r.drift_at)} ({dec[0].reason})" if dec else "none")
                + " | "
                + (f"{_after(prev[0].event_index, r.drift_at)}" if prev else "none")
                + f" | {early} | {r.seconds:.0f} |"
            )
        lines += [
            "",
            f"Median first alarm {_fmt(float(np.median(firsts)) if firsts else None)} events "
            f"after the shift; median decision "
            f"{_fmt(float(np.median(decided)) if decided else None)} (worst "
            f"{_fmt(float(max(decided)) if decided else None)}); missed {missed} of "
            f"{len(drifted)}. Before: median decision "
            f"{_fmt(float(np.median(before)) if before else None)}, missed "
            f"{len(drifted) - len(before)}.",
            "",
        ]
    stationary = [r for r in runs if r.drift_at is None]
    if stationary:
        n = stationary[0].events
        lines += [
            f"**Stationary, {len(stationary)} seeds x {n:,} events** (population "
            f"`{stationary[0].population}`)",
            "",
            "| seed | alarms (detector: count) | largest CUSUM statistic | decisions | before: "
            "decisions | s |",
            "|---:|---|---:|---|---:|---:|",
        ]
        total, total_before = 0, 0
        for r in stationary:
            counts: dict[str, int] = {}
            for s in r.signals:
                counts[s.detector] = counts.get(s.detector, 0) + 1
            dec = decisions_of(r)
            total += len(dec)
            n_before = len(decisions_of(r, previous=True))
            total_before += n_before
            alarms = ", ".join(f"`{k}`: {v}" for k, v in counts.items()) or "none"
            decs = "; ".join(f"@ {x.event_index:,} ({x.reason})" for x in dec) or "none"
            lines.append(
                f"| {r.seed} | {alarms} | {r.max_cusum:.2f} | {decs} | {n_before} | "
                f"{r.seconds:.0f} |"
            )
        lines += [
            "",
            f"Stationary decisions: {total} in {len(stationary) * n / 1e6:.0f}M "
            f"events (before: {total_before}); largest CUSUM statistic "
            f"{max(r.max_cusum for r in stationary):.2f} (threshold "
            f"{d.cusum_threshold:g}).",
            "",
        ]
    return "\n".join(lines)


def decisions_main(args: argparse.Namespace, command: str) -> None:
    """``--decisions``: the abrupt-shift seeds of both populations and the stationary seeds."""
    t0 = time.perf_counter()
    tasks = [(pop, s, DECISION_EVENTS, True) for pop in POPULATIONS for s in range(args.seeds)]
    tasks += [("demo", s, args.decision_stationary_events, False) for s in range(args.seeds)]
    # Longest first, so the two workers finish together.
    tasks.sort(key=lambda x: -x[2])
    cache = args.decision_runs
    if cache is not None and cache.exists():
        # The recorded alarms: the policy (and this report) can change without a rerun.
        runs, elapsed = pickle.loads(cache.read_bytes())
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            runs = list(pool.map(run_decisions, tasks))
        elapsed = time.perf_counter() - t0
        if cache is not None:
            cache.write_bytes(pickle.dumps((runs, elapsed)))
    for r in runs:
        print(
            r.population,
            r.seed,
            "drift" if r.drift_at else "stationary",
            [(s.detector, s.event_index - (r.drift_at or 0)) for s in r.signals][:8],
            f"{r.seconds:.0f}s",
            file=sys.stderr,
        )
    section = decision_section(runs, command, elapsed)
    if args.decisions_out is not None:
        args.decisions_out.write_text(section)
    print(section)


# ------------------------------------------------------------------------------------ main


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:,.{digits}f}"


def _delays(fired: Iterable[list[int]], start: int) -> tuple[float | None, int, int, int]:
    """Mean delay, worst delay, misses, alarms before the change, over runs."""
    delays, missed, early = [], 0, 0
    for f in fired:
        early += sum(1 for v in f if v < start)
        after = [v - start for v in f if v >= start]
        if after:
            delays.append(after[0])
        else:
            missed += 1
    mean = float(np.mean(delays)) if delays else None
    return mean, max(delays) if delays else -1, missed, early


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=300_000, help="simulator events per run")
    ap.add_argument("--seeds", type=int, default=10, help="seeds per synthetic scenario")
    ap.add_argument(
        "--stationary-events",
        type=int,
        default=5_000_000,
        help="events per seed of the stationary loss streams",
    )
    ap.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument(
        "--out-section",
        action="store_true",
        help="write the section into --out instead of printing it",
    )
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--decisions",
        action="store_true",
        help="only the retrain-decision runs: --seeds abrupt shifts per "
        "population and --seeds stationary runs through FeedbackLearner",
    )
    ap.add_argument(
        "--decision-stationary-events",
        type=int,
        default=1_000_000,
        help="events per stationary seed of --decisions",
    )
    ap.add_argument(
        "--decisions-out",
        type=Path,
        default=None,
        help="also write the --decisions markdown to this file",
    )
    ap.add_argument(
        "--decision-runs",
        type=Path,
        default=None,
        help="pickle of the --decisions runs: read if it exists (the policy is "
        "replayed on the recorded alarms), else written",
    )
    args = ap.parse_args()
    if args.events < 40_000:
        ap.error("--events must be at least 40000 (the drift starts half-way)")
    t0 = time.perf_counter()
    repo = Path(__file__).resolve().parent.parent
    python = (
        ".venv/bin/python"
        if Path(sys.executable).absolute().is_relative_to(repo / ".venv")
        else "python"
    )
    command = " ".join([python, "bench/drift.py", *sys.argv[1:]])
    if args.decisions:
        decisions_main(args, command)
        return
    monitor = configured_monitor()
    window = next(
        d.window for d in monitor.detectors.values() if isinstance(d, DistributionDriftDetector)
    )
    concept = [d for d in monitor.detectors.values() if isinstance(d, LossDriftDetector)]
    data = [d for d in monitor.detectors.values() if isinstance(d, DistributionDriftDetector)]

    n_sim = args.events
    drift_at = n_sim // 2
    duration = n_sim // 6
    base = SimulatorConfig(seed=42, drift_share=0.5)
    sim_tasks = [
        ("no drift", base, n_sim, drift_at),
        ("abrupt", dataclasses.replace(base, drift_at=drift_at), n_sim, drift_at),
    ]
    gradual_note = ""
    try:
        sim_tasks.append(("gradual", gradual_config(base, drift_at, duration), n_sim, drift_at))
    except RuntimeError as err:
        gradual_note = f"Gradual simulator run not done: {err}."
        print(gradual_note, file=sys.stderr)

    s_before, s_after, s_dec = (logit_shift_for(m) for m in (0.40, 0.48, 0.32))
    cases = {
        "logloss": LossCase("logloss", s_before, s_after, s_dec),
        "se": LossCase("se", 0.90, 1.00, 0.80),
    }
    n_change, change = 200_000, 100_000
    ramp = {"logloss": 50_000, "se": 10_000}
    tasks: dict[tuple[str, str], list[Any]] = {}
    for d in concept:
        case = cases["logloss" if d.name.startswith("engagement") else "se"]
        params = {"block_size": d.block_size, **_changed(d)}
        n_stat = args.stationary_events
        key = d.name
        tasks[(key, "stationary")] = [
            (d.method, params, case.stream, case.before, case.before, n_stat, None, 1, s)
            for s in range(args.seeds)
        ]
        tasks[(key, "abrupt")] = [
            (d.method, params, case.stream, case.before, case.after, n_change, change, 1, 100 + s)
            for s in range(args.seeds)
        ]
        tasks[(key, "gradual")] = [
            (
                d.method,
                params,
                case.stream,
                case.before,
                case.after,
                n_change,
                change,
                ramp[case.stream],
                200 + s,
            )
            for s in range(args.seeds)
        ]
        tasks[(key, "decrease")] = [
            (
                d.method,
                params,
                case.stream,
                case.before,
                case.decrease,
                n_change,
                change,
                1,
                300 + s,
            )
            for s in range(args.seeds)
        ]

    with ProcessPoolExecutor(args.workers) as pool:
        sim_futures = [pool.submit(_sim_task, t) for t in sim_tasks]
        loss_futures = {k: [pool.submit(run_loss, t) for t in v] for k, v in tasks.items()}
        sims = [f.result() for f in sim_futures]
        loss_results = {k: [f.result() for f in v] for k, v in loss_futures.items()}
        # Data detectors on i.i.d. draws from the distributions the no-drift run saw.
        ref = sims[0].reference
        data_tasks: dict[tuple[str, str], list[Any]] = {}
        n_data = 1_000_000
        for dd in data:
            counts = np.asarray(ref[dd.name], dtype=np.float64) + 1e-3
            p0 = counts / counts.sum()
            used = np.flatnonzero(counts >= 1)
            p1 = p0.copy()
            p1[used] = 0.5 * p0[used] + 0.5 * np.roll(p0[used], 1)
            data_tasks[(dd.name, "stationary")] = [
                (dd.name, dd.n_categories, dd.method, window, p0.tolist(), None, n_data, 0, s)
                for s in range(args.seeds)
            ]
            data_tasks[(dd.name, "abrupt")] = [
                (
                    dd.name,
                    dd.n_categories,
                    dd.method,
                    window,
                    p0.tolist(),
                    p1.tolist(),
                    100_000,
                    50_000,
                    100 + s,
                )
                for s in range(args.seeds)
            ]
            data_tasks[(dd.name, "shift")] = [(dd.divergence(p0, p1),)]
        data_futures = {
            k: [pool.submit(run_data, t) for t in v]
            for k, v in data_tasks.items()
            if k[1] != "shift"
        }
        data_results = {k: [f.result() for f in v] for k, v in data_futures.items()}
    cost_rows = costs()
    elapsed = time.perf_counter() - t0

    lines = [
        "## Drift detection (`stream/drift/`)",
        "",
        f"Machine: {machine()}.",
        f"Command: `{command.strip()}` ({elapsed:.0f} s).",
        "",
        "Concept detectors sum losses into blocks and feed the block means, standardized by "
        "a 30-block warm-up, to River (" + _params_text(concept) + "); only loss increases "
        f"alarm. Data detectors compare tumbling windows of {window} observations with a "
        "reference window ("
        + ", ".join(f"`{d.name}` > {d.threshold:g}" for d in data)
        + "). "
        + _cusum_text(monitor),
        "",
        "### Synthetic loss streams",
        "",
        f"Engagement log loss: mean 0.40 -> 0.48 (+20 %); rating squared error: RMSE 0.90 -> "
        f"1.00. Change at event {change:,} of {n_change:,}; gradual = linear over "
        f"{ramp['logloss']:,} (log loss) / {ramp['se']:,} (ratings) events; decrease = 0.40 -> "
        f"0.32 / RMSE 0.90 -> 0.80. Delay in events (losses) after the change starts, mean "
        f"(worst) over {args.seeds} seeds; false alarms over {args.seeds} x "
        f"{args.stationary_events:,} stationary events.",
        "",
        "| detector | block | abrupt delay | missed | gradual delay | missed | alarms on "
        "decrease | false alarms / M events | River s / M events |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in concept:
        ab = _delays([f for f, _ in loss_results[(d.name, "abrupt")]], change)
        gr = _delays([f for f, _ in loss_results[(d.name, "gradual")]], change)
        dec = _delays([f for f, _ in loss_results[(d.name, "decrease")]], change)
        stat = loss_results[(d.name, "stationary")]
        n_fa = sum(len(f) for f, _ in stat)
        total = args.seeds * args.stationary_events
        secs = sum(s for _, s in stat) / total * 1e6
        lines.append(
            f"| `{d.name}` | {d.block_size} | {_fmt(ab[0])} ({_fmt(ab[1])}) | {ab[2]} | "
            f"{_fmt(gr[0])} ({_fmt(gr[1])}) | {gr[2]} | {args.seeds - dec[2]} of {args.seeds} "
            f"| {n_fa / total * 1e6:.3f} ({n_fa} in {total / 1e6:.0f}M) | {secs:.2f} |"
        )
    lines += [
        "",
        "Alarms before the change point in the abrupt/gradual runs: "
        + ", ".join(
            f"`{d.name}` {sum(_delays([f for f, _ in loss_results[(d.name, s)]], change)[3] for s in ('abrupt', 'gradual'))}"  # noqa: E501
            for d in concept
        )
        + ".",
        "",
        "### Data detectors on i.i.d. categorical streams",
        "",
        "Categories drawn from the distribution each detector saw in the no-drift simulator "
        "run; the shift mixes it half-way with itself rotated by one category (the population "
        f"divergence of that shift is given). {args.seeds} seeds; delay in observations, "
        f"window {window}.",
        "",
        "| detector | categories | shift divergence | delay after shift | missed | false "
        "alarms / M observations | largest stationary statistic | threshold |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dd in data:
        ab = _delays([f for f, _ in data_results[(dd.name, "abrupt")]], 50_000)
        fa = sum(len(f) for f, _ in data_results[(dd.name, "stationary")])
        top = max(t for _, t in data_results[(dd.name, "stationary")])
        shift = data_tasks[(dd.name, "shift")][0][0]
        lines.append(
            f"| `{dd.name}` | {dd.n_categories} | {shift:.3f} | {_fmt(ab[0])} ({_fmt(ab[1])}) | "
            f"{ab[2]} | {fa / (args.seeds * n_data) * 1e6:.2f} | {top:.4f} | "
            f"{dd.threshold:g} |"
        )
    lines += [
        "",
        "### End to end: simulator -> FeedbackLearner -> DriftMonitor",
        "",
        f"Seed 42, 1,000 users, 500 items, {n_sim:,} interaction events (profiles first); drift "
        f"of half the users' tastes at event {drift_at:,}"
        f"{'' if gradual_note else f' (gradual: over {duration:,} events)'}. "
        + "The learner feeds its own monitor (`Settings().drift`: "
        f"{_config_text(monitor)}); nothing is reset or retrained (no consumer loop), the "
        "signals are drained after every event. Loss levels are the learner's prequential "
        f"click log loss and rating squared error over the {LEVEL:,} events before the drift "
        f"point, the {LEVEL:,} after it, and the last {LEVEL:,}; the runs share one seed, so "
        "they are identical up to the drift point.",
        "",
        "| run | log loss: before / after / end | rating SE: before / after / end | alarms "
        "(detector @ event index, +events after the drift point) | s |",
        "|---|---|---|---|---:|",
    ]
    for run in sims:
        alarms = (
            "; ".join(
                f"`{s.detector}` @ {s.event_index:,}"
                + (f" (+{s.event_index - drift_at:,})" if s.event_index >= drift_at else "")
                for s in run.signals
            )
            or "none"
        )
        ll = " / ".join(f"{v[0]:.4f}" for v in run.levels)
        se = " / ".join(f"{v[1]:.3f}" for v in run.levels)
        lines.append(f"| {run.label} | {ll} | {se} | {alarms} | {run.seconds:.0f} |")
    if gradual_note:
        lines += ["", gradual_note]
    lines += [
        "",
        "Largest statistic of each detector before / from the drift point (threshold; ADWIN: "
        "window mean of the standardized loss, its threshold is `delta`):",
        "",
        "| detector | threshold | " + " | ".join(r.label for r in sims) + " |",
        "|---|---:|" + "---:|" * len(sims),
    ]
    for row in sims[0].snapshot:
        name = row["name"]
        cells = " | ".join(
            f"{_fmt(r.max_before[name], 3)} / {_fmt(r.max_after[name], 3)}" for r in sims
        )
        lines.append(f"| `{name}` | {row['threshold']:.3g} | {cells} |")
    lines += [
        "",
        "### Cost per update (amortized, best of 3, loop overhead subtracted)",
        "",
        "| call | us/update |",
        "|---|---:|",
        *[f"| {name} | {us:.3f} |" for name, us in cost_rows],
    ]
    section = "\n".join(lines) + "\n"
    if args.out_section:
        replace_section(args.out, "drift", section)
        print(f"wrote the drift section of {args.out} ({elapsed:.0f} s)")
    else:
        print(section)


def configured_monitor() -> DriftMonitor:
    """A monitor built like the learner's (``Settings().drift``)."""
    settings = Settings()
    return DriftMonitor.from_config(settings.drift, seed=settings.model.seed)


def _params_text(concept: list[LossDriftDetector]) -> str:
    seen: dict[str, str] = {}
    for d in concept:
        shown = {
            k: v for k, v in d.params.items() if k not in ("grace_period", "min_window_length")
        }
        seen.setdefault(
            d.method,
            ", ".join(
                f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
            ),
        )
    return "; ".join(f"{m}: {p}" for m, p in seen.items())


def _cusum_text(monitor: DriftMonitor) -> str:
    c = [d for d in monitor.detectors.values() if isinstance(d, CusumDriftDetector)]
    return "".join(
        f"The calibrated CUSUM `{d.name}` (blocks of {d.block_size}, standardized by a running "
        f"robust reference, allowance {d.allowance:g}, clip {d.clip:g}, threshold "
        f"{d.threshold:g} sigma) appears in the end-to-end and decision runs. "
        for d in c
    ).rstrip()


def _config_text(monitor: DriftMonitor) -> str:
    concept = [d for d in monitor.detectors.values() if isinstance(d, LossDriftDetector)]
    data = [d for d in monitor.detectors.values() if isinstance(d, DistributionDriftDetector)]
    eng = next(d.block_size for d in concept if d.name.startswith("engagement"))
    rat = next(d.block_size for d in concept if d.name.startswith("rating"))
    return f"blocks of {eng} engagement / {rat} rating losses, data windows of {data[0].window}"


def _changed(d: LossDriftDetector) -> dict[str, Any]:
    """The parameters a default detector was built with (to rebuild it in a worker)."""
    return {"warmup": d.warmup, **d.params}


if __name__ == "__main__":
    main()
