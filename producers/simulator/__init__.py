"""Seeded synthetic users, items and feedback sessions for the pipeline.

A :class:`Simulator` builds a population (users with demographics and a latent taste
vector, items with genres, a release year, a popularity and latent traits correlated with
their genres) and then plays sessions: a user is shown a slate of popular items and clicks,
dwells on and sometimes rates the ones that match their taste. Optional bots fire click
bursts far above the consumer's bot threshold, and an optional drift point redraws the
tastes of part of the population so drift detectors have something to find.

Everything is a pure function of :class:`SimulatorConfig` (seed included): two simulators
with the same config produce the same profiles and the same events, ids and timestamps
included. Successive :meth:`Simulator.events` calls continue one stream.

One module per concept: :mod:`~producers.simulator.config` (the knobs),
:mod:`~producers.simulator.population` (users, items, tastes),
:mod:`~producers.simulator.sessions` (slates, outcomes, contexts, bots),
:mod:`~producers.simulator.schedule` (event clock, drift),
:mod:`~producers.simulator.simulator` (the stream that ties them together) and, for the
closed loop where slates come from the serving path, :mod:`~producers.simulator.closed_loop`
(users react to what they are shown) and :mod:`~producers.simulator.loop_metrics` (ground
truth per policy: CTR, regret, coverage, exposure Gini, popularity bias).

>>> cfg = SimulatorConfig(n_users=50, n_items=40, seed=7)
>>> sim = Simulator(cfg)
>>> len(list(sim.profiles()))
90
>>> events = list(sim.events(200))
>>> len(events), events[0].event_id, events[0].user_id[:1], events[0].item_id[:1]
(200, 'sim-7-0', 'u', 'i')
>>> events == list(Simulator(cfg).events(200))
True
>>> all(a.ts <= b.ts for a, b in zip(events, events[1:]))
True
"""

from producers.simulator.closed_loop import ClosedLoop, LoopConfig, RecommendFn
from producers.simulator.config import SimulatorConfig
from producers.simulator.loop_metrics import LoopMetrics
from producers.simulator.population import (
    DEVICES,
    GENDERS,
    GENRES,
    OCCUPATIONS,
    ProfileEventType,
    age_group,
)
from producers.simulator.schedule import MAX_USER_EVENTS_PER_MINUTE
from producers.simulator.sessions import InteractionEventType
from producers.simulator.simulator import Simulator, split_by_user

__all__ = [
    "DEVICES",
    "GENDERS",
    "GENRES",
    "MAX_USER_EVENTS_PER_MINUTE",
    "OCCUPATIONS",
    "ClosedLoop",
    "InteractionEventType",
    "LoopConfig",
    "LoopMetrics",
    "ProfileEventType",
    "RecommendFn",
    "Simulator",
    "SimulatorConfig",
    "age_group",
    "split_by_user",
]
