"""What a command shows while it runs and when it ends: live scores, the summary, the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import console


class LiveProgress:
    """A progress bar with the live prequential scores, updated at most 10 times a second;
    ``extra`` adds a text of its own (the closed loop's CTR per policy)."""

    def __init__(
        self, total: int | None, label: str, extra: Callable[[], str] | None = None
    ) -> None:
        self.extra = extra
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[scores]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(label, total=total, scores="")
        self._last = 0.0
        self._started = time.perf_counter()

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, learner: Any, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        s, c = learner.scores(), learner.counts
        rate = c.consumed / max(now - self._started, 1e-9)
        parts = [f"{rate:,.0f} ev/s"]
        parts += [f"{k}={v:.3f}" for k, v in s.items() if v is not None]
        if c.dead_lettered:
            parts.append(f"dlq={c.dead_lettered}")
        life = getattr(learner, "lifecycle", None)
        if life is not None:
            if life.alarms:
                parts.append(f"alarms={len(life.alarms)}")
            if life.state.busy:
                parts.append("[magenta]retraining[/]")
            if life.version:
                parts.append(f"[green]model v{life.version}[/]")
        if self.extra is not None:
            text = self.extra()
            if text:
                parts.append(f"[cyan]ctr {text}[/]")
        self.progress.update(self.task, completed=c.consumed, scores=" ".join(parts))


def print_summary(report: dict[str, Any]) -> None:
    table = Table(title="feedback-loop summary", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("baseline", justify="right")
    base = report.get("baseline", {})
    for key in ("consumed", "applied", "dead_lettered", "filtered", "duplicates"):
        table.add_row(key, f"{report[key]:,}", "")
    for key in ("rmse", "mae", "logloss", "auc", "recall_at_10"):
        val = report.get(key)
        ref = base.get(key) if key != "auc" else 0.5
        table.add_row(
            key,
            "-" if val is None else f"{val:.4f}",
            "" if ref is None else f"{ref:.4f}",
        )
    table.add_row("events_per_second", f"{report['events_per_second']:,.0f}", "")
    if "drift_alarms" in report:
        table.add_row("drift alarms", str(len(report["drift_alarms"])), "")
        done = [r for r in report["retrains"] if r.get("status") != "requested"]
        table.add_row("retrains (finished/requested)", f"{len(done)}/{len(report['retrains'])}", "")
        table.add_row("swaps", str(len(report["swaps"])), "")
        table.add_row("model version", str(report["model_version"]), "")
    table.add_row("counts reconcile", str(report.get("reconciles")), "")
    console.print(table)
    if "closed_loop" in report:
        print_closed_loop(report["closed_loop"])


def print_closed_loop(loop: dict[str, Any]) -> None:
    """The closed loop's ground truth per policy (and, after a drift, its recovery)."""
    table = Table(title="closed loop: ground truth per policy", show_header=True)
    for col in (
        "policy", "sessions", "shown", "CTR", "regret", "coverage", "Gini", "pop. bias",
    ):  # fmt: skip
        table.add_column(col, justify="left" if col == "policy" else "right")
    for policy, s in loop["policies"].items():
        table.add_row(
            policy, f"{s['sessions']:,}", f"{s['impressions']:,}", f"{s['ctr']:.4f}",
            f"{s['regret']:.3f}", f"{s['coverage']:.3f}", f"{s['exposure_gini']:.3f}",
            f"{s['popularity_bias']:.2f}",
        )  # fmt: skip
    console.print(table)
    for policy, s in loop.get("other_policies", {}).items():
        console.print(
            f"{policy}: {s['sessions']:,} sessions ({s['impressions']:,} items shown) before "
            "the served state could rank items; not compared"
        )
    drift = loop.get("drift")
    if drift:
        dt = Table(title="closed loop: through the drift", show_header=True)
        for col in (
            "policy", "CTR before", "CTR after", "CTR lowest",
            "oracle share before", "lowest", "events to recover",
        ):  # fmt: skip
            dt.add_column(col, justify="left" if col == "policy" else "right")

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.4f}"

        for policy, d in drift.items():
            ctr, share = d["ctr"], d["oracle_share"]
            rec = share["events_to_recover"]
            dt.add_row(
                policy, f(ctr["before"]), f(ctr["at"]), f(ctr["lowest"]),
                f(share["before"]), f(share["lowest"]),
                "not yet" if rec is None else f"{rec:,}",
            )  # fmt: skip
        console.print(dt)


def finish(report: dict[str, Any], path: Path | None, learner: Any = None) -> None:
    """Print the summary; with ``path``, write the JSON report and its plot next to it."""
    from consumers.pipeline import write_report

    print_summary(report)
    if path is not None:
        write_report(path, report)
        console.print(f"report written to [bold]{path}[/]")
        if learner is not None:
            from consumers.plot import plot_report

            learner.close_timeline()
            png = plot_report(learner.timeline, report, path.with_suffix(".png"))
            console.print(f"plot written to [bold]{png}[/]")
