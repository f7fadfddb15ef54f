"""Calibrated change detection: a one-sided CUSUM on standardized block means of a loss.

:class:`CusumDriftDetector` is the detector whose false-alarm rate is set by construction
rather than by luck: every block mean is standardized by a running, outlier-resistant
estimate of the level and noise of the loss (the *reference*), and a Page CUSUM
``S = max(0, S + min(z, clip) - allowance)`` accumulates the evidence of an increase.
Between alarms the statistic is a random walk with drift ``-allowance`` on a known scale,
so the threshold fixes the false-alarm rate on any loss, block size or noise level; the
threshold itself was set from long stationary simulator runs (BENCHMARKS.md, section
drift). Plain Python floats: cheap, picklable, deterministic.
"""

from __future__ import annotations

import math

from stream.drift.concept import BlockMeans
from stream.drift.signals import Kind, Signal

__all__ = ["CusumDriftDetector"]

# sigma of N(0, sigma^2) from successive differences d ~ N(0, 2 sigma^2):
# median(|d|) = 0.6745 * sqrt(2) * sigma and mean(|d|) = 2 * sigma / sqrt(pi).
_MEDIAN_ABS_DIFF = 0.6744897501960817 * math.sqrt(2.0)
_MEAN_ABS_DIFF = 2.0 / math.sqrt(math.pi)
_SQRT2 = math.sqrt(2.0)


class CusumDriftDetector(BlockMeans):
    """Concept drift: a calibrated one-sided CUSUM of a loss's standardized block means.

    Losses are summed into blocks of ``block_size``. After each (re)start the first
    ``warmup`` block means are the reference: their median is the level ``mu`` and the
    median absolute successive difference gives the noise ``sigma`` (medians, so a burst of
    odd traffic in the reference does not inflate it; differences, so a slow trend does not
    either). Each later block mean becomes ``z = (mean - mu) / sigma``, capped at ``clip``
    (one wild block, e.g. a bot's burst admitted before the bot filter catches it, can add
    at most ``clip - allowance`` to the evidence), and

    ``S = max(0, S + z - allowance)``; an alarm when ``S > threshold``.

    While ``S`` is 0 (no evidence pending) the reference follows the stream: ``mu`` and
    ``sigma`` move towards each block by ``adapt`` (an exponential moving average of about
    ``1 / adapt`` blocks), so a learning curve or a slow change of the traffic mix is
    absorbed instead of accumulated; while evidence is pending they hold still, so the
    shift being measured does not move its own yardstick. An alarm restarts the detector
    (a new warm-up on the new normal), so a lasting shift alarms once.

    ``statistic`` is ``S`` (in sigmas), ``threshold`` the alarm level.

    >>> import random
    >>> rng = random.Random(5)
    >>> det = CusumDriftDetector("regret", block_size=100)
    >>> fired = [det.update(rng.gauss(0.4 if i < 20_000 else 0.5, 0.6), i) for i in range(30_000)]
    >>> [s.event_index for s in fired if s]  # +0.1 = 1.7 block sigmas: 11 blocks
    [21099]
    >>> det.n_alarms, det.in_drift  # one alarm for a lasting shift
    (1, True)
    >>> round(det.calibration[0], 2)  # restarted: the new level is the new normal
    0.5
    """

    kind: Kind = "concept"
    method = "cusum"

    def __init__(
        self,
        name: str,
        block_size: int = 250,
        threshold: float = 12.0,
        allowance: float = 1.0,
        clip: float = 4.0,
        warmup: int = 40,
        adapt: float = 0.01,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if warmup < 3:
            raise ValueError(f"warmup must be at least 3 blocks, got {warmup}")
        if threshold <= 0 or allowance < 0 or clip <= allowance:
            raise ValueError(
                "need threshold > 0, allowance >= 0 and clip > allowance, got "
                f"{threshold}, {allowance}, {clip}"
            )
        if not 0.0 <= adapt < 1.0:
            raise ValueError(f"adapt must be in [0, 1), got {adapt}")
        self.name = name
        self.block_size = block_size
        self.threshold = float(threshold)
        self.allowance = float(allowance)
        self.clip = float(clip)
        self.warmup = warmup
        self.adapt = float(adapt)
        self.n_alarms = 0
        self.reset()

    def reset(self) -> None:
        """Forget everything but the settings and ``n_alarms``: recalibrate from scratch."""
        self._sum = 0.0
        self._count = 0
        self.n_blocks = 0
        self.in_drift = False
        self._restart()

    def _restart(self) -> None:
        self.statistic = 0.0
        self._mu = 0.0
        self._sigma = 1.0
        self._last = 0.0
        self._warmup: list[float] | None = []

    # -- once per block -----------------------------------------------------------------------
    def update_block(self, mean: float, event_index: int) -> Signal | None:
        """Feed one block mean directly (what :meth:`update` does every ``block_size`` losses)."""
        self.n_blocks += 1
        buf = self._warmup
        if buf is not None:
            buf.append(mean)
            if len(buf) == self.warmup:
                self._calibrate(buf)
            return None
        mu, sigma = self._mu, self._sigma
        z = (mean - mu) / sigma
        if z > self.clip:
            z = self.clip
        elif z < -self.clip:
            z = -self.clip
        quiet = self.statistic == 0.0
        s = self.statistic + z - self.allowance
        self.statistic = s if s > 0.0 else 0.0
        if quiet:  # no evidence pending: the reference follows the stream
            a = self.adapt
            diff = abs(mean - self._last)
            cap = self.clip * _SQRT2 * sigma  # |d| capped at `clip` sds of d
            self._mu = mu + a * z * sigma
            self._sigma = sigma + a * ((diff if diff < cap else cap) / _MEAN_ABS_DIFF - sigma)
        self._last = mean
        if s <= self.threshold:
            return None
        signal = Signal(self.name, self.kind, event_index, s, self.threshold)
        self.in_drift = True
        self.n_alarms += 1
        self._restart()
        return signal

    def _calibrate(self, buf: list[float]) -> None:
        ordered = sorted(buf)
        n = len(ordered)
        self._mu = 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])
        diffs = sorted(abs(b - a) for a, b in zip(buf, buf[1:], strict=False))
        m = len(diffs)
        med = 0.5 * (diffs[(m - 1) // 2] + diffs[m // 2])
        self._sigma = max(med / _MEDIAN_ABS_DIFF, 1e-9 * max(1.0, abs(self._mu)))
        self._last = buf[-1]
        self._warmup = None

    # -- reporting ------------------------------------------------------------------------------
    @property
    def calibration(self) -> tuple[float, float] | None:
        """``(mu, sigma)`` of the reference, else None while warming up."""
        return None if self._warmup is not None else (self._mu, self._sigma)

    def __repr__(self) -> str:
        return (
            f"CusumDriftDetector({self.name!r}, block_size={self.block_size}, "
            f"threshold={self.threshold:g}, in_drift={self.in_drift}, n_alarms={self.n_alarms})"
        )
