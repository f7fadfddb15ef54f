"""Ground truth of a closed-loop run, per policy: what each policy's users were shown and did.

The simulator knows every user's hidden tastes, so it can score what the system served
against what it should have served. Per policy, over windows of sessions and cumulatively:

- **CTR**: clicks / impressions;
- **regret**: per session, the expected clicks of the oracle slate (the K items with the
  highest true click probability, best at the top) minus the expected clicks of the slate
  shown, both under the true click model with position bias and fatigue;
- **coverage**: share of the catalogue shown at least once;
- **exposure Gini**: inequality of impressions over the catalogue (0: every item shown as
  often, towards 1: a few items get everything);
- **popularity bias**: mean true popularity of the shown items / catalogue mean (1: no bias);
- **oracle share**: expected clicks of the slates shown / expected clicks of the oracle's
  (1: as good as the oracle). Fatigue lowers every policy's CTR over a run and a drift
  changes how clickable the catalogue is; this ratio factors both out, so recovery after a
  drift is measured on it.

>>> m = LoopMetrics(("model", "random"), n_items=4, window_sessions=2)
>>> m.set_true_popularity(np.array([0.4, 0.2, 0.1, 0.1]))
>>> m.record("model", [0, 1], [True, False], expected=0.5, oracle=0.6, event_index=4)
>>> m.record("random", [2, 3], [False, False], expected=0.1, oracle=0.6, event_index=8)
>>> r = m.report()
>>> r["policies"]["model"]["ctr"], r["policies"]["model"]["coverage"]
(0.5, 0.5)
>>> round(r["policies"]["random"]["regret"], 3), r["policies"]["random"]["popularity_bias"]
(0.5, 0.5)
>>> len(r["timeline"]), r["timeline"][0]["event_index"]
(1, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = [
    "LoopMetrics",
    "coverage",
    "drift_recovery",
    "expected_clicks",
    "gini",
    "oracle_clicks",
]

PREFIX = "feedback_loop_loop"


def gini(exposures: np.ndarray) -> float:
    """Gini coefficient of non-negative exposure counts (0 when nothing was shown).

    >>> gini(np.array([5, 5, 5, 5])), gini(np.array([0, 0, 0, 8])), gini(np.array([0, 0]))
    (0.0, 0.75, 0.0)
    """
    x = np.sort(np.asarray(exposures, dtype=float))
    n, total = len(x), float(x.sum())
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def coverage(exposures: np.ndarray) -> float:
    """Share of the catalogue shown at least once.

    >>> coverage(np.array([3, 0, 1, 0]))
    0.5
    """
    n = len(exposures)
    return float(np.count_nonzero(exposures)) / n if n else 0.0


def expected_clicks(attraction: np.ndarray, examination: np.ndarray) -> float:
    """Expected clicks of a slate: item i at position i is clicked with P = exam_i * attr_i.

    >>> expected_clicks(np.array([0.5, 0.2]), np.array([1.0, 0.5]))
    0.6
    """
    k = len(attraction)
    return float(np.dot(attraction, examination[:k]))


def oracle_clicks(attraction_all: np.ndarray, examination: np.ndarray) -> float:
    """Expected clicks of the best slate of ``len(examination)`` items from the catalogue:
    the most attractive items, in decreasing order, against a decreasing examination
    (the rearrangement inequality makes that order the best).

    >>> oracle_clicks(np.array([0.1, 0.5, 0.2, 0.4]), np.array([1.0, 0.5]))
    0.7
    """
    k = min(len(examination), len(attraction_all))
    top = np.sort(np.partition(attraction_all, -k)[-k:])[::-1] if k else attraction_all[:0]
    return float(np.dot(top, examination[:k]))


@dataclass
class _Tally:
    """What one policy's users were shown and did, over some stretch of sessions."""

    n_items: int
    sessions: int = 0
    impressions: int = 0
    clicks: int = 0
    regret: float = 0.0
    expected: float = 0.0  # expected clicks of the slates shown
    oracle: float = 0.0  # expected clicks of the oracle's slates
    popularity: float = 0.0  # sum of the true popularity of every impression
    exposures: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.exposures = np.zeros(self.n_items, dtype=np.int64)

    def add(
        self, slate: Sequence[int], clicks: int, expected: float, oracle: float, popularity: float
    ) -> None:
        self.sessions += 1
        self.impressions += len(slate)
        self.clicks += clicks
        self.regret += max(0.0, oracle - expected)
        self.expected += expected
        self.oracle += oracle
        self.popularity += popularity
        np.add.at(self.exposures, np.asarray(slate, dtype=np.intp), 1)

    def summary(self, catalogue_popularity: float) -> dict[str, Any]:
        shown = self.impressions
        mean_pop = self.popularity / shown if shown else 0.0
        return {
            "sessions": self.sessions,
            "impressions": shown,
            "clicks": self.clicks,
            "ctr": self.clicks / shown if shown else 0.0,
            "regret": self.regret / self.sessions if self.sessions else 0.0,
            "oracle_share": self.expected / self.oracle if self.oracle > 0 else 0.0,
            "coverage": coverage(self.exposures),
            "exposure_gini": gini(self.exposures),
            "popularity_bias": mean_pop / catalogue_popularity if catalogue_popularity else 0.0,
        }


