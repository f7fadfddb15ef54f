"""Generate the Grafana dashboard ``dashboards/feedback-loop.json``.

This script is the source of the dashboard; the JSON is its output, committed so that Grafana's
file provisioning (see docker-compose.yml) can read it. Edit this file, then run

    python dashboards/generate.py           # rewrite feedback-loop.json
    python dashboards/generate.py --check   # exit 1 if feedback-loop.json is out of date

Plain Python, no dependencies; the output is deterministic. Queries use fixed range windows
rather than Grafana variables, so that every expression is also valid PromQL on its own
(tests/test_deploy_files.py checks them with promtool and checks their metric names against
stream/observability/).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "feedback-loop.json"

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
JOB = 'job="feedback-loop-consumer"'
RETRAINER_JOB = 'job="feedback-loop-retrainer"'
QUANTILES = (0.5, 0.95, 0.99)
# Detector names of DriftMonitor.default (stream/drift/monitor.py): concept detectors watch
# the models' losses, data detectors the distribution of their inputs.
CONCEPT_DETECTORS = 'detector=~"engagement_logloss_.+|rating_se_.+"'
DATA_DETECTORS = 'detector=~".+_(js|psi)"'

Panel = dict[str, Any]
# A panel with its width and height on the 24-column grid; a row is a title and its cells.
Cell = tuple[Panel, int, int]
Row = tuple[str, list[Cell]]


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "refId": ref,
    }


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    """(expr, legend) pairs as targets A, B, C..."""
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def quantile_targets(
    bucket_metric: str, window: str = "1m", quantiles: tuple[float, ...] = QUANTILES
) -> list[dict[str, Any]]:
    return targets(
        *(
            (
                f"histogram_quantile({q}, sum by (le) (rate({bucket_metric}[{window}])))",
                f"p{round(q * 100)}",
            )
            for q in quantiles
        )
    )


def timeseries(
    title: str,
    description: str,
    tgts: list[dict[str, Any]],
    unit: str = "short",
    *,
    min_zero: bool = True,
    stack: bool = False,
    overrides: list[dict[str, Any]] | None = None,
) -> Panel:
    defaults: dict[str, Any] = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "axisPlacement": "auto",
            "drawStyle": "line",
            "fillOpacity": 10,
            "gradientMode": "none",
            "lineInterpolation": "linear",
            "lineWidth": 1,
            "pointSize": 4,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        },
        "unit": unit,
    }
    if min_zero:
        defaults["min"] = 0
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {
                "calcs": ["lastNotNull", "max"],
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
    }


def stat(
    title: str,
    description: str,
    expr: str,
    unit: str = "short",
    thresholds: tuple[tuple[str, float | None], ...] = (("green", None),),
    decimals: int | None = None,
) -> Panel:
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds"},
        "mappings": [],
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in thresholds],
        },
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        },
        "targets": targets((expr, title)),
    }


def state_timeline(
    title: str, description: str, tgts: list[dict[str, Any]], states: dict[int, tuple[str, str]]
) -> Panel:
    """A state timeline of integer-valued series; ``states`` maps a value to (text, color)."""
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "custom": {"fillOpacity": 80, "lineWidth": 0},
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            str(value): {"color": color, "index": i, "text": text}
                            for i, (value, (text, color)) in enumerate(sorted(states.items()))
                        },
                    }
                ],
                "thresholds": {
                    "mode": "absolute",
                    "steps": [
                        {"color": color, "value": None if i == 0 else value}
                        for i, (value, (_text, color)) in enumerate(sorted(states.items()))
                    ],
                },
            },
            "overrides": [],
        },
        "options": {
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "mergeValues": True,
            "rowHeight": 0.9,
            "showValue": "never",
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": tgts,
    }


def dashed(name_regex: str) -> dict[str, Any]:
    """A field override: series whose display name matches ``name_regex`` are dashed lines."""
    return {
        "matcher": {"id": "byRegexp", "options": name_regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


def drift_vs_threshold(title: str, description: str, matcher: str) -> Panel:
    return timeseries(
        title,
        description,
        targets(
            (f"max by (detector) (feedback_loop_drift_statistic{{{matcher}}})", "{{detector}}"),
            (
                f"max by (detector) (feedback_loop_drift_threshold{{{matcher}}})",
                "{{detector}} threshold",
            ),
        ),
        min_zero=False,
        overrides=[dashed(".* threshold$")],
    )


# Rates shared by the Overview and Throughput rows.
CONSUMED = "sum(rate(feedback_loop_events_consumed_total[1m]))"
DEAD_LETTERED = "sum(rate(feedback_loop_events_dead_lettered_total[1m]))"

# (title, metric, description) of the prequential scores, and their panel widths.
QUALITY_METRICS = (
    ("RMSE", "feedback_loop_prequential_rmse", "Prequential RMSE of rating predictions."),
    ("MAE", "feedback_loop_prequential_mae", "Prequential MAE of rating predictions."),
    (
        "Log loss",
        "feedback_loop_prequential_logloss",
        "Prequential log loss of click predictions.",
    ),
    ("AUC", "feedback_loop_prequential_auc", "Prequential ROC AUC of click predictions."),
    (
        "Recall@10",
        "feedback_loop_prequential_recall_at_10",
        "Share of positive implicit events whose item was in the top 10 before learning.",
    ),
)
QUALITY_WIDTHS = (12, 12, 8, 8, 8)


def overview_row() -> Row:
    """Is the consumer up, how fast it goes, what it rejects, how far behind it is."""
    return "Overview", [
        (
            stat(
                "Consumer up",
                "1 when Prometheus scrapes the consumer's /metrics.",
                f"min(up{{{JOB}}})",
                thresholds=(("red", None), ("green", 1)),
            ),
            4,
            4,
        ),
        (stat("Consumed", "Messages consumed per second.", CONSUMED, "ops"), 5, 4),
        (
            stat(
                "Applied",
                "Events applied to the models per second.",
                "sum(rate(feedback_loop_events_applied_total[1m]))",
                "ops",
            ),
            5,
            4,
        ),
        (
            stat(
                "Dead-letter ratio",
                "Share of consumed messages sent to the dead-letter topic (alert above 5%).",
                f"{DEAD_LETTERED} / {CONSUMED}",
                "percentunit",
                (("green", None), ("orange", 0.01), ("red", 0.05)),
                decimals=2,
            ),
            5,
            4,
        ),
        (
            stat(
                "Lag",
                "Messages not yet consumed, summed over partitions (alert above 100000).",
                "sum(feedback_loop_consumer_lag_messages)",
                thresholds=(("green", None), ("orange", 10000), ("red", 100000)),
            ),
            5,
            4,
        ),
    ]


def throughput_row() -> Row:
    """Messages consumed by type, and what became of them."""
    return "Throughput", [
        (
            timeseries(
                "Throughput by event type",
                "Messages consumed per second, by declared event type.",
                targets(
                    (
                        "sum by (type) (rate(feedback_loop_events_consumed_total[1m]))",
                        "{{type}}",
                    )
                ),
                "ops",
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Outcomes",
                "What became of consumed events, per second.",
                targets(
                    ("sum(rate(feedback_loop_events_applied_total[1m]))", "applied"),
                    (DEAD_LETTERED, "dead-lettered"),
                    ("sum(rate(feedback_loop_events_filtered_total[1m]))", "filtered"),
                    ("sum(rate(feedback_loop_events_duplicate_total[1m]))", "duplicate"),
                ),
                "ops",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Dead letters by kind",
                "Messages sent to the dead-letter topic per second, by kind of error.",
                targets(
                    (
                        "sum by (kind) (rate(feedback_loop_events_dead_lettered_total[1m]))",
                        "{{kind}}",
                    )
                ),
                "ops",
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Filtered by reason",
                "Events filtered out per second (bots, unknown users or items...), by reason.",
                targets(
                    (
                        "sum by (reason) (rate(feedback_loop_events_filtered_total[1m]))",
                        "{{reason}}",
                    )
                ),
                "ops",
                stack=True,
            ),
            12,
            8,
        ),
    ]


def latency_row() -> Row:
    """Batch processing time and event latency quantiles."""
    return "Latency", [
        (
            timeseries(
                "Batch processing time",
                "Wall time to decode, apply and dead-letter one consumed batch.",
                quantile_targets("feedback_loop_batch_processing_seconds_bucket"),
                "s",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Event latency",
                "From the broker timestamp of a batch's last message to its application.",
                quantile_targets("feedback_loop_event_latency_seconds_bucket"),
                "s",
            ),
            12,
            8,
        ),
    ]


def consumer_lag_row() -> Row:
    """Messages not yet consumed, per partition."""
    return "Consumer lag", [
        (
            timeseries(
                "Consumer lag by partition",
                "Messages in each partition not yet consumed (high watermark - position).",
                targets(
                    (
                        "sum by (partition) (feedback_loop_consumer_lag_messages)",
                        "partition {{partition}}",
                    )
                ),
            ),
            24,
            8,
        ),
    ]


def quality_row() -> Row:
    """Test-then-train scores of the online models."""
    return "Prequential quality", [
        (
            timeseries(
                title,
                f"{description} Each event is scored before the model learns from it.",
                targets((f"max by (model) ({metric})", "{{model}}")),
                min_zero=False,
            ),
            width,
            8,
        )
        for (title, metric, description), width in zip(QUALITY_METRICS, QUALITY_WIDTHS, strict=True)
    ]


def checkpoints_row() -> Row:
    """How often checkpoints are written, and how long they take."""
    return "Checkpoints", [
        (
            timeseries(
                "Checkpoints per minute",
                "Checkpoints written (model state + offsets) per minute.",
                targets(("sum(rate(feedback_loop_checkpoints_total[5m])) * 60", "checkpoints")),
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Checkpoint duration",
                "Wall time to write one checkpoint.",
                quantile_targets("feedback_loop_checkpoint_seconds_bucket", "5m"),
                "s",
            ),
            12,
            8,
        ),
    ]


def drift_row() -> Row:
    """Model version, drift detectors against their thresholds, retrain signals."""
    return "Drift and retraining", [
        (
            stat(
                "Model version",
                "Registry version of the live models (0: learned online from scratch).",
                "max(feedback_loop_model_version)",
            ),
            6,
            4,
        ),
        (
            stat(
                "Detectors in alarm",
                "Drift detectors in alarm now (since their last reset).",
                "sum(feedback_loop_drift_state)",
                thresholds=(("green", None), ("orange", 1), ("red", 2)),
            ),
            6,
            4,
        ),
        (
            stat(
                "Retrain requests (1h)",
                "Retrain requests published by the consumer over the last hour.",
                "sum(increase(feedback_loop_retrain_requests_total[1h]))",
                decimals=0,
            ),
            6,
            4,
        ),
        (
            stat(
                "Model swaps (1h)",
                "Batch-trained models swapped into the consumer over the last hour.",
                "sum(increase(feedback_loop_model_swaps_total[1h]))",
                decimals=0,
            ),
            6,
            4,
        ),
        (
            drift_vs_threshold(
                "Concept drift: statistic vs threshold",
                "Loss-based detectors (engagement log loss, rating squared error); each "
                "alarms when its statistic crosses its threshold (dashed).",
                CONCEPT_DETECTORS,
            ),
            12,
            8,
        ),
        (
            drift_vs_threshold(
                "Data drift: statistic vs threshold",
                "Input-distribution detectors (JS divergence, PSI of a window against a "
                "reference); each alarms when its statistic crosses its threshold (dashed).",
                DATA_DETECTORS,
            ),
            12,
            8,
        ),
        (
            state_timeline(
                "Drift state",
                "Each detector in alarm (since its last reset) or not.",
                targets(("max by (detector) (feedback_loop_drift_state)", "{{detector}}")),
                {0: ("ok", "green"), 1: ("alarm", "red")},
            ),
            24,
            8,
        ),
        (
            timeseries(
                "Drift alarms by detector",
                "Alarms raised per minute, by detector (0 for detectors that never alarmed).",
                targets(
                    (
                        "sum by (detector) (rate(feedback_loop_drift_alarms_total[5m])) * 60"
                        " or max by (detector) (feedback_loop_drift_state) * 0",
                        "{{detector}}",
                    )
                ),
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Drift signals by outcome",
                "What the retrain policy did with drift signals, per minute: decided a "
                "retrain, or ignored them (warmup, cooldown, retrain_in_progress, "
                "awaiting_confirmation).",
                targets(
                    (
                        "sum by (outcome) (rate(feedback_loop_drift_signals_total[5m])) * 60"
                        ' or label_replace(max(feedback_loop_model_version) * 0, "outcome",'
                        ' "decided", "", "")',
                        "{{outcome}}",
                    )
                ),
                stack=True,
            ),
            12,
            8,
        ),
    ]


def retrainer_row() -> Row:
    """The retrainer process: retrains, their duration, the search's trials."""
    return "Retrainer", [
        (
            stat(
                "Retrainer up",
                "1 when Prometheus scrapes the retrainer's /metrics.",
                f"min(up{{{RETRAINER_JOB}}})",
                thresholds=(("red", None), ("green", 1)),
            ),
            6,
            4,
        ),
        (
            stat(
                "Retrain in progress",
                "1 while the retrainer is running a retrain.",
                "max(feedback_loop_retrain_in_progress)",
                thresholds=(("green", None), ("blue", 1)),
            ),
            6,
            4,
        ),
        (
            stat(
                "Best quality ratio",
                "Best validation quality loss of the last retrain (model loss / naive loss; "
                "lower is better; 0 before the first retrain).",
                "max(feedback_loop_retrain_best_quality_ratio)",
                decimals=3,
            ),
            6,
            4,
        ),
        (
            stat(
                "Trials (1h)",
                "Hyperparameter-search trials run over the last hour.",
                "sum(increase(feedback_loop_retrain_trials_total[1h]))",
                decimals=0,
            ),
            6,
            4,
        ),
        (
            timeseries(
                "Retrains by outcome",
                "Retrains finished over the last 15 minutes: accepted (made current), "
                "rejected (did not beat the live model), failed.",
                targets(
                    (
                        "sum by (outcome) (increase(feedback_loop_retrains_total[15m]))",
                        "{{outcome}}",
                    )
                ),
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Retrain duration",
                "Wall time of one retrain (history read, search and final training), over "
                "the retrains of the last hour.",
                quantile_targets(
                    "feedback_loop_retrain_duration_seconds_bucket", "1h", (0.5, 0.95)
                ),
                "s",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Trials per minute",
                "Hyperparameter-search trials run per minute.",
                targets(("sum(rate(feedback_loop_retrain_trials_total[5m])) * 60", "trials")),
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Quality ratio",
                "Validation quality loss (model loss / naive loss; lower is better) of the "
                "last trial and the best of the last retrain.",
                targets(
                    ("max(feedback_loop_retrain_trial_quality_ratio)", "last trial"),
                    ("max(feedback_loop_retrain_best_quality_ratio)", "best of last retrain"),
                ),
            ),
            12,
            8,
        ),
    ]


