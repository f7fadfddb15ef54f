"""The knobs of a simulated population, checked once when a config is made.

>>> SimulatorConfig(n_users=50, n_items=40).slate_size
10
>>> SimulatorConfig(n_items=5)
Traceback (most recent call last):
...
ValueError: slate_size (10) cannot exceed n_items (5): a slate shows distinct items
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from stream.config import Limits

__all__ = ["DRIFT_STEPS", "LIMITS", "SimulatorConfig", "is_int", "is_real"]

# A gradual drift moves tastes in this many equal steps over drift_duration events.
DRIFT_STEPS = 20
# The consumer's limits: events must pass them, so the simulator draws within them.
LIMITS = Limits()


def is_int(value: object) -> bool:
    """An integer (numpy's included), but not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number (numpy's included), but not a bool."""
    real = int | float | np.integer | np.floating
    return isinstance(value, real) and not isinstance(value, bool)


@dataclass(frozen=True)
class SimulatorConfig:
    """Size, randomness and behaviour of a simulated population.

    ``bot_share`` and ``drift_share`` are shares in [0, 1]; a positive share always yields
    at least one user. ``drift_at`` is the index of the first interaction event generated
    with the redrawn tastes (``None``: no drift). With ``drift_duration`` > 0 the change is
    gradual: tastes move from old to new in ``DRIFT_STEPS`` equal steps spread over that
    many events. ``drift_item_share`` of the items get a new quality (appeal to everyone),
    and ``drift_preferences`` also redraws the population's demographic x genre
    preferences (a concept drift that feature-based models see, not only per-user ones).
    ``events_per_second`` is the mean rate of interaction events in event time (0.5 -> about
    2.3 days of event time per 100k events).
    """

    n_users: int = 1000
    n_items: int = 500
    factors: int = 8
    seed: int = 42
    bot_share: float = 0.0
    drift_at: int | None = None
    drift_share: float = 0.5
    drift_duration: int = 0
    drift_preferences: bool = True
    drift_item_share: float = 0.5
    start_ts: float = 1_700_000_000.0
    slate_size: int = 10
    events_per_second: float = 0.5
    rating_prob: float = 0.3
    bot_burst_size: int = 300

    def __post_init__(self) -> None:
        self._check_sizes()
        self._check_shares()
        self._check_drift()
        self._check_time()

    def _check_sizes(self) -> None:
        for name in ("n_users", "n_items", "factors", "slate_size", "bot_burst_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.slate_size > self.n_items:
            raise ValueError(
                f"slate_size ({self.slate_size}) cannot exceed n_items ({self.n_items}): "
                "a slate shows distinct items"
            )

    def _check_shares(self) -> None:
        for name in ("bot_share", "drift_share", "drift_item_share", "rating_prob"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a share in [0, 1], got {value!r}")

    def _check_drift(self) -> None:
        if self.drift_at is not None and (not is_int(self.drift_at) or self.drift_at < 0):
            raise ValueError(
                f"drift_at must be None or a non-negative event index, got {self.drift_at!r}"
            )
        if not is_int(self.drift_duration) or self.drift_duration < 0:
            raise ValueError(
                f"drift_duration must be a non-negative number of events, "
                f"got {self.drift_duration!r}"
            )

    def _check_time(self) -> None:
        if (
            not is_real(self.events_per_second)
            or not math.isfinite(self.events_per_second)
            or self.events_per_second <= 0
        ):
            raise ValueError(
                f"events_per_second must be a positive number, got {self.events_per_second!r}"
            )
        if not is_real(self.start_ts) or not math.isfinite(self.start_ts):
            raise ValueError(f"start_ts must be a finite epoch time, got {self.start_ts!r}")
        if self.start_ts < LIMITS.ts_min:
            raise ValueError(
                f"start_ts ({self.start_ts}) is before the earliest time events accept "
                f"({LIMITS.ts_min})"
            )
        if self.start_ts > time.time():
            raise ValueError(
                f"start_ts ({self.start_ts}) is in the future: consumers would reject the events"
            )
