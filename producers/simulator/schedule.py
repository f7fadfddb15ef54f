"""When things happen: the event clock, and when and how the drift changes the population.

The :class:`EventClock` hands out non-decreasing event times and keeps normal users under
:data:`MAX_USER_EVENTS_PER_MINUTE`:

>>> clock = EventClock(60.0)
>>> clock.tick(user=0, gap=0.5), clock.advance(0.25)
(60.5, 60.75)

A :class:`DriftSchedule` applies the drift at ``config.drift_at``, at once or (with a
``drift_duration``) in :data:`~producers.simulator.config.DRIFT_STEPS` equal steps:

>>> from producers.simulator.config import SimulatorConfig
>>> DriftSchedule.steps_for(SimulatorConfig(drift_at=100, drift_duration=40))[:3]
[(100, 0.05), (102, 0.1), (104, 0.15)]
>>> DriftSchedule.steps_for(SimulatorConfig(drift_at=100))
[(100, 1.0)]
"""

from __future__ import annotations

import numpy as np

from producers.simulator.config import DRIFT_STEPS, SimulatorConfig
from producers.simulator.population import (
    GENRES,
    ITEM_QUALITY_SCALE,
    Population,
    draw_preferences,
    share_count,
)

__all__ = ["MAX_USER_EVENTS_PER_MINUTE", "DriftSchedule", "EventClock"]

# Normal users are held to this many events per minute bucket int(ts // 60), safely under
# the consumer's bot threshold (ConsumerConfig.bot_events_per_minute = 120), so no real
# user is ever filtered as a bot whatever the configured event rate.
MAX_USER_EVENTS_PER_MINUTE = 100


class EventClock:
    """Event time of the stream; ``now`` is the time of the last event."""

    def __init__(self, start_ts: float) -> None:
        self.now = float(start_ts)
        # user index -> [minute bucket, events in it], to enforce MAX_USER_EVENTS_PER_MINUTE.
        self._buckets: dict[int, list[int]] = {}

    def tick(self, user: int, gap: float) -> float:
        """Advance the clock for one event of a normal user; return its ts."""
        # Milliseconds are plenty, and rounding is monotone so ts stays non-decreasing.
        ts = round(self.now + gap, 3)
        bucket = int(ts // 60)
        state = self._buckets.get(user)
        if state is None or state[0] != bucket:
            self._buckets[user] = [bucket, 1]
        elif state[1] >= MAX_USER_EVENTS_PER_MINUTE:
            # Only reachable with a very high events_per_second: wait for the next minute
            # rather than let a real user look like a bot.
            ts = (bucket + 1) * 60.0
            self._buckets[user] = [bucket + 1, 1]
        else:
            state[1] += 1
        self.now = ts
        return ts

    def advance(self, gap: float) -> float:
        """Advance the clock with no per-minute cap (bots are meant to trip the bot filter)."""
        self.now = round(self.now + gap, 3)
        return self.now


class DriftSchedule:
    """The drift of one simulation: redrawn tastes, preferences and item qualities.

    ``version`` counts the steps applied, so the stream knows to redo outcomes it drew
    with the old vectors; ``users`` are the users whose tastes changed (empty before).
    """

    def __init__(
        self, config: SimulatorConfig, population: Population, rng: np.random.Generator
    ) -> None:
        self._config = config
        self._population = population
        self._rng = rng
        self._steps = self.steps_for(config)
        self.version = 0
        self.users: frozenset[str] = frozenset()
        # Old and new vectors, drawn at the first step: the steps interpolate between them.
        self._users: tuple[np.ndarray, np.ndarray] | None = None
        self._items: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def steps_for(config: SimulatorConfig) -> list[tuple[int, float]]:
        """(event index, share of the way from old to new vectors) of each step, in order."""
        if config.drift_at is None:
            return []
        n = DRIFT_STEPS if config.drift_duration > 0 else 1
        return [(config.drift_at + config.drift_duration * j // n, (j + 1) / n) for j in range(n)]

    def due(self, index: int) -> bool:
        """Apply the step due at event ``index``, if any; True if one happened."""
        if self._steps and index >= self._steps[0][0]:
            self._apply(self._steps.pop(0)[1])
            return True
        return False

    def _apply(self, share: float) -> None:
        """Move user and item vectors ``share`` of the way from the old to the new ones."""
        pop = self._population
        if self._users is None or self._items is None:
            # Users first, then items: the order of the draws is part of the seeded output.
            self._users = (pop.user_vec.copy(), self._target_users())
            self._items = (pop.item_vec.copy(), self._target_items())
        (user_origin, user_target), (item_origin, item_target) = self._users, self._items
        pop.user_vec = user_origin + share * (user_target - user_origin)
        pop.item_vec = item_origin + share * (item_target - item_origin)
        self.version += 1

    def _target_users(self) -> np.ndarray:
        """User vectors after the drift: new tastes for drift_share of the normal users and,
        with drift_preferences, new demographic x genre preferences for everyone."""
        cfg, rng, pop = self._config, self._rng, self._population
        target = pop.user_vec.copy()
        normal = np.flatnonzero(~pop.is_bot)
        count = share_count(cfg.drift_share, len(normal))
        chosen = np.sort(rng.choice(normal, count, replace=False))
        target[chosen, : cfg.factors] = rng.standard_normal((count, cfg.factors)) * pop.taste_scale
        self.users = frozenset(pop.user_ids[i] for i in chosen)
        if cfg.drift_preferences:
            target[:, cfg.factors : cfg.factors + len(GENRES)] = draw_preferences(
                rng, pop.groups, pop.genders, pop.occupations
            )
        return target

    def _target_items(self) -> np.ndarray:
        """Item vectors after the drift: new quality for drift_item_share of the items."""
        cfg, rng = self._config, self._rng
        target = self._population.item_vec.copy()
        count = share_count(cfg.drift_item_share, cfg.n_items)
        chosen = rng.choice(cfg.n_items, count, replace=False)
        target[chosen, -1] = rng.standard_normal(count) * ITEM_QUALITY_SCALE
        return target
