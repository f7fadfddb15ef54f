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

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from stream.config import Limits
from stream.events import (
    SCHEMA_VERSION,
    ClickEvent,
    Context,
    DwellEvent,
    ImpressionEvent,
    ItemProfileEvent,
    RatingEvent,
    UserProfileEvent,
)

__all__ = [
    "DEVICES",
    "GENRES",
    "MAX_USER_EVENTS_PER_MINUTE",
    "OCCUPATIONS",
    "InteractionEventType",
    "ProfileEventType",
    "Simulator",
    "SimulatorConfig",
    "age_group",
]

InteractionEventType = ImpressionEvent | ClickEvent | DwellEvent | RatingEvent
ProfileEventType = UserProfileEvent | ItemProfileEvent

GENRES: tuple[str, ...] = (
    "action",
    "adventure",
    "animation",
    "comedy",
    "crime",
    "documentary",
    "drama",
    "fantasy",
    "horror",
    "romance",
    "sci-fi",
    "thriller",
)
# How often each genre is attached to an item (drama and comedy dominate real catalogues).
_GENRE_PRIOR = np.array([1.2, 0.8, 0.5, 1.6, 0.8, 0.4, 2.0, 0.6, 0.6, 1.0, 0.7, 1.0])
OCCUPATIONS: tuple[str, ...] = (
    "student",
    "engineer",
    "educator",
    "artist",
    "healthcare",
    "sales",
    "administrator",
    "writer",
    "retired",
    "other",
)
_STUDENT = OCCUPATIONS.index("student")
_RETIRED = OCCUPATIONS.index("retired")
GENDERS: tuple[str, ...] = ("M", "F")
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet", "tv")
_DEVICE_PRIOR = np.array([0.55, 0.30, 0.10, 0.05])
# Upper bounds (exclusive) of the age groups 13-24, 25-39, 40-59; 60+ is the last group.
_AGE_BOUNDS = (25, 40, 60)

_TITLE_ADJ = (
    "Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Midnight", "Lost", "Wild",
    "Frozen", "Electric", "Secret", "Distant", "Burning", "Quiet", "Final", "Endless", "Iron",
)  # fmt: skip
_TITLE_NOUN = (
    "Harbor", "Empire", "Garden", "River", "Signal", "Kingdom", "Stranger", "Summer", "Machine",
    "Promise", "Frontier", "Mirror", "Horizon", "Letter", "Storm", "City", "Orchard", "Voyage",
)  # fmt: skip

# Normal users are held to this many events per minute bucket int(ts // 60), safely under
# the consumer's bot threshold (ConsumerConfig.bot_events_per_minute = 120), so no real
# user is ever filtered as a bot whatever the configured event rate.
MAX_USER_EVENTS_PER_MINUTE = 100

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
# Demographic preferences (age group / gender / occupation x genre): smaller than the
# latent part (std 1) but large enough for a feature-based model to pick up.
_AGE_GENRE_SCALE = 0.45
_GENDER_GENRE_SCALE = 0.25
_OCCUPATION_GENRE_SCALE = 0.15
# Expected events of a normal session per shown item (1 + CTR * (1 + rating_prob)),
# used only to weight how often bots start a burst (see Simulator.__init__).
_EVENTS_PER_SLOT = 1.2
# Event-time gap between two bot clicks: ~10 clicks per second, i.e. ~600 per minute.
_BOT_GAP_RANGE = (0.05, 0.15)
# Item quality (appeal to everyone, whatever their taste): a learnable per-item effect.
_ITEM_QUALITY_SCALE = 1.2
# A gradual drift moves tastes in this many equal steps over drift_duration events.
_DRIFT_STEPS = 20
# Sessions drawn per vectorized batch; fixed so the stream does not depend on n.
_BATCH_SESSIONS = 256
_LIMITS = Limits()


def age_group(age: int) -> int:
    """Index of the age group (0: 13-24, 1: 25-39, 2: 40-59, 3: 60+) used for preferences.

    >>> [age_group(a) for a in (13, 25, 59, 80)]
    [0, 1, 2, 3]
    """
    return sum(age >= b for b in _AGE_BOUNDS)


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    real = int | float | np.integer | np.floating
    return isinstance(value, real) and not isinstance(value, bool)


