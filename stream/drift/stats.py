"""Statistics and category codes shared by the data-drift detectors.

Divergences of two count vectors (:func:`psi`, :func:`js_divergence`) and the mappings of raw
features to small categorical codes (:data:`EVENT_TYPE_CODES`, :func:`dwell_bucket`,
:class:`CategoryCodes`), so a window of observations is a fixed-size count vector.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from stream.events import EVENT_TYPES

__all__ = [
    "DWELL_BUCKETS",
    "EVENT_TYPE_CODES",
    "CategoryCodes",
    "dwell_bucket",
    "js_divergence",
    "psi",
]

# Event type -> category code for the event-type mix (all six types, profiles included).
EVENT_TYPE_CODES: dict[str, int] = {t: i for i, t in enumerate(EVENT_TYPES)}
# Dwell buckets of dwell_bucket(): 0 is [0, 1) s, b >= 1 is [2**(b-1), 2**b) s, the last one
# open-ended (11: 1024 s and more, i.e. up to the default 1800 s cap).
DWELL_BUCKETS = 12


def dwell_bucket(seconds: float, n_buckets: int = DWELL_BUCKETS) -> int:
    """Log2-scaled dwell bucket: 0 for under a second, ``b`` for ``[2**(b-1), 2**b)`` seconds.

    The last bucket is open-ended. O(1), no logarithm (``int.bit_length``).

    >>> [dwell_bucket(s) for s in (0.0, 0.9, 1.0, 3.5, 60.0, 1800.0)]
    [0, 0, 1, 2, 6, 11]
    """
    b = int(seconds).bit_length() if seconds > 0 else 0
    return b if b < n_buckets else n_buckets - 1


class CategoryCodes:
    """Stable integer codes for category names, in first-seen order, capped at ``size``.

    Names seen after ``size - 1`` distinct ones share the last code (an "other" bucket), so
    the codes always fit a distribution detector of ``size`` categories.

    >>> codes = CategoryCodes(3)
    >>> [codes.code(g) for g in ("drama", "comedy", "drama", "horror", "western")]
    [0, 1, 0, 2, 2]
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self._codes: dict[Hashable, int] = {}

    def code(self, name: Hashable) -> int:
        c = self._codes.get(name)
        if c is None:
            c = min(len(self._codes), self.size - 1)
            self._codes[name] = c
        return c

    def __len__(self) -> int:
        return len(self._codes)


def psi(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    epsilon: float = 1e-4,
) -> float:
    """Population stability index of two count (or frequency) vectors.

    Each vector is normalised to shares ``p``, smoothed as ``(p + epsilon) / (1 + k epsilon)``
    (so empty categories stay finite), then ``PSI = sum((q - p) * ln(q / p))``.

    >>> round(psi([50, 50], [50, 50]), 6), round(psi([80, 20], [50, 50]), 4)
    (0.0, 0.4157)
    """
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    k = p.size
    p = (p / p.sum() + epsilon) / (1.0 + k * epsilon)
    q = (q / q.sum() + epsilon) / (1.0 + k * epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_divergence(
    reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray
) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two count or frequency vectors.

    >>> js_divergence([1, 0], [0, 1]), js_divergence([3, 1], [6, 2])
    (1.0, 0.0)
    """
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    return max(0.0, float(0.5 * kl_p.sum() + 0.5 * kl_q.sum()))