def closed_loop_row() -> Row:
    """Ground truth of the closed loop (simulated users, who know their own tastes), per
    policy: exported by `demo --closed-loop` and `simulate --closed-loop`."""

    def by_policy(title: str, description: str, metric: str, unit: str = "short") -> Panel:
        return timeseries(
            title, description, targets((f"max by (policy) ({metric})", "{{policy}}")), unit
        )

    return "Closed loop", [
        (
            timeseries(
                "Click-through rate by policy",
                "Clicks / impressions of each policy's users over the last minute (true "
                "reactions of simulated users to the slates served).",
                targets(
                    (
                        "sum by (policy) (rate(feedback_loop_loop_clicks_total[1m]))"
                        " / sum by (policy) (rate(feedback_loop_loop_impressions_total[1m]))",
                        "{{policy}}",
                    )
                ),
                "percentunit",
            ),
            12,
            8,
        ),
        (
            by_policy(
                "Regret per session",
                "Expected clicks per session lost against an oracle top-K (true click model, "
                "position bias and fatigue included), last window of sessions.",
                "feedback_loop_loop_regret",
            ),
            12,
            8,
        ),
        (
            by_policy(
                "Catalogue coverage",
                "Share of the catalogue shown at least once in the last window of sessions.",
                "feedback_loop_loop_coverage",
                "percentunit",
            ),
            8,
            8,
        ),
        (
            by_policy(
                "Exposure Gini",
                "Inequality of impressions over items in the last window (0: even, towards "
                "1: a few items get everything).",
                "feedback_loop_loop_exposure_gini",
            ),
            8,
            8,
        ),
        (
            by_policy(
                "Popularity bias",
                "Mean true popularity of the items shown / the catalogue mean (1: none).",
                "feedback_loop_loop_popularity_bias",
            ),
            8,
            8,
        ),
    ]


