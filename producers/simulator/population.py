"""Who is simulated: users with demographics and tastes, items with genres and quality.

A :class:`Population` is drawn once from its own random stream. Affinity is one dot product
of a user vector ``[taste, demographic preferences, 1]`` with an item vector ``[traits,
genre weights, quality]``: the latent match, plus a demographic x genre preference, plus how
much everyone likes the item. A drift (see :mod:`producers.simulator.schedule`) replaces
these vectors; everything else stays fixed.

>>> import numpy as np
>>> from producers.simulator.config import SimulatorConfig
>>> pop = Population.draw(SimulatorConfig(n_users=50, n_items=40), np.random.default_rng(0))
>>> pop.user_ids[0], pop.item_ids[-1], len(pop.item_genres)
('u00000', 'i00039', 40)
>>> round(float(pop.popularity.sum()), 9)
1.0
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from producers.simulator.config import SimulatorConfig
from stream.events import ItemProfileEvent, UserProfileEvent

__all__ = [
    "DEVICES",
    "GENDERS",
    "GENRES",
    "OCCUPATIONS",
    "Population",
    "ProfileEventType",
    "age_group",
    "draw_preferences",
    "share_count",
]

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

# Demographic preferences (age group / gender / occupation x genre): smaller than the
# latent part (std 1) but large enough for a feature-based model to pick up.
_AGE_GENRE_SCALE = 0.45
_GENDER_GENRE_SCALE = 0.25
_OCCUPATION_GENRE_SCALE = 0.15
# Item quality (appeal to everyone, whatever their taste): a learnable per-item effect.
ITEM_QUALITY_SCALE = 1.2
# Expected events of a normal session per shown item (1 + CTR * (1 + rating_prob)),
# used only to weight how often bots start a burst (see Population.draw).
_EVENTS_PER_SLOT = 1.2


def age_group(age: int) -> int:
    """Index of the age group (0: 13-24, 1: 25-39, 2: 40-59, 3: 60+) used for preferences.

    >>> [age_group(a) for a in (13, 25, 59, 80)]
    [0, 1, 2, 3]
    """
    return sum(age >= b for b in _AGE_BOUNDS)


def share_count(share: float, total: int) -> int:
    """Users that a share stands for; any positive share means at least one user.

    >>> share_count(0.001, 100), share_count(0.0, 100), share_count(0.5, 7)
    (1, 0, 4)
    """
    if share <= 0 or total == 0:
        return 0
    return min(total, max(1, round(share * total)))


def draw_preferences(
    rng: np.random.Generator, groups: np.ndarray, genders: np.ndarray, occupations: np.ndarray
) -> np.ndarray:
    """Each user's demographic x genre preferences: (age group + gender + occupation) rows."""
    ng = len(GENRES)
    age_pref = rng.standard_normal((len(_AGE_BOUNDS) + 1, ng)) * _AGE_GENRE_SCALE
    gender_pref = rng.standard_normal((len(GENDERS), ng)) * _GENDER_GENRE_SCALE
    occ_pref = rng.standard_normal((len(OCCUPATIONS), ng)) * _OCCUPATION_GENRE_SCALE
    result: np.ndarray = age_pref[groups] + gender_pref[genders] + occ_pref[occupations]
    return result


def _index(ids: tuple[str, ...], prefix: str, key: str, what: str) -> int:
    """Position of an id such as ``u00042`` (ids are the prefix and a zero-padded index)."""
    try:
        idx = int(key[1:])
    except ValueError:
        idx = -1
    if not key.startswith(prefix) or not 0 <= idx < len(ids):
        raise KeyError(f"unknown {what} {key!r}")
    return idx


