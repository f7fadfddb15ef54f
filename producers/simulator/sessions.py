"""What users do: batches of sessions, their outcomes given the tastes, contexts and bots.

Random draws that do not depend on tastes (who, which slate, the uniform and normal noise)
are made once per batch in a :class:`Batch`; :func:`outcomes` turns them into clicks, dwell
times and ratings with the current vectors, so a drift step inside a batch only redoes that
cheap part. The event loop itself lives in :class:`~producers.simulator.Simulator`.

>>> import numpy as np
>>> from producers.simulator.config import SimulatorConfig
>>> from producers.simulator.population import Population
>>> cfg = SimulatorConfig(n_users=50, n_items=40)
>>> pop = Population.draw(cfg, np.random.default_rng(0))
>>> batch = draw_batch(cfg, pop, np.random.default_rng(1))
>>> len(batch.users) == BATCH_SESSIONS, len(batch.slate_list[0]) == cfg.slate_size
(True, True)
>>> out = outcomes(batch, pop)
>>> all(1.0 <= r <= 5.0 for row in out.rating for r in row)
True
>>> context(86400.0 * 4 + 3600, device=0, session_id="s1").weekday  # a Monday, 1 am
0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from producers.simulator.config import LIMITS, SimulatorConfig
from producers.simulator.population import DEVICES, Population
from stream.events import ClickEvent, Context, DwellEvent, ImpressionEvent, RatingEvent

__all__ = [
    "BATCH_SESSIONS",
    "Batch",
    "InteractionEventType",
    "Outcomes",
    "click_probability",
    "context",
    "draw_batch",
    "draw_bot_burst",
    "dwell_seconds",
    "outcomes",
    "rating_value",
]

InteractionEventType = ImpressionEvent | ClickEvent | DwellEvent | RatingEvent

# Click model P(click) = sigmoid(_CLICK_SLOPE * affinity + _CLICK_BIAS); affinity has a
# standard deviation of about 1.1, which puts the overall CTR near 15 %.
_CLICK_SLOPE = 1.5
_CLICK_BIAS = -2.5
# Dwell seconds are lognormal, median _DWELL_MEDIAN at affinity 0, growing with affinity.
_DWELL_MEDIAN = 60.0
_DWELL_SLOPE = 0.6
_DWELL_SIGMA = 0.7
# Rating = clip(round(mid + _RATING_SLOPE * affinity + noise), min, max).
_RATING_SLOPE = 0.8
_RATING_NOISE = 0.6
# Event-time gap between two bot clicks: ~10 clicks per second, i.e. ~600 per minute.
_BOT_GAP_RANGE = (0.05, 0.15)
# Sessions drawn per vectorized batch; fixed so the stream does not depend on n.
BATCH_SESSIONS = 256


@dataclass
class Batch:
    """Random draws of one batch of sessions; they do not depend on tastes."""

    users: list[int]
    slates: np.ndarray  # (B, slate_size) item indices
    slate_list: list[list[int]]
    device: list[int]
    click_u: np.ndarray
    dwell_z: np.ndarray
    rated: list[list[bool]]
    rating_z: np.ndarray
    gaps: list[list[float]]


@dataclass
class Outcomes:
    """What the users of a batch do with their slates, given the current tastes."""

    click: list[list[bool]]
    dwell: list[list[float]]
    rating: list[list[float]]


def draw_batch(cfg: SimulatorConfig, pop: Population, rng: np.random.Generator) -> Batch:
    """The next :data:`BATCH_SESSIONS` sessions: users by activity, slates by popularity."""
    b, k = BATCH_SESSIONS, cfg.slate_size
    users = np.searchsorted(pop.session_cdf, rng.random(b), side="right")
    users = np.minimum(users, cfg.n_users - 1)
    # The user's usual device most of the time, sometimes another one.
    alt = rng.integers(0, len(DEVICES), b)
    device = np.where(rng.random(b) < 0.8, pop.device[users], alt)
    # Slates by popularity without replacement: draw with replacement and keep the
    # first k distinct items (= sequential popularity sampling without replacement).
    cand = np.searchsorted(pop.pop_cdf, rng.random((b, 3 * k)), side="right")
    cand = np.minimum(cand, cfg.n_items - 1).tolist()
    slate_list: list[list[int]] = []
    for row in cand:
        picked = list(dict.fromkeys(row))[:k]
        if len(picked) < k:  # tiny catalogues with a very skewed head: exact fallback
            picked = rng.choice(cfg.n_items, k, replace=False, p=pop.popularity).tolist()
        slate_list.append(picked)
    return Batch(
        users=users.tolist(),
        slates=np.array(slate_list, dtype=np.intp),
        slate_list=slate_list,
        device=device.tolist(),
        click_u=rng.random((b, k)),
        dwell_z=rng.standard_normal((b, k)),
        rated=(rng.random((b, k)) < cfg.rating_prob).tolist(),
        rating_z=rng.standard_normal((b, k)),
        # Up to 3 events (click, dwell, rating) per shown item.
        gaps=rng.exponential(1.0 / cfg.events_per_second, (b, 3 * k)).tolist(),
    )


def outcomes(batch: Batch, pop: Population) -> Outcomes:
    """Clicks, dwell seconds and ratings of a batch under the population's current vectors."""
    users = np.asarray(batch.users, dtype=np.intp)
    aff = np.einsum("bd,bkd->bk", pop.user_vec[users], pop.item_vec[batch.slates])
    return Outcomes(
        click=(batch.click_u < click_probability(aff)).tolist(),
        dwell=dwell_seconds(aff, batch.dwell_z).tolist(),
        rating=rating_value(aff, batch.rating_z).tolist(),
    )