SERVE_REQUESTS = "feedback_loop_serve_requests_total"


def serving_row() -> Row:
    """The `serve` processes: traffic, latency, freshness and readiness of the served state."""
    return "Serving", [
        (
            stat(
                "Serve ready",
                "1 when every serve process has caught up with the model-state topic.",
                "min(feedback_loop_serve_ready)",
                thresholds=(("red", None), ("green", 1)),
            ),
            6,
            4,
        ),
        (
            stat(
                "Served model version",
                "Model version of the state the serve processes answer from (-1: none yet).",
                "max(feedback_loop_serve_model_version)",
            ),
            6,
            4,
        ),
        (
            stat(
                "State age",
                "Seconds since the served model state was published (worst serve process).",
                "max(feedback_loop_serve_state_age_seconds)",
                "s",
                (("green", None), ("orange", 5), ("red", 30)),
                decimals=1,
            ),
            6,
            4,
        ),
        (
            stat(
                "Requests",
                "HTTP requests answered per second, all serve processes.",
                f"sum(rate({SERVE_REQUESTS}[1m]))",
                "reqps",
            ),
            6,
            4,
        ),
        (
            timeseries(
                "Requests by endpoint and status",
                "HTTP requests answered per second.",
                targets(
                    (
                        f"sum by (endpoint, status) (rate({SERVE_REQUESTS}[1m]))",
                        "{{endpoint}} {{status}}",
                    )
                ),
                "reqps",
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Request latency",
                "Time to answer one request (all endpoints), p50 / p95 / p99.",
                quantile_targets("feedback_loop_serve_request_seconds_bucket"),
                "s",
            ),
            12,
            8,
        ),
    ]


