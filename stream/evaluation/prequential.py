"""Prequential (test-then-train) score accumulators, updated once per event.

Each accumulator is O(1) per update, holds plain picklable attributes and reports ``None``
until it has seen enough to say something.

>>> reg = RegressionScore()
>>> reg.update(4.0, 3.0); reg.update(2.0, 2.0)
>>> reg.as_dict()
{'n': 2, 'rmse': 0.7071067811865476, 'mae': 0.5}
>>> clicks = BinaryScore()
>>> for clicked, p in [(True, 0.9), (False, 0.2), (True, 0.4), (False, 0.6)]:
...     _ = clicks.update(clicked, p)
>>> clicks.auc
0.75
>>> recall = HitRate()
>>> recall.update(True); recall.update(False)
>>> recall.value
0.5
"""

from __future__ import annotations

from math import log, sqrt

import numpy as np

__all__ = ["BinaryScore", "HitRate", "RegressionScore"]

# The one probability clip of a log loss (a prediction of exactly 0 or 1 would be infinite).
_EPS = 1e-15


class RegressionScore:
    """Running RMSE and MAE of predictions against true values.

    >>> s = RegressionScore()
    >>> s.rmse is None
    True
    >>> s.update(3.0, 5.0)
    >>> s.n, s.rmse, s.mae
    (1, 2.0, 2.0)
    """

    __slots__ = ("n", "_sum_abs", "_sum_sq")

    def __init__(self) -> None:
        self.n = 0
        self._sum_sq = 0.0
        self._sum_abs = 0.0

    def update(self, y_true: float, y_pred: float) -> None:
        err = y_true - y_pred
        self.n += 1
        self._sum_sq += err * err
        self._sum_abs += abs(err)

    @property
    def squared_error_sum(self) -> float:
        return self._sum_sq

    @property
    def rmse(self) -> float | None:
        return sqrt(self._sum_sq / self.n) if self.n else None

    @property
    def mae(self) -> float | None:
        return self._sum_abs / self.n if self.n else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "rmse": self.rmse, "mae": self.mae}

    def __repr__(self) -> str:
        return f"RegressionScore(n={self.n}, rmse={self.rmse}, mae={self.mae})"


class BinaryScore:
    """Running log loss and ROC AUC of predicted probabilities against binary outcomes.

    The AUC comes from two histograms of the predicted probabilities (one per label) over
    ``bins`` equal-width bins of [0, 1], so an update is two additions; pairs that share a
    bin count as ties (half). The error against the exact AUC is at most the share of
    positive/negative pairs falling in the same bin, so predictions squeezed into a narrow
    range need more bins.

    >>> s = BinaryScore()
    >>> round(s.update(True, 0.8), 4)  # the event's own log loss
    0.2231
    >>> s.auc is None  # needs both classes
    True
    >>> _ = s.update(False, 0.3)
    >>> s.auc, round(s.logloss, 4)
    (1.0, 0.2899)
    """

    __slots__ = ("bins", "n", "n_positive", "_logloss_sum", "_pos", "_neg")

    def __init__(self, bins: int = 1000) -> None:
        if bins < 1:
            raise ValueError(f"bins must be positive, got {bins}")
        self.bins = bins
        self.n = 0
        self.n_positive = 0
        self._logloss_sum = 0.0
        # Python lists: an element increment is cheaper than on a numpy array.
        self._pos = [0] * bins
        self._neg = [0] * bins

    def update(self, clicked: bool, p: float) -> float:
        """Account one outcome ``clicked`` predicted with probability ``p`` of a click;
        return that event's log loss (callers need it too: compute it once)."""
        pc = _EPS if p < _EPS else (1.0 - _EPS if p > 1.0 - _EPS else p)
        bins = self.bins
        b = int(pc * bins)
        if b >= bins:
            b = bins - 1
        self.n += 1
        if clicked:
            self.n_positive += 1
            loss = -log(pc)
            self._pos[b] += 1
        else:
            loss = -log(1.0 - pc)
            self._neg[b] += 1
        self._logloss_sum += loss
        return loss

    @property
    def logloss_sum(self) -> float:
        return self._logloss_sum

    @property
    def logloss(self) -> float | None:
        return self._logloss_sum / self.n if self.n else None

    @property
    def auc(self) -> float | None:
        """P(score of a random positive > score of a random negative), ties half."""
        n_pos = self.n_positive
        n_neg = self.n - n_pos
        if n_pos == 0 or n_neg == 0:
            return None
        pos = np.asarray(self._pos, dtype=np.float64)
        neg = np.asarray(self._neg, dtype=np.float64)
        neg_below = np.cumsum(neg) - neg
        wins = float(pos @ (neg_below + 0.5 * neg))
        return wins / (n_pos * n_neg)

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "logloss": self.logloss, "auc": self.auc}

    def __repr__(self) -> str:
        return f"BinaryScore(n={self.n}, logloss={self.logloss}, auc={self.auc})"


class HitRate:
    """Share of hits, e.g. prequential recall@k from one hit/miss per positive event.

    >>> h = HitRate()
    >>> for hit in (True, False, False, True):
    ...     h.update(hit)
    >>> h.as_dict()
    {'n': 4, 'value': 0.5}
    """

    __slots__ = ("n", "hits")

    def __init__(self) -> None:
        self.n = 0
        self.hits = 0

    def update(self, hit: bool) -> None:
        self.n += 1
        if hit:
            self.hits += 1

    @property
    def value(self) -> float | None:
        return self.hits / self.n if self.n else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "value": self.value}

    def __repr__(self) -> str:
        return f"HitRate(n={self.n}, value={self.value})"