class _Exported:
    """The Prometheus side: gauges of the last window, counters of everything."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, ["policy"], registry=registry)

        self.ctr = gauge("ctr", "Closed loop: click-through rate of the last window.")
        self.regret = gauge(
            "regret", "Closed loop: expected clicks per session lost against the oracle top-K."
        )
        self.coverage = gauge("coverage", "Closed loop: share of the catalogue shown (window).")
        self.gini = gauge("exposure_gini", "Closed loop: Gini of item exposures (window).")
        self.popularity_bias = gauge(
            "popularity_bias",
            "Closed loop: mean true popularity of shown items / catalogue mean (window).",
        )
        self.impressions = Counter(
            f"{PREFIX}_impressions", "Closed loop: items shown.", ["policy"], registry=registry
        )
        self.clicks = Counter(
            f"{PREFIX}_clicks", "Closed loop: items clicked.", ["policy"], registry=registry
        )


class LoopMetrics:
    """Per-policy ground truth of a closed loop, by window of sessions and cumulative.

    ``record`` one session at a time; every ``window_sessions`` sessions (all policies
    together) a window closes: its per-policy numbers go to the timeline and, with a
    ``registry``, to the gauges. Counters move with every session.
    """

    def __init__(
        self,
        policies: Sequence[str],
        n_items: int,
        window_sessions: int = 400,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if window_sessions < 1:
            raise ValueError(f"window_sessions must be positive, got {window_sessions!r}")
        self.policies = tuple(policies)
        self.n_items = n_items
        self.window_sessions = window_sessions
        self.true_popularity = np.ones(n_items)
        self.timeline: list[dict[str, Any]] = []
        self.sessions = 0
        self.last_event_index = 0
        self._total = {p: _Tally(n_items) for p in self.policies}
        self._window = {p: _Tally(n_items) for p in self.policies}
        # Sessions of any other policy (the random slates shown before the serving state
        # can rank anything): counted, kept out of the comparison and the windows.
        self._other: dict[str, _Tally] = {}
        self._exported = _Exported(registry) if registry is not None else None
        if self._exported is not None:
            for p in self.policies:  # every series exists from the start, at 0
                self._exported.impressions.labels(p)
                self._exported.clicks.labels(p)

    def set_true_popularity(self, popularity: np.ndarray) -> None:
        """Each item's true appeal to the population (changes with a drift)."""
        self.true_popularity = np.asarray(popularity, dtype=float)

    @property
    def catalogue_popularity(self) -> float:
        return float(self.true_popularity.mean())

    def record(
        self,
        policy: str,
        slate: Sequence[int],
        clicked: Sequence[bool],
        expected: float,
        oracle: float,
        event_index: int,
    ) -> None:
        """One session: item indices shown (in order), which were clicked, the expected
        clicks of that slate and of the oracle's, and the stream's event index after it.
        A policy not compared (not in ``policies``) is only counted, apart."""
        clicks = int(sum(clicked))
        popularity = float(self.true_popularity[np.asarray(slate, dtype=np.intp)].sum())
        if policy not in self._total:
            self._other.setdefault(policy, _Tally(self.n_items)).add(
                slate, clicks, expected, oracle, popularity
            )
            self.last_event_index = event_index
            return
        for tally in (self._total[policy], self._window[policy]):
            tally.add(slate, clicks, expected, oracle, popularity)
        if self._exported is not None:
            self._exported.impressions.labels(policy).inc(len(slate))
            self._exported.clicks.labels(policy).inc(clicks)
        self.sessions += 1
        self.last_event_index = event_index
        if self.sessions % self.window_sessions == 0:
            self._close_window()

    def _close_window(self) -> None:
        base = self.catalogue_popularity
        window = {p: t.summary(base) for p, t in self._window.items()}
        self.timeline.append(
            {"sessions": self.sessions, "event_index": self.last_event_index, "policies": window}
        )
        if self._exported is not None:
            e = self._exported
            for p, s in window.items():
                if not s["impressions"]:
                    continue  # keep the last value rather than report a policy that was idle
                e.ctr.labels(p).set(s["ctr"])
                e.regret.labels(p).set(s["regret"])
                e.coverage.labels(p).set(s["coverage"])
                e.gini.labels(p).set(s["exposure_gini"])
                e.popularity_bias.labels(p).set(s["popularity_bias"])
        self._window = {p: _Tally(self.n_items) for p in self.policies}

    def window_ctr(self) -> dict[str, float]:
        """CTR per policy in the last closed window (cumulative before the first)."""
        if self.timeline:
            return {p: s["ctr"] for p, s in self.timeline[-1]["policies"].items()}
        base = self.catalogue_popularity
        return {p: t.summary(base)["ctr"] for p, t in self._total.items()}

    def progress_text(self) -> str:
        """A short live line: CTR per policy (last window)."""
        return " ".join(f"{p}={ctr:.3f}" for p, ctr in self.window_ctr().items())

    def report(self, drift_at: int | None = None) -> dict[str, Any]:
        """The report's ``closed_loop`` section: totals per policy, the timeline and, with
        ``drift_at``, each policy's CTR before, at and after the shift and its recovery."""
        base = self.catalogue_popularity
        out: dict[str, Any] = {
            "sessions": self.sessions,
            "window_sessions": self.window_sessions,
            "policies": {p: t.summary(base) for p, t in self._total.items()},
            "other_policies": {p: t.summary(base) for p, t in self._other.items()},
            "timeline": list(self.timeline),
        }
        if drift_at is not None:
            out["drift"] = {
                p: {
                    "ctr": drift_recovery(self.timeline, p, drift_at),
                    "oracle_share": drift_recovery(self.timeline, p, drift_at, "oracle_share"),
                }
                for p in self.policies
            }
        return out


