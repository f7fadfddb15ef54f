"""``feedback-loop status``: what a running consumer is doing, read from its ``/metrics``.

The endpoint is parsed with prometheus_client's own text parser. With ``interval > 0`` it is
scraped twice that many seconds apart, which gives the consume rate; otherwise once.

>>> text = '''# TYPE feedback_loop_consumer_lag_messages gauge
... feedback_loop_consumer_lag_messages{partition="0"} 3.0
... feedback_loop_consumer_lag_messages{partition="1"} 4.0
... '''
>>> snap = Snapshot.parse(text)
>>> snap.total("feedback_loop_consumer_lag_messages")
7.0
>>> snap.by("feedback_loop_consumer_lag_messages", "partition")
{'0': 3.0, '1': 4.0}
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DEFAULT_URL = "http://127.0.0.1:9108/metrics"
PREFIX = "feedback_loop_"
# (score, model) gauges of stream/metrics.py, in display order.
SCORES = ("rmse", "mae", "logloss", "auc", "recall_at_10")


class StatusError(Exception):
    """The endpoint could not be read, or is not a feedback-loop consumer's."""


@dataclass
class Snapshot:
    """One scrape: every sample as (name, labels, value), and when it was taken."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    at: float = 0.0  # time.monotonic()

    @classmethod
    def parse(cls, text: str, at: float = 0.0) -> Snapshot:
        samples = [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
        return cls(samples, at)

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)

    def total(self, name: str) -> float | None:
        """The sum of every series of ``name`` (None when there is none)."""
        values = [v for n, _, v in self.samples if n == name]
        return sum(values) if values else None

    def by(self, name: str, label: str) -> dict[str, float]:
        """``name``'s values keyed by one label (summed over the others)."""
        out: dict[str, float] = {}
        for n, labels, v in self.samples:
            if n == name:
                key = labels.get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out


def scrape(url: str = DEFAULT_URL, timeout: float = 5.0) -> Snapshot:
    """Fetch and parse ``url``; :class:`StatusError` with a clear message when impossible."""
    hint = "is `feedback-loop consume` running and serving its metrics there (--metrics-port)?"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as err:
        raise StatusError(f"{url} answered HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise StatusError(f"cannot reach {url}: {err.reason}; {hint}") from None
    except (OSError, ValueError) as err:  # timeouts, resets, malformed URLs
        raise StatusError(f"cannot reach {url}: {err}; {hint}") from None
    at = time.monotonic()
    try:
        snap = Snapshot.parse(body.decode("utf-8"), at)
    except (ValueError, UnicodeDecodeError, IndexError) as err:
        raise StatusError(f"{url} is not a Prometheus metrics endpoint: {err}") from None
    if not any(name.startswith(PREFIX) for name, _, _ in snap.samples):
        raise StatusError(f"{url} serves no {PREFIX}* metrics: is it a feedback-loop consumer?")
    return snap


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def summarize(snap: Snapshot, previous: Snapshot | None = None) -> dict[str, Any]:
    """The status as a JSON-ready dict; rates when an earlier ``previous`` scrape is given."""
    p = PREFIX
    consumed = snap.total(f"{p}events_consumed_total") or 0.0
    out: dict[str, Any] = {
        "consumer_lag_messages": snap.total(f"{p}consumer_lag_messages"),
        "lag_by_partition": snap.by(f"{p}consumer_lag_messages", "partition"),
        "events_consumed_total": consumed,
        "events_per_second": None,
        "events_applied_total": snap.total(f"{p}events_applied_total"),
        "events_dead_lettered_total": snap.total(f"{p}events_dead_lettered_total"),
        "dead_letters_by_kind": {
            k: v for k, v in snap.by(f"{p}events_dead_lettered_total", "kind").items() if v
        },
        "events_filtered_total": snap.total(f"{p}events_filtered_total"),
        "events_duplicate_total": snap.total(f"{p}events_duplicate_total"),
        "checkpoints_total": snap.total(f"{p}checkpoints_total"),
        "prequential": {
            score: {k: _finite(v) for k, v in snap.by(f"{p}prequential_{score}", "model").items()}
            for score in SCORES
            if snap.has(f"{p}prequential_{score}")
        },
    }
    if previous is not None and snap.at > previous.at:
        before = previous.total(f"{p}events_consumed_total") or 0.0
        if consumed >= before:  # else the process restarted in between
            out["events_per_second"] = round((consumed - before) / (snap.at - previous.at), 1)
    # Drift and retraining, once the process exports them.
    for name in ("model_version", "retrain_requests_total", "model_swaps_total"):
        if snap.has(f"{p}{name}"):
            out[name] = snap.total(f"{p}{name}")
    drift: dict[str, dict[str, float | None]] = {}
    for part in ("state", "statistic", "threshold"):
        for detector, value in snap.by(f"{p}drift_{part}", "detector").items():
            drift.setdefault(detector, {})[part] = _finite(value)
    if drift:
        out["drift"] = drift
    return out


def collect(url: str = DEFAULT_URL, interval: float = 1.0, timeout: float = 5.0) -> dict[str, Any]:
    """Scrape ``url`` (twice, ``interval`` seconds apart, when ``interval > 0``) and summarize."""
    first = scrape(url, timeout)
    if interval <= 0:
        return {"url": url, **summarize(first)}
    time.sleep(interval)
    return {"url": url, **summarize(scrape(url, timeout), first)}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0 and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits or 4}f}"


def render(info: dict[str, Any]) -> str:
    """The status as aligned text lines, for a terminal."""
    lines: list[tuple[str, str]] = []
    lag = info["lag_by_partition"]
    parts = ", ".join(f"partition {k}: {_num(v)}" for k, v in sorted(lag.items()))
    lines.append(
        (
            "lag",
            f"{_num(info['consumer_lag_messages'])} messages" + (f" ({parts})" if parts else ""),
        )
    )
    rate = info["events_per_second"]
    lines.append(
        (
            "consumed",
            f"{_num(info['events_consumed_total'])} messages"
            + ("" if rate is None else f" ({rate:,.1f}/s)"),
        )
    )
    lines.append(("applied", _num(info["events_applied_total"])))
    kinds = ", ".join(f"{k} {_num(v)}" for k, v in sorted(info["dead_letters_by_kind"].items()))
    lines.append(
        (
            "dead-lettered",
            _num(info["events_dead_lettered_total"]) + (f" ({kinds})" if kinds else ""),
        )
    )
    lines.append(("filtered", _num(info["events_filtered_total"])))
    lines.append(("duplicates", _num(info["events_duplicate_total"])))
    lines.append(("checkpoints", _num(info["checkpoints_total"])))
    for score, models in info["prequential"].items():
        shown = ", ".join(f"{m} {_num(v, 4)}" for m, v in sorted(models.items()))
        lines.append((score, shown or "-"))
    for name, label in (
        ("model_version", "model version"),
        ("retrain_requests_total", "retrain requests"),
        ("model_swaps_total", "model swaps"),
    ):
        if name in info:
            lines.append((label, _num(info[name])))
    for detector, values in sorted(info.get("drift", {}).items()):
        shown = ", ".join(
            f"{k} {_num(v, 4) if k != 'state' else _num(v)}" for k, v in values.items()
        )
        lines.append((f"drift {detector}", shown))
    width = max(len(k) for k, _ in lines)
    header = f"feedback-loop status of {info['url']}"
    return "\n".join([header, *(f"  {k.ljust(width)}  {v}" for k, v in lines)])
