"""A PNG of prequential error over the stream, with drift alarms and model swaps marked.

The learner keeps cumulative score sums every few thousand messages (its ``timeline``);
differences of consecutive points give the error of each stretch of the stream.
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


def plot_report(
    timeline: list[tuple[int, int, float, float, int, float]],
    report: dict[str, Any],
    path: Path,
) -> Path:
    """Write the plot of ``timeline`` with the report's alarms, retrains and swaps."""
    w = windowed(timeline)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    top.plot(w["index"], w["logloss"], label="click model log loss", color="tab:blue")
    top.plot(w["index"], w["naive_logloss"], label="naive CTR log loss", color="tab:gray",
             linestyle=":")
    top.set_ylabel("log loss (per stretch)")
    bottom.plot(w["index"], w["rmse"], label="rating RMSE", color="tab:green")
    bottom.set_ylabel("RMSE (per stretch)")
    bottom.set_xlabel("event index (messages consumed)")
    seen: set[str] = set()
    for alarm in report.get("drift_alarms", []):
        label = "drift alarm" if "alarm" not in seen else None
        seen.add("alarm")
        for ax in (top, bottom):
            ax.axvline(alarm["event_index"], color="tab:orange", alpha=0.5, linewidth=1,
                       label=label if ax is top else None)
    for r in report.get("retrains", []):
        if r.get("end_event_index") is not None:
            top.axvspan(r["start_event_index"], r["end_event_index"], color="tab:purple",
                        alpha=0.12, label="retrain" if "retrain" not in seen else None)
            seen.add("retrain")
    for swap in report.get("swaps", []):
        for ax in (top, bottom):
            ax.axvline(swap["event_index"], color="tab:red", linewidth=2,
                       label=(f"swap to v{swap['model_version']}" if ax is top else None))
    top.legend(loc="upper right", fontsize=8)
    bottom.legend(loc="upper right", fontsize=8)
    top.set_title("Prequential error over the stream")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
