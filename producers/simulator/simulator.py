"""The :class:`Simulator`: a seeded population plays an endless, deterministic stream.

>>> sim = Simulator(SimulatorConfig(n_users=50, n_items=40, seed=7))
>>> events = list(sim.events(30))
>>> sim.events_generated, events[-1].event_id
(30, 'sim-7-29')
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from zlib import crc32

import numpy as np

from producers.simulator.config import SimulatorConfig, is_int
from producers.simulator.population import GENRES, Population, ProfileEventType
from producers.simulator.schedule import DriftSchedule, EventClock
from producers.simulator.sessions import (
    InteractionEventType,
    context,
    draw_batch,
    draw_bot_burst,
    outcomes,
)
from stream.events import (
    SCHEMA_VERSION,
    ClickEvent,
    Context,
    DwellEvent,
    Event,
    ImpressionEvent,
    RatingEvent,
)

__all__ = ["Simulator", "split_by_user"]


class Simulator:
    """A seeded population plus an endless, deterministic stream of sessions.

    Public state (read-only): ``user_ids``, ``item_ids``, ``bot_users`` and, once the stream
    has passed ``config.drift_at``, ``drift_users``. :meth:`affinity` and :meth:`taste`
    expose the ground truth the events were drawn from, for tests and evaluation.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        cfg = config if config is not None else SimulatorConfig()
        self.config = cfg
        # Independent child streams: the population, the session draws, the bot bursts and
        # the drift each get their own, so enabling bots or drift does not shift the other
        # streams (a drift run equals the no-drift run up to drift_at, event for event).
        pop_ss, stream_ss, bot_ss, drift_ss = np.random.SeedSequence(cfg.seed).spawn(4)
        self._rng = np.random.default_rng(stream_ss)
        self._bot_rng = np.random.default_rng(bot_ss)
        self._population = Population.draw(cfg, np.random.default_rng(pop_ss))
        self._drift = DriftSchedule(cfg, self._population, np.random.default_rng(drift_ss))
        self._clock = EventClock(cfg.start_ts)
        self._index = 0
        self._session = 0
        self._stream = self._generate()

    # ------------------------------------------------------------------ public API

    @property
    def user_ids(self) -> tuple[str, ...]:
        return self._population.user_ids

    @property
    def item_ids(self) -> tuple[str, ...]:
        return self._population.item_ids

    @property
    def bot_users(self) -> frozenset[str]:
        return self._population.bot_users

    @property
    def drift_users(self) -> frozenset[str]:
        """Users whose tastes the drift redrew (empty until the stream reaches it)."""
        return self._drift.users

    # The parts the closed loop (producers/simulator/closed_loop.py) plays with in place of
    # this stream: the same population, drift and event clock, so a closed-loop run has the
    # very users, items and shift of the open-loop one with the same config.

    @property
    def population(self) -> Population:
        """The population (its ``user_vec`` / ``item_vec`` change when the drift applies)."""
        return self._population

    @property
    def drift_schedule(self) -> DriftSchedule:
        return self._drift

    @property
    def clock(self) -> EventClock:
        return self._clock

    def profiles(self) -> Iterator[ProfileEventType]:
        """One :class:`UserProfileEvent` per user, then one :class:`ItemProfileEvent` per item.

        All carry ``ts = config.start_ts``; send them before :meth:`events`.
        """
        return self._population.profiles(self.config.seed, float(self.config.start_ts))

    def events(self, n: int) -> Iterator[InteractionEventType]:
        """The next ``n`` interaction events of the stream (lazily).

        Successive calls continue the same stream, so ``events(a)`` then ``events(b)``
        yields exactly what a fresh simulator's ``events(a + b)`` would.
        """
        if not is_int(n) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        return itertools.islice(self._stream, n)

    @property
    def events_generated(self) -> int:
        """Interaction events produced so far (the index of the next one)."""
        return self._index

    def taste(self, user_id: str) -> np.ndarray:
        """A copy of the user's current latent taste vector (``config.factors`` values)."""
        pop = self._population
        return pop.user_vec[pop.user_index(user_id), : self.config.factors].copy()

    def affinity(self, user_id: str, item_id: str) -> float:
        """The current ground-truth affinity (latent match + demographic effect)."""
        pop = self._population
        u, i = pop.user_index(user_id), pop.item_index(item_id)
        return float(pop.user_vec[u] @ pop.item_vec[i])

    def demographic_effect(self, user_id: str, item_id: str) -> float:
        """The part of :meth:`affinity` due to the user's demographics and item's genres."""
        f, g = self.config.factors, self.config.factors + len(GENRES)
        pop = self._population
        u, i = pop.user_index(user_id), pop.item_index(item_id)
        return float(pop.user_vec[u, f:g] @ pop.item_vec[i, f:g])

    def quality(self, item_id: str) -> float:
        """The item's current quality (its appeal to everyone)."""
        pop = self._population
        return float(pop.item_vec[pop.item_index(item_id), -1])

    def popularity(self, item_id: str) -> float:
        """Probability that a slate draw picks this item first (sums to 1 over items)."""
        pop = self._population
        return float(pop.popularity[pop.item_index(item_id)])

    # ------------------------------------------------------------------ the stream

    def _generate(self) -> Iterator[InteractionEventType]:
        cfg, pop, drift, clock = self.config, self._population, self._drift, self._clock
        k = cfg.slate_size
        prefix = f"sim-{cfg.seed}-"
        user_ids, item_ids = pop.user_ids, pop.item_ids
        is_bot = pop.is_bot.tolist()
        v = SCHEMA_VERSION
        while True:
            batch = draw_batch(cfg, pop, self._rng)
            out = outcomes(batch, pop)
            for s, user in enumerate(batch.users):
                ctx = context(clock.now, batch.device[s], f"{prefix}s{self._session}")
                self._session += 1
                uid = user_ids[user]
                if is_bot[user]:
                    version = drift.version
                    yield from self._bot_burst(uid, ctx)
                    if drift.version != version:  # a drift step fell inside the burst
                        out = outcomes(batch, pop)
                    continue
                slate, gaps, rated = batch.slate_list[s], batch.gaps[s], batch.rated[s]
                g = 0
                # Every field, defaults included, is passed to model_construct: that skips
                # pydantic's default resolution, which is most of its cost.
                for pos in range(k):
                    iid = item_ids[slate[pos]]
                    if drift.due(self._index):
                        out = outcomes(batch, pop)
                    ts = clock.tick(user, gaps[g])
                    g += 1
                    if not out.click[s][pos]:
                        i, self._index = self._index, self._index + 1
                        yield ImpressionEvent.model_construct(
                            schema_version=v, type="impression", event_id=f"{prefix}{i}",
                            ts=ts, context=ctx, user_id=uid, item_id=iid, position=pos,
                            policy=None, propensity=None,
                        )  # fmt: skip
                        continue
                    i, self._index = self._index, self._index + 1
                    yield ClickEvent.model_construct(
                        schema_version=v, type="click", event_id=f"{prefix}{i}",
                        ts=ts, context=ctx, user_id=uid, item_id=iid, position=pos,
                        policy=None, propensity=None,
                    )  # fmt: skip
                    if drift.due(self._index):
                        out = outcomes(batch, pop)
                    ts = clock.tick(user, gaps[g])
                    g += 1
                    i, self._index = self._index, self._index + 1
                    yield DwellEvent.model_construct(
                        schema_version=v, type="dwell", event_id=f"{prefix}{i}",
                        ts=ts, context=ctx, user_id=uid, item_id=iid, seconds=out.dwell[s][pos],
                    )  # fmt: skip
                    if not rated[pos]:
                        continue
                    if drift.due(self._index):
                        out = outcomes(batch, pop)
                    ts = clock.tick(user, gaps[g])
                    g += 1
                    i, self._index = self._index, self._index + 1
                    yield RatingEvent.model_construct(
                        schema_version=v, type="rating", event_id=f"{prefix}{i}",
                        ts=ts, context=ctx, user_id=uid, item_id=iid, rating=out.rating[s][pos],
                    )  # fmt: skip

    def _bot_burst(self, uid: str, ctx: Context) -> Iterator[ClickEvent]:
        """bot_burst_size clicks on uniformly random items, ~10 per second of event time."""
        prefix = f"sim-{self.config.seed}-"
        item_ids = self._population.item_ids
        for item, gap in draw_bot_burst(self.config, self._bot_rng):
            # Drift only touches normal users, but it is keyed on the global event index.
            self._drift.due(self._index)
            ts = self._clock.advance(gap)
            i, self._index = self._index, self._index + 1
            yield ClickEvent.model_construct(
                schema_version=SCHEMA_VERSION, type="click", event_id=f"{prefix}{i}",
                ts=ts, context=ctx, user_id=uid, item_id=item_ids[item], position=None,
                policy=None, propensity=None,
            )  # fmt: skip


def split_by_user(
    cfg: SimulatorConfig, n_events: int, parts: int, items_everywhere: bool = False
) -> list[list[Event]]:
    """The simulator's profiles and first ``n_events`` events, by the part of their key (the
    user; an item profile's item), as a keyed topic of ``parts`` partitions would hold them.

    With ``items_everywhere`` every part gets every item profile, so that learners that do
    not share their item model still know every item.

    >>> parts = split_by_user(SimulatorConfig(n_users=50, n_items=40, seed=7), 200, 2)
    >>> users = [{e.user_id for e in part if e.type != "item_profile"} for part in parts]
    >>> sum(map(len, parts)), users[0] & users[1]
    (290, set())
    """
    sim = Simulator(cfg)
    out: list[list[Event]] = [[] for _ in range(parts)]
    for p in sim.profiles():
        if p.type == "user_profile":
            out[crc32(p.user_id.encode()) % parts].append(p)  # type: ignore[union-attr]
        elif items_everywhere:
            for part in out:
                part.append(p)
        else:
            out[crc32(p.item_id.encode()) % parts].append(p)  # type: ignore[union-attr]
    for e in sim.events(n_events):
        out[crc32(e.user_id.encode()) % parts].append(e)
    return out