ROWS: tuple[Callable[[], Row], ...] = (
    overview_row,
    throughput_row,
    latency_row,
    consumer_lag_row,
    quality_row,
    checkpoints_row,
    drift_row,
    retrainer_row,
    closed_loop_row,
    serving_row,
)


def rows() -> list[Row]:
    """Rows of (panel, width, height); widths of a line add up to 24."""
    return [row() for row in ROWS]


def annotation(name: str, expr: str, color: str, title: str) -> dict[str, Any]:
    """A Prometheus annotation: one mark per step where ``expr`` has a sample."""
    return {
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "name": name,
        "expr": expr,
        "step": "15s",
        "titleFormat": title,
        "textFormat": "{{instance}}",
        "tagKeys": "job",
        "useValueForTime": False,
    }


ANNOTATIONS = (
    annotation(
        "Model swaps",
        "changes(feedback_loop_model_version[1m]) > 0",
        "purple",
        "Model swapped in",
    ),
    annotation(
        "Retrain requests",
        "increase(feedback_loop_retrain_requests_total[1m]) > 0",
        "orange",
        "Retrain requested",
    ),
)


def layout() -> list[Panel]:
    """Rows and their panels with ids and grid positions, left to right, top to bottom."""
    panels: list[Panel] = []
    y = 0
    for title, row_panels in rows():
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x, line_height = 0, 0
        for panel, width, height in row_panels:
            if x + width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append({**panel, "gridPos": {"h": height, "w": width, "x": x, "y": y}})
            x += width
            line_height = max(line_height, height)
        y += line_height
    return [{"id": i, **panel} for i, panel in enumerate(panels, 1)]


def dashboard() -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *ANNOTATIONS,
            ]
        },
        "description": "feedback-loop: Kafka feedback events -> online models (generated by "
        "dashboards/generate.py).",
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "liveNow": False,
        "panels": layout(),
        "refresh": "5s",
        "schemaVersion": 39,
        "tags": ["feedback-loop"],
        "templating": {"list": []},
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "timezone": "browser",
        "title": "Feedback loop",
        "uid": "feedback-loop",
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    """The dashboard as the exact text of feedback-loop.json."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Fail if the JSON is out of date.")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="Where to write the JSON.")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