# The outcome model, shared with the closed loop (producers/simulator/closed_loop.py), which
# adds position bias and fatigue on top of the click probability.


def click_probability(aff: np.ndarray) -> np.ndarray:
    """P(click) of an item the user looks at, from the ground-truth affinity.

    >>> [round(float(p), 3) for p in click_probability(np.array([0.0, 1.0]))]
    [0.076, 0.269]
    """
    result: np.ndarray = 1.0 / (1.0 + np.exp(-(_CLICK_SLOPE * aff + _CLICK_BIAS)))
    return result


def dwell_seconds(aff: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Seconds spent after a click (lognormal around the median, capped, 0.1 s steps)."""
    dwell = np.exp(np.log(_DWELL_MEDIAN) + _DWELL_SLOPE * aff + _DWELL_SIGMA * z)
    result: np.ndarray = np.round(np.minimum(dwell, LIMITS.dwell_cap_seconds), 1)
    return result


def rating_value(aff: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The rating given after a click (on the configured scale, whole stars)."""
    mid = (LIMITS.rating_min + LIMITS.rating_max) / 2.0
    rating = np.rint(mid + _RATING_SLOPE * aff + _RATING_NOISE * z)
    result: np.ndarray = np.clip(rating, LIMITS.rating_min, LIMITS.rating_max)
    return result


def context(now: float, device: int, session_id: str) -> Context:
    """The context of a session starting at event time ``now`` on ``DEVICES[device]``."""
    day, second = divmod(int(now), 86400)
    # 1970-01-01 was a Thursday (weekday 3 with Monday = 0), like datetime.weekday().
    return Context.model_construct(
        device=DEVICES[device],
        hour=second // 3600,
        weekday=(day + 3) % 7,
        session_id=session_id,
    )


def draw_bot_burst(cfg: SimulatorConfig, rng: np.random.Generator) -> list[tuple[int, float]]:
    """(item index, gap) of each click of a bot burst: uniformly random items, ~10 a second."""
    items = rng.integers(0, cfg.n_items, cfg.bot_burst_size).tolist()
    gaps = rng.uniform(*_BOT_GAP_RANGE, cfg.bot_burst_size).tolist()
    return list(zip(items, gaps, strict=True))