def drift_recovery(
    timeline: list[dict[str, Any]],
    policy: str,
    drift_at: int,
    key: str = "ctr",
    before_windows: int = 3,
    smooth: int = 3,
    tolerance: float = 0.05,
) -> dict[str, Any]:
    """How ``policy``'s CTR (or another window metric: ``key``) went through a shift at
    event ``drift_at``.

    ``before``: mean of the last ``before_windows`` windows that ended before the shift;
    ``at``: the first window ending after it; after the shift each window is smoothed (moving
    average of ``smooth`` windows); ``recovered_at``: the end of the first window whose
    smoothed value is back within ``tolerance`` (relative) of ``before``, and
    ``events_to_recover`` = ``recovered_at - drift_at`` (None: not within the run; 0: it
    never fell below that);
    ``lowest``: the smoothed minimum between the shift and the recovery (or the run's end).

    >>> tl = [{"event_index": i * 10, "policies": {"m": {"ctr": c}}}
    ...       for i, c in enumerate([0.2, 0.2, 0.2, 0.1, 0.1, 0.15, 0.2, 0.2, 0.2])]
    >>> r = drift_recovery(tl, "m", drift_at=25, smooth=1)
    >>> round(r["before"], 6), r["at"], r["lowest"], r["recovered_at"], r["events_to_recover"]
    (0.2, 0.1, 0.1, 60, 35)
    """
    points = [(w["event_index"], w["policies"][policy][key]) for w in timeline]
    before = [c for i, c in points if i <= drift_at][-before_windows:]
    after = [(i, c) for i, c in points if i > drift_at]
    result: dict[str, Any] = {
        "before": float(np.mean(before)) if before else None,
        "at": after[0][1] if after else None,
        "lowest": None,
        "recovered_at": None,
        "events_to_recover": None,
    }
    if not before or not after:
        return result
    smoothed = [
        (after[j][0], float(np.mean([c for _i, c in after[max(0, j - smooth + 1) : j + 1]])))
        for j in range(len(after))
    ]
    target = result["before"] * (1.0 - tolerance)
    # The first windows after the shift may still be mostly pre-shift sessions: recovery
    # counts from the first dip below the target (none: the shift cost nothing measurable).
    dip = next((j for j, (_i, value) in enumerate(smoothed) if value < target), None)
    if dip is None:
        result["lowest"] = min(value for _i, value in smoothed)
        result["recovered_at"], result["events_to_recover"] = smoothed[0][0], 0
        return result
    end = len(smoothed)
    for j in range(dip, len(smoothed)):
        index, value = smoothed[j]
        if value >= target:
            result["recovered_at"] = index
            result["events_to_recover"] = index - drift_at
            end = j + 1
            break
    result["lowest"] = min(value for _i, value in smoothed[:end])
    return result