@dataclass(frozen=True)
class SimulatorConfig:
    """Size, randomness and behaviour of a simulated population.

    ``bot_share`` and ``drift_share`` are shares in [0, 1]; a positive share always yields
    at least one user. ``drift_at`` is the index of the first interaction event generated
    with the redrawn tastes (``None``: no drift). With ``drift_duration`` > 0 the change is
    gradual: tastes move from old to new in ``_DRIFT_STEPS`` equal steps spread over that
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
        for name in ("n_users", "n_items", "factors", "slate_size", "bot_burst_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.slate_size > self.n_items:
            raise ValueError(
                f"slate_size ({self.slate_size}) cannot exceed n_items ({self.n_items}): "
                "a slate shows distinct items"
            )
        for name in ("bot_share", "drift_share", "drift_item_share", "rating_prob"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a share in [0, 1], got {value!r}")
        if self.drift_at is not None and (not _is_int(self.drift_at) or self.drift_at < 0):
            raise ValueError(
                f"drift_at must be None or a non-negative event index, got {self.drift_at!r}"
            )
        if not _is_int(self.drift_duration) or self.drift_duration < 0:
            raise ValueError(
                f"drift_duration must be a non-negative number of events, "
                f"got {self.drift_duration!r}"
            )
        if (
            not _is_real(self.events_per_second)
            or not math.isfinite(self.events_per_second)
            or self.events_per_second <= 0
        ):
            raise ValueError(
                f"events_per_second must be a positive number, got {self.events_per_second!r}"
            )
        if not _is_real(self.start_ts) or not math.isfinite(self.start_ts):
            raise ValueError(f"start_ts must be a finite epoch time, got {self.start_ts!r}")
        if self.start_ts < _LIMITS.ts_min:
            raise ValueError(
                f"start_ts ({self.start_ts}) is before the earliest time events accept "
                f"({_LIMITS.ts_min})"
            )
        if self.start_ts > time.time():
            raise ValueError(
                f"start_ts ({self.start_ts}) is in the future: consumers would reject the events"
            )


def _share_count(share: float, total: int) -> int:
    """Users that a share stands for; any positive share means at least one user."""
    if share <= 0 or total == 0:
        return 0
    return min(total, max(1, round(share * total)))


@dataclass
class _Batch:
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
class _Outcomes:
    """What the users of a batch do with their slates, given the current tastes."""

    click: list[list[bool]]
    dwell: list[list[float]]
    rating: list[list[float]]


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
        self._drift_rng = np.random.default_rng(drift_ss)
        self._build_population(np.random.default_rng(pop_ss))
        self.drift_users: frozenset[str] = frozenset()
        self._drifted = False
        self._drift_version = 0  # bumped at every drift step, to redo drawn outcomes
        self._drift_target: np.ndarray | None = None
        self._drift_origin: np.ndarray | None = None
        # (event index, share of the way from old to new tastes), in order.
        self._drift_steps: list[tuple[int, float]] = []
        if cfg.drift_at is not None:
            n = _DRIFT_STEPS if cfg.drift_duration > 0 else 1
            self._drift_steps = [
                (cfg.drift_at + cfg.drift_duration * j // n, (j + 1) / n) for j in range(n)
            ]
        self._index = 0
        self._clock = float(cfg.start_ts)
        self._session = 0
        # user index -> [minute bucket, events in it], to enforce MAX_USER_EVENTS_PER_MINUTE.
        self._buckets: dict[int, list[int]] = {}
        self._stream = self._generate()

    # ------------------------------------------------------------------ population

    def _build_population(self, rng: np.random.Generator) -> None:
        cfg = self.config
        nu, ni, f, ng = cfg.n_users, cfg.n_items, cfg.factors, len(GENRES)
        # Both factor vectors have per-dimension variance 1/sqrt(f), so their dot product
        # has variance ~1 whatever the number of factors.
        scale = f**-0.25
        self._taste_scale = scale

        width = max(5, len(str(max(nu, ni) - 1)))
        self.user_ids: tuple[str, ...] = tuple(f"u{i:0{width}d}" for i in range(nu))
        self.item_ids: tuple[str, ...] = tuple(f"i{i:0{width}d}" for i in range(ni))

        ages = np.clip(np.rint(rng.normal(34.0, 13.0, nu)), 13, 80).astype(int)
        genders = (rng.random(nu) < 0.5).astype(int)
        occupations = rng.integers(0, len(OCCUPATIONS), nu)
        # Make occupations plausible for the age: mostly students when young, retired when old.
        switch = rng.random(nu) < 0.7
        occupations[switch & (ages < 22)] = _STUDENT
        occupations[switch & (ages >= 65)] = _RETIRED
        occupations[(occupations == _RETIRED) & (ages < 50)] = OCCUPATIONS.index("other")
        groups = np.array([age_group(int(a)) for a in ages])
        self._ages, self._genders, self._occupations = ages, genders, occupations
        self._groups = groups

        taste = rng.standard_normal((nu, f)) * scale
        activity = rng.lognormal(0.0, 1.0, nu)
        self._device = rng.choice(len(DEVICES), nu, p=_DEVICE_PRIOR)

        age_pref = rng.standard_normal((len(_AGE_BOUNDS) + 1, ng)) * _AGE_GENRE_SCALE
        gender_pref = rng.standard_normal((len(GENDERS), ng)) * _GENDER_GENRE_SCALE
        occ_pref = rng.standard_normal((len(OCCUPATIONS), ng)) * _OCCUPATION_GENRE_SCALE
        user_demo = age_pref[groups] + gender_pref[genders] + occ_pref[occupations]

        n_bots = _share_count(cfg.bot_share, nu)
        bots = np.sort(rng.permutation(nu)[:n_bots])
        self._is_bot = np.zeros(nu, dtype=bool)
        self._is_bot[bots] = True
        self.bot_users: frozenset[str] = frozenset(self.user_ids[i] for i in bots)

        # Items: 1-3 distinct genres drawn by the genre prior (Gumbel top-k, vectorized).
        n_genres = rng.choice([1, 2, 3], ni, p=[0.5, 0.35, 0.15])
        keys = np.log(_GENRE_PRIOR / _GENRE_PRIOR.sum()) + rng.gumbel(size=(ni, ng))
        order = np.argsort(-keys, axis=1)
        self._item_genres: list[tuple[int, ...]] = [
            tuple(sorted(order[i, : n_genres[i]].tolist())) for i in range(ni)
        ]
        genre_w = np.zeros((ni, ng))
        for i, gs in enumerate(self._item_genres):
            genre_w[i, list(gs)] = 1.0 / len(gs)
        # Traits = genre embeddings (summed, rescaled to unit variance) + item-specific noise,
        # so items of a genre sit together in latent space and tastes generalise by genre.
        genre_emb = rng.standard_normal((ng, f))
        genre_part = (genre_w * n_genres[:, None]) @ genre_emb / np.sqrt(n_genres)[:, None]
        traits = (0.8 * genre_part + 0.6 * rng.standard_normal((ni, f))) * scale

        self._years = np.clip(2023 - np.floor(rng.exponential(12.0, ni)), 1920, 2023).astype(int)
        adj = rng.integers(0, len(_TITLE_ADJ), ni)
        noun = rng.integers(0, len(_TITLE_NOUN), ni)
        sequel = rng.random(ni) < 0.1
        self._titles = [
            f"The {_TITLE_ADJ[a]} {_TITLE_NOUN[b]}" + (" II" if s else "")
            for a, b, s in zip(adj.tolist(), noun.tolist(), sequel.tolist(), strict=True)
        ]

        # Zipf-like popularity over a random ranking: a few hits get most of the exposure.
        ranks = rng.permutation(ni)
        pop = 1.0 / (ranks + 1.0) ** 0.9
        self._popularity = pop / pop.sum()
        self._pop_cdf = np.cumsum(self._popularity)
        self._pop_cdf[-1] = 1.0

        # Affinity = [taste, demo] . [traits, genre weights]: one dot product gives the
        # latent match plus the demographic x genre preference. Only the taste block drifts.
        # Item quality: how much everyone likes the item, whatever their taste (a column of
        # ones on the user side). Drawn last so the other draws do not depend on it.
        quality = rng.standard_normal(ni) * _ITEM_QUALITY_SCALE
        self._user_vec = np.hstack([taste, user_demo, np.ones((nu, 1))])
        self._item_vec = np.hstack([traits, genre_w, quality[:, None]])

        # Session weights: activity, but a bot burst is ~bot_burst_size events against
        # ~_EVENTS_PER_SLOT * slate_size for a normal session, so bots start bursts that
        # much less often; each bot then emits about as many events as an average user and
        # bots make up roughly bot_share of the events.
        weight = activity.copy()
        weight[self._is_bot] *= _EVENTS_PER_SLOT * cfg.slate_size / cfg.bot_burst_size
        cdf = np.cumsum(weight)
        self._session_cdf = cdf / cdf[-1]

    # ------------------------------------------------------------------ public API

    def profiles(self) -> Iterator[ProfileEventType]:
        """One :class:`UserProfileEvent` per user, then one :class:`ItemProfileEvent` per item.

        All carry ``ts = config.start_ts``; send them before :meth:`events`.
        """
        cfg = self.config
        ts = float(cfg.start_ts)
        ages, genders, occs = (
            self._ages.tolist(),
            self._genders.tolist(),
            self._occupations.tolist(),
        )
        for i, uid in enumerate(self.user_ids):
            yield UserProfileEvent.model_construct(
                event_id=f"sim-{cfg.seed}-profile-{uid}",
                ts=ts,
                user_id=uid,
                age=ages[i],
                gender=GENDERS[genders[i]],
                occupation=OCCUPATIONS[occs[i]],
            )
        years = self._years.tolist()
        for i, iid in enumerate(self.item_ids):
            yield ItemProfileEvent.model_construct(
                event_id=f"sim-{cfg.seed}-profile-{iid}",
                ts=ts,
                item_id=iid,
                title=self._titles[i],
                genres=tuple(GENRES[g] for g in self._item_genres[i]),
                year=years[i],
            )

    def events(self, n: int) -> Iterator[InteractionEventType]:
        """The next ``n`` interaction events of the stream (lazily).

        Successive calls continue the same stream, so ``events(a)`` then ``events(b)``
        yields exactly what a fresh simulator's ``events(a + b)`` would.
        """
        if not _is_int(n) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        return itertools.islice(self._stream, n)

    @property
    def events_generated(self) -> int:
        """Interaction events produced so far (the index of the next one)."""
        return self._index

    def taste(self, user_id: str) -> np.ndarray:
        """A copy of the user's current latent taste vector (``config.factors`` values)."""
        return self._user_vec[self._user_index(user_id), : self.config.factors].copy()

    def affinity(self, user_id: str, item_id: str) -> float:
        """The current ground-truth affinity (latent match + demographic effect)."""
        u = self._user_index(user_id)
        i = self._item_index(item_id)
        return float(self._user_vec[u] @ self._item_vec[i])

    def demographic_effect(self, user_id: str, item_id: str) -> float:
        """The part of :meth:`affinity` due to the user's demographics and item's genres."""
        f, g = self.config.factors, self.config.factors + len(GENRES)
        u = self._user_index(user_id)
        i = self._item_index(item_id)
        return float(self._user_vec[u, f:g] @ self._item_vec[i, f:g])

    def quality(self, item_id: str) -> float:
        """The item's current quality (its appeal to everyone)."""
        return float(self._item_vec[self._item_index(item_id), -1])

    def popularity(self, item_id: str) -> float:
        """Probability that a slate draw picks this item first (sums to 1 over items)."""
        return float(self._popularity[self._item_index(item_id)])

    # ------------------------------------------------------------------ internals

    def _user_index(self, user_id: str) -> int:
        try:
            idx = int(user_id[1:])
        except ValueError:
            idx = -1
        if not user_id.startswith("u") or not 0 <= idx < len(self.user_ids):
            raise KeyError(f"unknown user {user_id!r}")
        return idx

    def _item_index(self, item_id: str) -> int:
        try:
            idx = int(item_id[1:])
        except ValueError:
            idx = -1
        if not item_id.startswith("i") or not 0 <= idx < len(self.item_ids):
            raise KeyError(f"unknown item {item_id!r}")
        return idx

    def _draw_batch(self) -> _Batch:
        cfg, rng = self.config, self._rng
        b, k = _BATCH_SESSIONS, cfg.slate_size
        users = np.searchsorted(self._session_cdf, rng.random(b), side="right")
        users = np.minimum(users, cfg.n_users - 1)
        # The user's usual device most of the time, sometimes another one.
        alt = rng.integers(0, len(DEVICES), b)
        device = np.where(rng.random(b) < 0.8, self._device[users], alt)
        # Slates by popularity without replacement: draw with replacement and keep the
        # first k distinct items (= sequential popularity sampling without replacement).
        cand = np.searchsorted(self._pop_cdf, rng.random((b, 3 * k)), side="right")
        cand = np.minimum(cand, cfg.n_items - 1).tolist()
        slate_list: list[list[int]] = []
        for row in cand:
            picked = list(dict.fromkeys(row))[:k]
            if len(picked) < k:  # tiny catalogues with a very skewed head: exact fallback
                picked = rng.choice(cfg.n_items, k, replace=False, p=self._popularity).tolist()
            slate_list.append(picked)
        return _Batch(
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

    def _outcomes(self, batch: _Batch) -> _Outcomes:
        users = np.asarray(batch.users, dtype=np.intp)
        aff = np.einsum("bd,bkd->bk", self._user_vec[users], self._item_vec[batch.slates])
        p_click = 1.0 / (1.0 + np.exp(-(_CLICK_SLOPE * aff + _CLICK_BIAS)))
        dwell = np.exp(np.log(_DWELL_MEDIAN) + _DWELL_SLOPE * aff + _DWELL_SIGMA * batch.dwell_z)
        dwell = np.round(np.minimum(dwell, _LIMITS.dwell_cap_seconds), 1)
        mid = (_LIMITS.rating_min + _LIMITS.rating_max) / 2.0
        rating = np.rint(mid + _RATING_SLOPE * aff + _RATING_NOISE * batch.rating_z)
        rating = np.clip(rating, _LIMITS.rating_min, _LIMITS.rating_max)
        return _Outcomes(
            click=(batch.click_u < p_click).tolist(),
            dwell=dwell.tolist(),
            rating=rating.tolist(),
        )

    def _drift_target_vectors(self) -> np.ndarray:
        """User vectors after the drift: new tastes for drift_share of the normal users and,
        with drift_preferences, new demographic x genre preferences for everyone."""
        cfg, rng = self.config, self._drift_rng
        target = self._user_vec.copy()
        normal = np.flatnonzero(~self._is_bot)
        count = _share_count(cfg.drift_share, len(normal))
        chosen = np.sort(rng.choice(normal, count, replace=False))
        target[chosen, : cfg.factors] = (
            rng.standard_normal((count, cfg.factors)) * self._taste_scale
        )
        self.drift_users = frozenset(self.user_ids[i] for i in chosen)
        if cfg.drift_preferences:
            ng = len(GENRES)
            age_pref = rng.standard_normal((len(_AGE_BOUNDS) + 1, ng)) * _AGE_GENRE_SCALE
            gender_pref = rng.standard_normal((len(GENDERS), ng)) * _GENDER_GENRE_SCALE
            occ_pref = rng.standard_normal((len(OCCUPATIONS), ng)) * _OCCUPATION_GENRE_SCALE
            target[:, cfg.factors : cfg.factors + ng] = (
                age_pref[self._groups]
                + gender_pref[self._genders]
                + occ_pref[self._occupations]
            )
        return target

    def _drift_target_items(self) -> np.ndarray:
        """Item vectors after the drift: new quality for drift_item_share of the items."""
        cfg, rng = self.config, self._drift_rng
        target = self._item_vec.copy()
        count = _share_count(cfg.drift_item_share, cfg.n_items)
        chosen = rng.choice(cfg.n_items, count, replace=False)
        target[chosen, -1] = rng.standard_normal(count) * _ITEM_QUALITY_SCALE
        return target

    def _apply_drift(self, share: float) -> None:
        """Move user and item vectors ``share`` of the way from the old to the new ones."""
        if self._drift_target is None:
            self._drift_origin = self._user_vec.copy()
            self._drift_target = self._drift_target_vectors()
            self._drift_items = (self._item_vec.copy(), self._drift_target_items())
        assert self._drift_origin is not None
        origin, target = self._drift_origin, self._drift_target
        self._user_vec = origin + share * (target - origin)
        item_origin, item_target = self._drift_items
        self._item_vec = item_origin + share * (item_target - item_origin)
        self._drifted = True
        self._drift_version += 1

    def _due_drift(self) -> bool:
        """Apply the drift step due at the next event index, if any; True if one happened."""
        steps = self._drift_steps
        if steps and self._index >= steps[0][0]:
            self._apply_drift(steps.pop(0)[1])
            return True
        return False

    def _tick(self, user: int, gap: float) -> float:
        """Advance the event clock for one event of a normal user; return its ts."""
        # Milliseconds are plenty, and rounding is monotone so ts stays non-decreasing.
        ts = round(self._clock + gap, 3)
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
        self._clock = ts
        return ts

    def _context(self, device: int) -> Context:
        day, second = divmod(int(self._clock), 86400)
        # 1970-01-01 was a Thursday (weekday 3 with Monday = 0), like datetime.weekday().
        return Context.model_construct(
            device=DEVICES[device],
            hour=second // 3600,
            weekday=(day + 3) % 7,
            session_id=f"sim-{self.config.seed}-s{self._session}",
        )

    def _generate(self) -> Iterator[InteractionEventType]:
        k = self.config.slate_size
        prefix = f"sim-{self.config.seed}-"
        user_ids, item_ids = self.user_ids, self.item_ids
        is_bot = self._is_bot.tolist()
        v = SCHEMA_VERSION
        while True:
            batch = self._draw_batch()
            out = self._outcomes(batch)
            for s, user in enumerate(batch.users):
                ctx = self._context(batch.device[s])
                self._session += 1
                uid = user_ids[user]
                if is_bot[user]:
                    version = self._drift_version
                    yield from self._bot_burst(uid, ctx)
                    if self._drift_version != version:  # a drift step fell inside the burst
                        out = self._outcomes(batch)
                    continue
                slate, gaps, rated = batch.slate_list[s], batch.gaps[s], batch.rated[s]
                g = 0
                # Every field, defaults included, is passed to model_construct: that skips
                # pydantic's default resolution, which is most of its cost.
                for pos in range(k):
                    iid = item_ids[slate[pos]]
                    if self._due_drift():
                        out = self._outcomes(batch)
                    ts = self._tick(user, gaps[g])
                    g += 1
                    if not out.click[s][pos]:
                        i, self._index = self._index, self._index + 1
                        yield ImpressionEvent.model_construct(
                            schema_version=v, type="impression", event_id=f"{prefix}{i}",
                            ts=ts, context=ctx, user_id=uid, item_id=iid, position=pos,
                        )  # fmt: skip
                        continue
                    i, self._index = self._index, self._index + 1
                    yield ClickEvent.model_construct(
                        schema_version=v, type="click", event_id=f"{prefix}{i}",
                        ts=ts, context=ctx, user_id=uid, item_id=iid, position=pos,
                    )  # fmt: skip
                    if self._due_drift():
                        out = self._outcomes(batch)
                    ts = self._tick(user, gaps[g])
                    g += 1
                    i, self._index = self._index, self._index + 1
                    yield DwellEvent.model_construct(
                        schema_version=v, type="dwell", event_id=f"{prefix}{i}",
                        ts=ts, context=ctx, user_id=uid, item_id=iid, seconds=out.dwell[s][pos],
                    )  # fmt: skip
                    if not rated[pos]:
                        continue
                    if self._due_drift():
                        out = self._outcomes(batch)
                    ts = self._tick(user, gaps[g])
                    g += 1
                    i, self._index = self._index, self._index + 1
                    yield RatingEvent.model_construct(
                        schema_version=v, type="rating", event_id=f"{prefix}{i}",
                        ts=ts, context=ctx, user_id=uid, item_id=iid, rating=out.rating[s][pos],
                    )  # fmt: skip

    def _bot_burst(self, uid: str, ctx: Context) -> Iterator[ClickEvent]:
        """bot_burst_size clicks on uniformly random items, ~10 per second of event time."""
        cfg, rng = self.config, self._bot_rng
        prefix = f"sim-{cfg.seed}-"
        items = rng.integers(0, cfg.n_items, cfg.bot_burst_size).tolist()
        gaps = rng.uniform(*_BOT_GAP_RANGE, cfg.bot_burst_size).tolist()
        for item, gap in zip(items, gaps, strict=True):
            # Drift only touches normal users, but it is keyed on the global event index.
            self._due_drift()
            # No per-minute cap here: bots are meant to trip the consumer's bot filter.
            self._clock = ts = round(self._clock + gap, 3)
            i, self._index = self._index, self._index + 1
            yield ClickEvent.model_construct(
                schema_version=SCHEMA_VERSION, type="click", event_id=f"{prefix}{i}",
                ts=ts, context=ctx, user_id=uid, item_id=self.item_ids[item], position=None,
            )  # fmt: skip