@dataclass
class Population:
    """Users and items of a simulation; ``user_vec`` and ``item_vec`` change with drift."""

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    ages: np.ndarray
    genders: np.ndarray  # indices into GENDERS
    occupations: np.ndarray  # indices into OCCUPATIONS
    groups: np.ndarray  # age groups, see age_group
    device: np.ndarray  # each user's usual device, indices into DEVICES
    is_bot: np.ndarray
    bot_users: frozenset[str]
    item_genres: list[tuple[int, ...]]
    years: np.ndarray
    titles: list[str]
    popularity: np.ndarray  # P(an item is drawn first into a slate)
    pop_cdf: np.ndarray
    session_cdf: np.ndarray  # cumulative P(a session is a given user's)
    taste_scale: float
    user_vec: np.ndarray  # [taste, demographic preferences, 1]
    item_vec: np.ndarray  # [traits, genre weights, quality]

    @classmethod
    def draw(cls, cfg: SimulatorConfig, rng: np.random.Generator) -> Population:
        """A population for ``cfg``; the order of the draws is part of the seeded output."""
        nu, ni, f, ng = cfg.n_users, cfg.n_items, cfg.factors, len(GENRES)
        # Both factor vectors have per-dimension variance 1/sqrt(f), so their dot product
        # has variance ~1 whatever the number of factors.
        scale = f**-0.25
        width = max(5, len(str(max(nu, ni) - 1)))
        user_ids = tuple(f"u{i:0{width}d}" for i in range(nu))
        item_ids = tuple(f"i{i:0{width}d}" for i in range(ni))

        ages = np.clip(np.rint(rng.normal(34.0, 13.0, nu)), 13, 80).astype(int)
        genders = (rng.random(nu) < 0.5).astype(int)
        occupations = rng.integers(0, len(OCCUPATIONS), nu)
        # Make occupations plausible for the age: mostly students when young, retired when old.
        switch = rng.random(nu) < 0.7
        occupations[switch & (ages < 22)] = _STUDENT
        occupations[switch & (ages >= 65)] = _RETIRED
        occupations[(occupations == _RETIRED) & (ages < 50)] = OCCUPATIONS.index("other")
        groups = np.array([age_group(int(a)) for a in ages])

        taste = rng.standard_normal((nu, f)) * scale
        activity = rng.lognormal(0.0, 1.0, nu)
        device = rng.choice(len(DEVICES), nu, p=_DEVICE_PRIOR)
        user_demo = draw_preferences(rng, groups, genders, occupations)

        bots = np.sort(rng.permutation(nu)[: share_count(cfg.bot_share, nu)])
        is_bot = np.zeros(nu, dtype=bool)
        is_bot[bots] = True

        # Items: 1-3 distinct genres drawn by the genre prior (Gumbel top-k, vectorized).
        n_genres = rng.choice([1, 2, 3], ni, p=[0.5, 0.35, 0.15])
        keys = np.log(_GENRE_PRIOR / _GENRE_PRIOR.sum()) + rng.gumbel(size=(ni, ng))
        order = np.argsort(-keys, axis=1)
        item_genres = [tuple(sorted(order[i, : n_genres[i]].tolist())) for i in range(ni)]
        genre_w = np.zeros((ni, ng))
        for i, gs in enumerate(item_genres):
            genre_w[i, list(gs)] = 1.0 / len(gs)
        # Traits = genre embeddings (summed, rescaled to unit variance) + item-specific noise,
        # so items of a genre sit together in latent space and tastes generalise by genre.
        genre_emb = rng.standard_normal((ng, f))
        genre_part = (genre_w * n_genres[:, None]) @ genre_emb / np.sqrt(n_genres)[:, None]
        traits = (0.8 * genre_part + 0.6 * rng.standard_normal((ni, f))) * scale

        years = np.clip(2023 - np.floor(rng.exponential(12.0, ni)), 1920, 2023).astype(int)
        titles = _titles(rng, ni)

        # Zipf-like popularity over a random ranking: a few hits get most of the exposure.
        ranks = rng.permutation(ni)
        pop = 1.0 / (ranks + 1.0) ** 0.9
        popularity = pop / pop.sum()
        pop_cdf = np.cumsum(popularity)
        pop_cdf[-1] = 1.0

        # Item quality is drawn last so the other draws do not depend on it; the user side
        # of it is a column of ones.
        quality = rng.standard_normal(ni) * ITEM_QUALITY_SCALE

        # Session weights: activity, but a bot burst is ~bot_burst_size events against
        # ~_EVENTS_PER_SLOT * slate_size for a normal session, so bots start bursts that
        # much less often; each bot then emits about as many events as an average user and
        # bots make up roughly bot_share of the events.
        weight = activity.copy()
        weight[is_bot] *= _EVENTS_PER_SLOT * cfg.slate_size / cfg.bot_burst_size
        cdf = np.cumsum(weight)
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            ages=ages,
            genders=genders,
            occupations=occupations,
            groups=groups,
            device=device,
            is_bot=is_bot,
            bot_users=frozenset(user_ids[i] for i in bots),
            item_genres=item_genres,
            years=years,
            titles=titles,
            popularity=popularity,
            pop_cdf=pop_cdf,
            session_cdf=cdf / cdf[-1],
            taste_scale=scale,
            user_vec=np.hstack([taste, user_demo, np.ones((nu, 1))]),
            item_vec=np.hstack([traits, genre_w, quality[:, None]]),
        )

    def user_index(self, user_id: str) -> int:
        """Row of ``user_id`` in the user arrays; KeyError for an unknown id."""
        return _index(self.user_ids, "u", user_id, "user")

    def item_index(self, item_id: str) -> int:
        """Row of ``item_id`` in the item arrays; KeyError for an unknown id."""
        return _index(self.item_ids, "i", item_id, "item")

    def profiles(self, seed: int, ts: float) -> Iterator[ProfileEventType]:
        """One profile event per user, then one per item, all at ``ts``."""
        ages, genders, occs = self.ages.tolist(), self.genders.tolist(), self.occupations.tolist()
        for i, uid in enumerate(self.user_ids):
            yield UserProfileEvent.model_construct(
                event_id=f"sim-{seed}-profile-{uid}",
                ts=ts,
                user_id=uid,
                age=ages[i],
                gender=GENDERS[genders[i]],
                occupation=OCCUPATIONS[occs[i]],
            )
        years = self.years.tolist()
        for i, iid in enumerate(self.item_ids):
            yield ItemProfileEvent.model_construct(
                event_id=f"sim-{seed}-profile-{iid}",
                ts=ts,
                item_id=iid,
                title=self.titles[i],
                genres=tuple(GENRES[g] for g in self.item_genres[i]),
                year=years[i],
            )


def _titles(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` plausible film titles ("The Silent Harbor", a few sequels)."""
    adj = rng.integers(0, len(_TITLE_ADJ), n)
    noun = rng.integers(0, len(_TITLE_NOUN), n)
    sequel = rng.random(n) < 0.1
    return [
        f"The {_TITLE_ADJ[a]} {_TITLE_NOUN[b]}" + (" II" if s else "")
        for a, b, s in zip(adj.tolist(), noun.tolist(), sequel.tolist(), strict=True)
    ]
