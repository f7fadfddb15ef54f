"""Concept drift: a model's prequential loss goes *up*.

:class:`LossDriftDetector` sums losses into blocks and feeds the standardized block means to a
River detector (ADWIN, Page-Hinkley or KSWIN), in the style of ``river.drift``. Decreases are
ignored: a model getting better is no reason to retrain. Plain Python state plus a River
detector: picklable (the learner is checkpointed with pickle) and deterministic (seeded).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

from river import drift as river_drift

from stream.drift.signals import Kind, Signal

__all__ = ["ConceptMethod", "LossDriftDetector"]

ConceptMethod = Literal["adwin", "page_hinkley", "kswin"]

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


class BlockMeans:
    """Sums losses into blocks of ``block_size`` and hands each block mean to
    :meth:`update_block`, the detector's own step (once per block, not per loss)."""

    block_size: int
    _sum: float
    _count: int

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

    def update_block(self, mean: float, event_index: int) -> Signal | None:
        raise NotImplementedError


class LossDriftDetector(BlockMeans):
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
