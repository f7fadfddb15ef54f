"""A PNG of prequential error over the stream, with drift alarms and model swaps marked.

The learner keeps cumulative score sums every few thousand messages (its ``timeline``);
differences of consecutive points give the error of each stretch of the stream. A report
with a ``closed_loop`` section gets a third panel: the true click-through rate of each
policy, window by window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402


def windowed(timeline: list[tuple[int, int, float, float, int, float]]) -> dict[str, list[float]]:
    """Per-stretch engagement log loss, naive log loss and rating RMSE from cumulative sums.

    >>> w = windowed([(0, 0, 0.0, 0.0, 0, 0.0), (10, 4, 2.0, 3.0, 2, 8.0)])
    >>> w["index"], w["logloss"], w["naive_logloss"], w["rmse"]
    ([10], [0.5], [0.75], [2.0])
    """
    out: dict[str, list[float]] = {"index": [], "logloss": [], "naive_logloss": [], "rmse": []}
    for prev, cur in zip(timeline, timeline[1:], strict=False):
        dn, dr = cur[1] - prev[1], cur[4] - prev[4]
        out["index"].append(cur[0])
        out["logloss"].append((cur[2] - prev[2]) / dn if dn else float("nan"))
        out["naive_logloss"].append((cur[3] - prev[3]) / dn if dn else float("nan"))
        out["rmse"].append(((cur[5] - prev[5]) / dr) ** 0.5 if dr else float("nan"))
    return out


def loop_ctr(loop: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]]:
    """(event index, CTR) of each window, per policy, from a report's ``closed_loop``.

    >>> loop_ctr({"timeline": [{"event_index": 50, "policies": {"model": {"ctr": 0.2}}}]})
    {'model': ([50], [0.2])}
    """
    out: dict[str, tuple[list[int], list[float]]] = {}
    for window in loop.get("timeline", []):
        for policy, stats in window["policies"].items():
            xs, ys = out.setdefault(policy, ([], []))
            xs.append(window["event_index"])
            ys.append(stats["ctr"])
    return out


def _plot_loop(ax: Any, loop: dict[str, Any], drift_at: int | None) -> None:
    totals = loop.get("policies", {})
    for policy, (xs, ys) in loop_ctr(loop).items():
        total = totals.get(policy, {})
        label = f"{policy} (CTR {total.get('ctr', 0):.3f}, coverage {total.get('coverage', 0):.2f})"
        ax.plot(xs, ys, label=label, marker=".", markersize=3)
    if drift_at is not None:
        ax.axvline(drift_at, color="black", linestyle="--", linewidth=1, label="drift")
    ax.set_ylabel("true CTR (per window)")
    ax.set_xlabel("closed-loop interaction event index")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Closed loop: click-through rate by policy")


def plot_report(
    timeline: list[tuple[int, int, float, float, int, float]],
    report: dict[str, Any],
    path: Path,
) -> Path:
    """Write the plot of ``timeline`` with the report's alarms, retrains and swaps."""
    w = windowed(timeline)
    loop = report.get("closed_loop")
    if loop:
        fig, axes = plt.subplots(3, 1, figsize=(11, 9.5))
        top, bottom = axes[0], axes[1]
        top.sharex(bottom)
        _plot_loop(axes[2], loop, report.get("config", {}).get("drift_at"))
    else:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    top.plot(w["index"], w["logloss"], label="click model log loss", color="tab:blue")
    top.plot(
        w["index"], w["naive_logloss"], label="naive CTR log loss", color="tab:gray", linestyle=":"
    )
    top.set_ylabel("log loss (per stretch)")
    bottom.plot(w["index"], w["rmse"], label="rating RMSE", color="tab:green")
    bottom.set_ylabel("RMSE (per stretch)")
    bottom.set_xlabel("event index (messages consumed)")
    seen: set[str] = set()
    for alarm in report.get("drift_alarms", []):
        label = "drift alarm" if "alarm" not in seen else None
        seen.add("alarm")
        for ax in (top, bottom):
            ax.axvline(
                alarm["event_index"],
                color="tab:orange",
                alpha=0.5,
                linewidth=1,
                label=label if ax is top else None,
            )
    for r in report.get("retrains", []):
        if r.get("end_event_index") is not None:
            top.axvspan(
                r["start_event_index"],
                r["end_event_index"],
                color="tab:purple",
                alpha=0.12,
                label="retrain" if "retrain" not in seen else None,
            )
            seen.add("retrain")
    for swap in report.get("swaps", []):
        for ax in (top, bottom):
            ax.axvline(
                swap["event_index"],
                color="tab:red",
                linewidth=2,
                label=(f"swap to v{swap['model_version']}" if ax is top else None),
            )
    top.legend(loc="upper right", fontsize=8)
    bottom.legend(loc="upper right", fontsize=8)
    top.set_title("Prequential error over the stream")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
