"""Drift detectors for the feedback stream, cheap enough for the consumer's hot path.

Two kinds of drift, in the style of ``river.drift`` (one concept per class, ``update`` verbs):

* **concept drift** -- a model's prequential loss goes *up*: :class:`LossDriftDetector` sums
  losses into blocks and feeds the standardized block means to a River detector (ADWIN,
  Page-Hinkley or KSWIN). Decreases are ignored: a model getting better is no reason to retrain.
* **data drift** -- the mix of a bounded categorical feature moves away from a reference window:
  :class:`DistributionDriftDetector` (PSI or Jensen-Shannon divergence over tumbling windows).

:class:`DriftMonitor` owns a named set of both and is what the learner calls; every alarm is a
:class:`Signal`, collected until :meth:`DriftMonitor.drain`. Everything here is plain Python
state plus River detectors: picklable (the learner is checkpointed with pickle) and
deterministic (seeded).

>>> import random
>>> rng = random.Random(1)
>>> monitor = DriftMonitor.default()
>>> for i in range(60_000):  # log losses whose mean goes from ~0.40 to ~0.60 at event 40,000
...     y = rng.random() < (0.137 if i < 40_000 else 0.252)
...     monitor.observe_engagement_loss(1.897 if y else 0.1625, i)
>>> signals = monitor.drain()
>>> sorted({s.detector for s in signals})
['engagement_logloss_adwin', 'engagement_logloss_kswin', 'engagement_logloss_page_hinkley']
>>> all(40_000 < s.event_index < 60_000 for s in signals), monitor.drain()
(True, [])
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from river import drift as river_drift

from stream.events import EVENT_TYPES

__all__ = [
    "DWELL_BUCKETS",
    "EVENT_TYPE_CODES",
    "CategoryCodes",
    "DistributionDriftDetector",
    "DriftMonitor",
    "LossDriftDetector",
    "Signal",
    "dwell_bucket",
    "js_divergence",
    "psi",
]

ConceptMethod = Literal["adwin", "page_hinkley", "kswin"]
DataMethod = Literal["psi", "js"]
Kind = Literal["concept", "data"]

# Event type -> category code for the event-type mix (all six types, profiles included).
EVENT_TYPE_CODES: dict[str, int] = {t: i for i, t in enumerate(EVENT_TYPES)}
# Dwell buckets of dwell_bucket(): 0 is [0, 1) s, b >= 1 is [2**(b-1), 2**b) s, the last one
# open-ended (11: 1024 s and more, i.e. up to the default 1800 s cap).
DWELL_BUCKETS = 12


class Signal(NamedTuple):
    """One alarm of one detector.

    ``statistic`` and ``threshold`` are the detector's values when it fired (see each
    detector's ``statistic`` for what they measure); ``event_index`` is the caller's event
    counter at the observation that completed the block or window.
    """

    detector: str
    kind: str
    event_index: int
    statistic: float
    threshold: float


# ---------------------------------------------------------------------------------- helpers


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
    the codes always fit a :class:`DistributionDriftDetector` of ``size`` categories.

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


def psi(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray,
        epsilon: float = 1e-4) -> float:
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


def js_divergence(reference: Sequence[float] | np.ndarray,
                  current: Sequence[float] | np.ndarray) -> float:
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


# --------------------------------------------------------------------------- concept drift

# Defaults per method, tuned on block means of 200 Bernoulli log losses: no false alarm in
# 100M stationary losses (20 seeds x 5M), a +20 % loss increase found within ~2-8k events
# (bench/drift.py measures the configured block sizes). ADWIN and Page-Hinkley see block
# means standardized by the warm-up, so their parameters are in units of the block-mean noise
# sigma and suit any loss and block size; KSWIN is rank based and sees the same values.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "adwin": {"delta": 0.001, "clock": 1, "grace_period": 10, "min_window_length": 5},
    "page_hinkley": {"delta": 0.5, "threshold": 20.0, "min_instances": 30, "alpha": 1.0},
    "kswin": {"alpha": 1e-6, "window_size": 150, "stat_size": 50},
}


# Blocks whose mean tells the direction of an ADWIN detection (vs ADWIN's window mean).
_RECENT_BLOCKS = 10


class LossDriftDetector:
    """Concept drift: alarms when a model's prequential loss goes up.

    Losses are summed into blocks of ``block_size``; each block mean is one observation of a
    River detector, so the River cost is paid once per block and the detector sees a far less
    noisy series than single losses. The first ``warmup`` block means (after construction or
    :meth:`reset`) calibrate a reference level ``mu`` and a noise level ``sigma`` (from
    successive differences, so a slow learning-curve trend does not inflate it); the detector
    then sees ``z = (block_mean - mu) / sigma`` (the warm-up blocks included). Only increases
    alarm: Page-Hinkley runs with ``mode="up"``; an ADWIN detection counts only if the mean of
    the last 10 blocks is above ADWIN's window mean before the update (ADWIN cuts at bucket
    boundaries, not at the change), a KSWIN one only if its recent ``stat_size`` blocks have
    a higher mean than the rest of its window. Ignored detections are counted in
    ``n_decreases``.

    Parameters
    ----------
    name
        Detector name (the metric label).
    method
        ``"adwin"``, ``"page_hinkley"`` or ``"kswin"``.
    block_size
        Losses per block mean.
    seed
        Seed of KSWIN's sampling (the other methods are deterministic anyway).
    warmup
        Block means used to calibrate ``mu`` and ``sigma``.
    **params
        Passed to the River detector, over the defaults: ADWIN ``delta=0.001, clock=1``;
        Page-Hinkley ``delta=0.5, threshold=20, min_instances=30, alpha=1.0`` (``delta`` and
        ``threshold`` in units of ``sigma``; no forgetting: with ``alpha < 1`` the statistic
        stops drifting down and wanders into false alarms on long stationary streams); KSWIN
        ``alpha=1e-6, window_size=150, stat_size=50`` (in blocks).

    ``statistic`` / ``threshold`` (0 and the threshold while warming up):

    * ADWIN: the mean of ADWIN's adaptive window of ``z``, i.e. the current loss level in
      sigmas above the warm-up level; threshold is ADWIN's confidence ``delta`` (ADWIN has no
      single test statistic to compare with a threshold).
    * Page-Hinkley: its cumulative increase statistic (sum of deviations minus ``delta``
      above its running minimum), in sigmas; alarms above ``threshold``.
    * KSWIN: ``-log10(p-value)`` of its last Kolmogorov-Smirnov test; alarms above
      ``-log10(alpha)``.

    >>> import random
    >>> rng = random.Random(3)
    >>> det = LossDriftDetector("logloss", "page_hinkley", block_size=100)
    >>> fired = [det.update(rng.gauss(0.4 if i < 20_000 else 0.5, 0.6), i) for i in range(30_000)]
    >>> [s.event_index for s in fired if s]
    [22799]
    >>> det.in_drift, det.n_alarms
    (True, 1)
    >>> det.reset(); det.in_drift, det.statistic
    (False, 0.0)
    """

    kind: Kind = "concept"

    def __init__(
        self,
        name: str,
        method: ConceptMethod,
        block_size: int = 200,
        seed: int = 42,
        warmup: int = 30,
        **params: Any,
    ) -> None:
        if method not in _DEFAULTS:
            raise ValueError(f"method must be one of {', '.join(_DEFAULTS)}, got {method!r}")
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2 blocks, got {warmup}")
        self.name = name
        self.method: ConceptMethod = method
        self.block_size = block_size
        self.seed = seed
        self.warmup = warmup
        self.params: dict[str, Any] = {**_DEFAULTS[method], **params}
        if method == "page_hinkley":
            self.params["mode"] = "up"
        self._river: Any = self._make_river()  # validates the parameters early
        self.n_alarms = 0
        #: Detections ignored because the loss went down (River restarts after those too).
        self.n_decreases = 0
        self.reset()

    def _make_river(self) -> Any:
        p = self.params
        if self.method == "adwin":
            return river_drift.ADWIN(**p)
        if self.method == "page_hinkley":
            return river_drift.PageHinkley(**p)
        return river_drift.KSWIN(**p, seed=self.seed)

    def reset(self) -> None:
        """Forget everything but the settings and ``n_alarms``: recalibrate from scratch."""
        self._sum = 0.0
        self._count = 0
        self.n_blocks = 0
        self.in_drift = False
        self._mu = 0.0
        self._sigma = 1.0
        self._warmup: list[float] | None = []
        self._recent: deque[float] = deque(maxlen=_RECENT_BLOCKS)
        self._river = self._make_river()

    # -- hot path ---------------------------------------------------------------------------
    def update(self, loss: float, event_index: int) -> Signal | None:
        """Account one loss; return a :class:`Signal` if the block it completes raises an alarm."""
        self._sum += loss
        self._count += 1
        if self._count < self.block_size:
            return None
        mean = self._sum / self._count
        self._sum = 0.0
        self._count = 0
        return self.update_block(mean, event_index)

    # -- once per block -----------------------------------------------------------------------
    def update_block(self, mean: float, event_index: int) -> Signal | None:
        """Feed one block mean directly (what :meth:`update` does every ``block_size`` losses)."""
        self.n_blocks += 1
        buf = self._warmup
        if buf is None:
            return self._step((mean - self._mu) / self._sigma, event_index)
        buf.append(mean)
        if len(buf) < self.warmup:
            return None
        n = len(buf)
        self._mu = sum(buf) / n
        ss = sum((b - a) ** 2 for a, b in zip(buf, buf[1:], strict=False))
        self._sigma = max(math.sqrt(ss / (2.0 * (n - 1))), 1e-9 * max(1.0, abs(self._mu)))
        self._warmup = None
        signal = None
        for b in buf:
            signal = self._step((b - self._mu) / self._sigma, event_index) or signal
        return signal

    def _step(self, z: float, event_index: int) -> Signal | None:
        det = self._river
        recent = self._recent
        recent.append(z)
        if self.method == "adwin":
            before = det.estimation
            det.update(z)
            if not det.drift_detected:
                return None
            # ADWIN cuts at a bucket boundary, not at the change: compare the last few blocks
            # with the whole window before this update to tell an increase from a decrease.
            fired = sum(recent) / len(recent) > before
        elif self.method == "kswin":
            window = det.window  # River swaps in a new deque when it fires; this one keeps all
            det.update(z)
            if not det.drift_detected:
                return None
            values = list(window)
            k = det.stat_size
            new, old = values[-k:], values[:-k]
            fired = sum(new) / len(new) > sum(old) / len(old)
        else:
            det.update(z)  # mode="up": every detection is an increase
            if not det.drift_detected:
                return None
            fired = True
        if not fired:
            self.n_decreases += 1
            return None
        self.in_drift = True
        self.n_alarms += 1
        return Signal(self.name, self.kind, event_index, self.statistic, self.threshold)

    # -- reporting ------------------------------------------------------------------------------
    @property
    def statistic(self) -> float:
        """See the class docstring; 0.0 until the warm-up is over."""
        if self._warmup is not None:
            return 0.0
        det = self._river
        if self.method == "adwin":
            return float(det.estimation)
        if self.method == "page_hinkley":
            low = det._min_increase
            return 0.0 if math.isinf(low) else float(det._sum_increase - low)
        if det.n < det.window_size:  # no test yet since the last (re)start
            return 0.0
        return -math.log10(max(float(det.p_value), 1e-300))

    @property
    def threshold(self) -> float:
        if self.method == "adwin":
            return float(self.params["delta"])
        if self.method == "page_hinkley":
            return float(self.params["threshold"])
        return -math.log10(float(self.params["alpha"]))

    @property
    def calibration(self) -> tuple[float, float] | None:
        """``(mu, sigma)`` of the block means after the warm-up, else None."""
        return None if self._warmup is not None else (self._mu, self._sigma)

    def __repr__(self) -> str:
        return (
            f"LossDriftDetector({self.name!r}, {self.method!r}, block_size={self.block_size}, "
            f"in_drift={self.in_drift}, n_alarms={self.n_alarms})"
        )


# ------------------------------------------------------------------------------ data drift

# Defaults tuned on windows of 5000 (bench/drift.py): the sampling noise of a stationary stream
# stays under PSI 0.013 / JS 0.002 (it scales like (categories - 1) / window), the simulator's
# taste drift moves the click-genre mix to PSI ~0.1. The conventional PSI 0.2 ("significant
# shift") misses that; raise the thresholds for small windows or seasonal traffic.
_DATA_THRESHOLDS: dict[str, float] = {"psi": 0.05, "js": 0.01}


class DistributionDriftDetector:
    """Data drift: the mix of a categorical feature moves away from a reference window.

    The first ``window`` observations (after construction or :meth:`reset`) are the
    reference; then every tumbling window of ``window`` observations is compared with it by
    ``method`` (``"psi"``: :func:`psi`, ``"js"``: :func:`js_divergence`) and alarms when the
    statistic is above ``threshold`` (defaults 0.05 and 0.01, for windows of a few thousand:
    the noise of a stationary window grows like ``(n_categories - 1) / window``). An alarming
    window becomes the
    new reference, so a shift alarms once and a continuing drift alarms again. With
    ``rising=c`` only windows where the share of category ``c`` went up alarm (e.g. more new
    users: a falling share of new users in a closed population is no reason to act). An
    update is a list increment; numpy runs only once per window.

    ``statistic`` is the divergence of the last completed window (0.0 before the first).

    >>> det = DistributionDriftDetector("mix", n_categories=3, method="js", window=100)
    >>> signals = [det.update(i % 2, i) for i in range(200)]   # categories 0 and 1
    >>> signals = [det.update(2, i) for i in range(200, 300)]  # then only category 2
    >>> signals[-1].event_index, round(signals[-1].statistic, 3), det.in_drift
    (299, 1.0, True)
    """

    kind: Kind = "data"

    def __init__(
        self,
        name: str,
        n_categories: int,
        method: DataMethod = "psi",
        window: int = 5000,
        threshold: float | None = None,
        epsilon: float = 1e-4,
        rising: int | None = None,
    ) -> None:
        if method not in _DATA_THRESHOLDS:
            raise ValueError(f"method must be 'psi' or 'js', got {method!r}")
        if n_categories < 2:
            raise ValueError(f"n_categories must be at least 2, got {n_categories}")
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        if rising is not None and not 0 <= rising < n_categories:
            raise ValueError(f"rising must be a category in range({n_categories}), got {rising}")
        self.name = name
        self.rising = rising
        self.n_categories = n_categories
        self.method: DataMethod = method
        self.window = window
        self.threshold = float(_DATA_THRESHOLDS[method] if threshold is None else threshold)
        self.epsilon = epsilon
        self.n_alarms = 0
        self.reset()

    def reset(self) -> None:
        """Forget the reference and the current window (``n_alarms`` is kept)."""
        self._counts = [0] * self.n_categories
        self._n = 0
        self.reference: list[int] | None = None
        self.statistic = 0.0
        self.in_drift = False
        self.n_windows = 0

    def update(self, category: int, event_index: int) -> Signal | None:
        """Count one observation; return a :class:`Signal` if the window it closes alarms."""
        if category < 0:
            raise ValueError(f"{self.name}: category {category} out of range")
        try:
            self._counts[category] += 1
        except IndexError:
            raise ValueError(
                f"{self.name}: category {category} out of range({self.n_categories})"
            ) from None
        self._n += 1
        if self._n < self.window:
            return None
        return self._close_window(event_index)

    def divergence(self, reference: Sequence[int], current: Sequence[int]) -> float:
        """The configured statistic of two count vectors."""
        if self.method == "psi":
            return psi(reference, current, self.epsilon)
        return js_divergence(reference, current)

    def _close_window(self, event_index: int) -> Signal | None:
        counts = self._counts
        self._counts = [0] * self.n_categories
        self._n = 0
        self.n_windows += 1
        if self.reference is None:
            self.reference = counts
            return None
        self.statistic = self.divergence(self.reference, counts)
        if self.statistic <= self.threshold:
            return None
        r = self.rising
        if r is not None and counts[r] * sum(self.reference) <= self.reference[r] * sum(counts):
            return None  # the watched category's share did not go up: not an alarm
        self.reference = counts
        self.in_drift = True
        self.n_alarms += 1
        return Signal(self.name, self.kind, event_index, self.statistic, self.threshold)

    def __repr__(self) -> str:
        return (
            f"DistributionDriftDetector({self.name!r}, {self.method!r}, window={self.window}, "
            f"in_drift={self.in_drift}, n_alarms={self.n_alarms})"
        )


# --------------------------------------------------------------------------------- monitor

Detector = LossDriftDetector | DistributionDriftDetector


class DriftMonitor:
    """The learner's drift detectors, by stream, plus the alarms they raised.

    Each ``observe_*`` method forwards one observation to the detectors of its stream and
    keeps any :class:`Signal` until :meth:`drain`. The loss streams are summed into blocks
    once for all their detectors (which must therefore share one ``block_size``), so
    :meth:`observe_engagement_loss` costs one addition per event whatever the detector count.

    >>> m = DriftMonitor.default(window=1000)
    >>> for i in range(3000):
    ...     m.observe_event_type(EVENT_TYPE_CODES["click" if i < 2000 else "rating"], i)
    >>> [(s.detector, s.event_index) for s in m.drain()]
    [('event_type_mix_js', 2999)]
    >>> row = m.snapshot()[5]
    >>> row["name"], row["kind"], row["method"], row["in_drift"], row["n_alarms"]
    ('event_type_mix_js', 'data', 'js', True, 1)
    >>> m.reset("data"); m.detectors["event_type_mix_js"].in_drift
    False
    """

    def __init__(
        self,
        engagement: Iterable[LossDriftDetector] = (),
        rating: Iterable[LossDriftDetector] = (),
        event_type: Iterable[DistributionDriftDetector] = (),
        click_genre: Iterable[DistributionDriftDetector] = (),
        dwell: Iterable[DistributionDriftDetector] = (),
        new_user: Iterable[DistributionDriftDetector] = (),
        genre_codes: CategoryCodes | None = None,
    ) -> None:
        self._engagement = tuple(engagement)
        self._rating = tuple(rating)
        self._event_type = tuple(event_type)
        self._click_genre = tuple(click_genre)
        self._dwell = tuple(dwell)
        self._new_user = tuple(new_user)
        self.detectors: dict[str, Detector] = {}
        for group in (self._engagement, self._rating, self._event_type, self._click_genre,
                      self._dwell, self._new_user):
            for d in group:
                if d.name in self.detectors:
                    raise ValueError(f"duplicate detector name {d.name!r}")
                self.detectors[d.name] = d
        self._engagement_block = _block_size(self._engagement, "engagement")
        self._rating_block = _block_size(self._rating, "rating")
        sizes = [d.n_categories for d in self._click_genre]
        #: Maps genre names to the codes :meth:`observe_click_genre` expects.
        self.genre_codes = genre_codes or CategoryCodes(min(sizes) if sizes else 32)
        self._signals: list[Signal] = []
        self._reset_blocks()

    @classmethod
    def default(
        cls,
        seed: int = 42,
        block_size: int = 200,
        window: int = 5000,
        rating_block_size: int = 50,
        genre_categories: int = 32,
        psi_threshold: float | None = None,
        js_threshold: float | None = None,
        concept_params: dict[str, dict[str, Any]] | None = None,
    ) -> DriftMonitor:
        """The standard set: 5 concept detectors and 4 data detectors.

        Concept: ``engagement_logloss_{adwin,page_hinkley,kswin}`` (blocks of ``block_size``)
        and ``rating_se_{adwin,page_hinkley}`` (blocks of ``rating_block_size``). Data:
        ``event_type_mix_js``, ``click_genre_mix_psi`` (``genre_categories`` codes),
        ``dwell_psi`` (:data:`DWELL_BUCKETS`), ``new_user_share_psi`` (alarms only when the
        share of new users goes up), all over windows of ``window``.
        """
        def loss(name: str, method: ConceptMethod, block: int) -> LossDriftDetector:
            return LossDriftDetector(name, method, block_size=block, seed=seed)

        def mix(
            name: str, n: int, method: DataMethod, rising: int | None = None
        ) -> DistributionDriftDetector:
            threshold = psi_threshold if method == "psi" else js_threshold
            return DistributionDriftDetector(
                name, n, method=method, window=window, threshold=threshold, rising=rising
            )

        return cls(
            engagement=[
                loss("engagement_logloss_adwin", "adwin", block_size),
                loss("engagement_logloss_page_hinkley", "page_hinkley", block_size),
                loss("engagement_logloss_kswin", "kswin", block_size),
            ],
            rating=[
                loss("rating_se_adwin", "adwin", rating_block_size),
                loss("rating_se_page_hinkley", "page_hinkley", rating_block_size),
            ],
            event_type=[mix("event_type_mix_js", len(EVENT_TYPES), "js")],
            click_genre=[mix("click_genre_mix_psi", genre_categories, "psi")],
            dwell=[mix("dwell_psi", DWELL_BUCKETS, "psi")],
            new_user=[mix("new_user_share_psi", 2, "psi", rising=1)],
        )

    def _reset_blocks(self) -> None:
        self._engagement_sum = 0.0
        self._engagement_n = 0
        self._rating_sum = 0.0
        self._rating_n = 0

    # -- observations (hot path) ------------------------------------------------------------
    def observe_engagement_loss(self, loss: float, event_index: int) -> None:
        """Log loss of the click model on one click or impression, scored before learning."""
        self._engagement_sum += loss
        self._engagement_n += 1
        if self._engagement_n == self._engagement_block:
            mean = self._engagement_sum / self._engagement_n
            self._engagement_sum = 0.0
            self._engagement_n = 0
            self._feed_blocks(self._engagement, mean, event_index)

    def observe_rating_error(self, sq_err: float, event_index: int) -> None:
        """Squared error of the rating model on one rating, scored before learning."""
        self._rating_sum += sq_err
        self._rating_n += 1
        if self._rating_n == self._rating_block:
            mean = self._rating_sum / self._rating_n
            self._rating_sum = 0.0
            self._rating_n = 0
            self._feed_blocks(self._rating, mean, event_index)

    def observe_event_type(self, code: int, event_index: int) -> None:
        """Type of one applied event, as :data:`EVENT_TYPE_CODES` ``[event.type]``."""
        for d in self._event_type:
            s = d.update(code, event_index)
            if s is not None:
                self._signals.append(s)

    def observe_click_genre(self, code: int, event_index: int) -> None:
        """First genre of a clicked item, as ``self.genre_codes.code(genre)``."""
        for d in self._click_genre:
            s = d.update(code, event_index)
            if s is not None:
                self._signals.append(s)

    def observe_dwell(self, seconds: float, event_index: int) -> None:
        """Seconds of one dwell event (bucketed by :func:`dwell_bucket`)."""
        b = int(seconds).bit_length() if seconds > 0 else 0
        for d in self._dwell:
            s = d.update(b if b < d.n_categories else d.n_categories - 1, event_index)
            if s is not None:
                self._signals.append(s)

    def observe_new_user(self, is_new: bool, event_index: int) -> None:
        """Whether the user of one interaction is new (category 1) or not (0)."""
        for d in self._new_user:
            s = d.update(1 if is_new else 0, event_index)
            if s is not None:
                self._signals.append(s)

    def _feed_blocks(
        self, group: tuple[LossDriftDetector, ...], mean: float, event_index: int
    ) -> None:
        for d in group:
            s = d.update_block(mean, event_index)
            if s is not None:
                self._signals.append(s)

    # -- control and reporting ----------------------------------------------------------------
    def drain(self) -> list[Signal]:
        """The signals raised since the last call (oldest first); clears them."""
        if not self._signals:
            return []
        out, self._signals = self._signals, []
        return out

    def reset(self, kind: str | None = None) -> None:
        """Reset all detectors, or only the ``"concept"`` or ``"data"`` ones."""
        if kind not in (None, "concept", "data"):
            raise ValueError(f"kind must be None, 'concept' or 'data', got {kind!r}")
        for d in self.detectors.values():
            if kind is None or d.kind == kind:
                d.reset()
        if kind in (None, "concept"):
            self._reset_blocks()

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per detector: name, kind, method, statistic, threshold, in_drift, n_alarms."""
        return [
            {
                "name": d.name,
                "kind": d.kind,
                "method": d.method,
                "statistic": float(d.statistic),
                "threshold": float(d.threshold),
                "in_drift": d.in_drift,
                "n_alarms": d.n_alarms,
            }
            for d in self.detectors.values()
        ]

    def __repr__(self) -> str:
        return f"DriftMonitor({', '.join(self.detectors)})"


def _block_size(group: Sequence[LossDriftDetector], stream: str) -> int:
    sizes = {d.block_size for d in group}
    if len(sizes) > 1:
        raise ValueError(f"the {stream} detectors must share one block_size, got {sorted(sizes)}")
    return sizes.pop() if sizes else 1
