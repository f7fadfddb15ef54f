"""Recommendations and point predictions from a :class:`~stream.serving.state.ServingState`.

Policies (``POLICIES``):

- ``model``: top-K by the implicit model's logit ``b_i + p_u . q_i``: candidates from the
  ANN index (enough to cover K plus the user's seen items), re-ranked exactly in float64;
  catalogues below ``ann_min_items`` are scanned exactly;
- ``explore``: the ``model`` slate with each slot, with probability ``exploration``, given
  to a uniformly random eligible item not yet in the slate (epsilon-greedy). The propensity
  of an item at a slot is ``(1 - eps) * [it is the greedy choice] + eps / n_eligible``;
- ``popular``: most positive interactions (ties: the order items arrived), propensity 1;
- ``random``: uniform without replacement, propensity ``1 / n_eligible`` (the chance any
  given eligible item lands at a given slot).

A user with a profile and no vectors is ranked with the mean vector of similar users, an
unknown user with the mean user (see :mod:`stream.serving.state`); items the model has not
learned are ranked by the vector of their genres. Items the user clicked or rated are not
eligible unless ``exclude_seen`` is False. Every draw comes from one generator seeded by
``ServingConfig.seed``, so the same sequence of requests over the same state gives the same
slates.

>>> from stream.config import ServingConfig
>>> from stream.serving.records import ItemState, ModelMeta, UserState
>>> state = ServingState()
>>> for i, (vec, bias) in enumerate([((1.0, 0.0), 0.0), ((0.0, 1.0), 0.0), ((0.5, 0.5), 2.0)]):
...     state.apply(ItemState(f"i{i}", implicit_vector=vec, implicit_bias=bias,
...                           interactions=10 - i))
>>> state.apply(UserState("ann", implicit_vector=(3.0, 0.0), seen=("i2",)))
>>> state.apply(ModelMeta(version=3, sequence=1, snapshot=True, published_at=0.0,
...                       consumed=1, global_mean=3.0, rating_min=1.0, rating_max=5.0))
>>> rec = Recommender(state, ServingConfig(exploration=0.0))
>>> r = rec.recommend("ann", k=2, policy="model")
>>> [(x.item_id, x.reason, x.propensity) for x in r.items], r.user_kind, r.model_version
([('i0', 'personalized', 1.0), ('i1', 'personalized', 1.0)], 'warm', 3)
>>> [x.item_id for x in rec.recommend("bob", k=3, policy="popular").items]
['i0', 'i1', 'i2']
>>> rec.recommend("bob", k=1, policy="model").items[0].reason
'cold_start'
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import numpy as np
from river.utils.math import sigmoid as _river_sigmoid

from stream.config import ServingConfig
from stream.events import Context
from stream.models.bundle import _logit
from stream.models.click import EngagementModel
from stream.models.implicit_mf import _sigmoid, top_rows
from stream.serving.state import ServingState, UserKind

__all__ = [
    "POLICIES",
    "MAX_K",
    "NotReady",
    "Policy",
    "Prediction",
    "Reason",
    "Recommendations",
    "Recommended",
    "Recommender",
    "UnknownItem",
    "UserKind",
]

Policy = Literal["model", "explore", "popular", "random"]
POLICIES: tuple[str, ...] = ("model", "explore", "popular", "random")
Reason = Literal["personalized", "cold_start", "exploration", "popular", "random"]
MAX_K = 1000  # a slate longer than this is a bulk export, not a recommendation


class UnknownItem(KeyError):
    """The item is not in the served state."""


class NotReady(RuntimeError):
    """No model state has been applied yet (no meta)."""


@dataclass(frozen=True)
class Recommended:
    item_id: str
    # The implicit model's preference in (0, 1) for the user's query vector (their own, or
    # their segment's / the mean user's for a cold start; genre vectors for new items).
    score: float
    reason: Reason
    position: int  # 0-based slot
    propensity: float  # probability that this policy put this item at this position


@dataclass(frozen=True)
class Recommendations:
    user_id: str
    user_kind: UserKind  # warm: has vectors; cold_start: profile only; unknown: neither
    policy: Policy
    items: list[Recommended]
    model_version: int
    state_age_seconds: float
    request_id: str  # unique per answer; events about this slate may quote it


@dataclass(frozen=True)
class Prediction:
    user_id: str
    item_id: str
    rating: float  # on the rating scale (clipped)
    click_probability: float
    model_version: int
    state_age_seconds: float


class Recommender:
    """Policies over one serving state.

    ``model``: top-K by the implicit model (ANN candidates, exact re-rank); ``explore``: the
    same with each slot replaced, with probability ``exploration``, by a uniformly random
    eligible item; ``popular``: most positive interactions; ``random``: uniform. A user with
    a profile but no vectors gets a vector predicted from similar users' (cold start); an
    unknown user the mean user. Items the user clicked or rated are excluded by default.
    Draws come from a generator seeded by ``config.seed``.
    """

    def __init__(self, state: ServingState, config: ServingConfig) -> None:
        self.state = state
        self.config = config
        self._rng = np.random.default_rng(config.seed)
        # Rows by popularity, recomputed when a new publication has been applied.
        self._popular: np.ndarray = np.zeros(0, dtype=np.int64)
        self._popular_at = (-1, -1)

    # -- recommendations -------------------------------------------------------------
    def recommend(
        self,
        user_id: str,
        k: int = 10,
        policy: Policy = "explore",
        exclude_seen: bool = True,
        exploration: float | None = None,  # None: config.exploration
        context: Context | None = None,
    ) -> Recommendations:
        """Raise :class:`NotReady` before any state, ValueError on bad k/policy."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
        eps = self.config.exploration if exploration is None else exploration
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"exploration must be in [0, 1], got {eps}")
        state = self.state
        if state.auto_sync and state.index_pending:
            # No follower thread keeps the index current: do it here, unless a sync is running.
            state.sync_index(wait=False)
        with state.lock:
            meta = state.meta
            if meta is None:
                raise NotReady("no model state applied yet")
            kind, query = state.user_query(user_id)
            seen = state.seen_rows(user_id) if exclude_seen else []
            if policy == "popular":
                rows, props, reasons = self._popular_slate(k, seen)
            elif policy == "random":
                rows, props, reasons = self._random_slate(k, seen)
            else:
                rows, props, reasons = self._model_slate(
                    kind, query, k, seen, eps if policy == "explore" else 0.0
                )
            scores = state.logits(np.asarray(rows, dtype=np.int64), query).tolist()
            slate = zip(rows, scores, reasons, props, strict=True)
            items = [
                Recommended(state.item_at(r).item_id, _sigmoid(s), reason, pos, p)
                for pos, (r, s, reason, p) in enumerate(slate)
            ]
            age = state.age_seconds() or 0.0
            return Recommendations(
                user_id, kind, policy, items, meta.version, age, uuid.uuid4().hex
            )

    def _eligible_count(self, seen: list[int]) -> int:
        rankable = self.state.rankable
        n = int(np.count_nonzero(rankable))
        if seen:
            n -= int(np.count_nonzero(rankable[np.unique(seen)]))
        return n

    def _draw(self, excluded: set[int], n_eligible: int) -> int:
        """A uniformly random rankable row not in ``excluded``."""
        rankable = self.state.rankable
        n = len(rankable)
        rng = self._rng
        if n_eligible * 4 >= n:
            # Mostly eligible: rejection sampling is a few draws.
            while True:
                r = int(rng.integers(n))
                if rankable[r] and r not in excluded:
                    return r
        pool = np.flatnonzero(rankable)
        pool = pool[~np.isin(pool, np.fromiter(excluded, dtype=np.int64, count=len(excluded)))]
        return int(pool[rng.integers(len(pool))])

    def _model_slate(
        self, kind: UserKind, query: np.ndarray, k: int, seen: list[int], eps: float
    ) -> tuple[list[int], list[float], list[Reason]]:
        # Exploration can take up to k of the greedy items, so rank 2k when exploring.
        ranked = self._ranked(query, 2 * k if eps > 0 else k, seen)
        state = self.state
        personal: Reason = "personalized" if kind == "warm" else "cold_start"
        learned = state.learned
        if eps == 0.0:
            reasons: list[Reason] = [personal if learned[r] else "cold_start" for r in ranked]
            return ranked, [1.0] * len(ranked), reasons
        n_eligible = self._eligible_count(seen)
        k = min(k, n_eligible)
        excluded = set(seen)
        rows: list[int] = []
        props: list[float] = []
        reasons = []
        greedy = iter(ranked)
        explore_p = eps / max(n_eligible, 1)
        rng = self._rng
        for _ in range(k):
            choice = next((r for r in greedy if r not in excluded), None)
            if choice is None:
                break
            if rng.random() < eps:
                r = self._draw(excluded, n_eligible)
                # The greedy choice stays available for the next slot.
                greedy = iter([choice, *greedy]) if r != choice else greedy
                rows.append(r)
                props.append(explore_p + ((1.0 - eps) if r == choice else 0.0))
                reasons.append("exploration")
            else:
                rows.append(choice)
                props.append(1.0 - eps + explore_p)
                reasons.append(personal if learned[choice] else "cold_start")
            excluded.add(rows[-1])
        return rows, props, reasons

    def _popular_slate(
        self, k: int, seen: list[int]
    ) -> tuple[list[int], list[float], list[Reason]]:
        state = self.state
        key = (state.metas_applied, state.n_items)
        if key != self._popular_at:
            n = state.n_items
            self._popular = np.lexsort((np.arange(n), -state.popularity))
            self._popular_at = key
        rankable, skip = state.rankable, set(seen)
        rows: list[int] = []
        # Walk the ranking in slices: converting all of it per request would cost more.
        step = k + len(skip) + 16
        for start in range(0, len(self._popular), step):
            for r in self._popular[start : start + step].tolist():
                if rankable[r] and r not in skip:
                    rows.append(r)
                    if len(rows) == k:
                        return rows, [1.0] * k, ["popular"] * k
        return rows, [1.0] * len(rows), ["popular"] * len(rows)

    def _random_slate(self, k: int, seen: list[int]) -> tuple[list[int], list[float], list[Reason]]:
        n_eligible = self._eligible_count(seen)
        excluded = set(seen)
        rows: list[int] = []
        for _ in range(min(k, n_eligible)):
            rows.append(self._draw(excluded, n_eligible))
            excluded.add(rows[-1])
        p = 1.0 / max(n_eligible, 1)
        return rows, [p] * len(rows), ["random"] * len(rows)

    def _ranked(self, query: np.ndarray, k: int, seen: list[int]) -> list[int]:
        """The ``k`` best eligible rows, best first (ties: earlier row first)."""
        state = self.state
        n = state.n_items
        rankable = state.rankable
        want = max(self.config.candidates, k + len(seen))
        if want * 2 < n:
            try:
                cand = state.ann_candidates(query, want)
            except RuntimeError:  # the graph could not return that many: scan instead
                cand = None
            if cand is not None:
                cand = cand[(cand < n)]
                cand = cand[rankable[cand]]
                if seen:
                    cand = cand[~np.isin(cand, seen)]
                if len(cand) >= k:
                    logits = state.logits(cand, query)
                    order = np.lexsort((cand, -logits))[:k]
                    return cand[order].tolist()
        return self._exact(query, k, seen)

    def _exact(self, query: np.ndarray, k: int, seen: list[int]) -> list[int]:
        state = self.state
        logits = state.logits(None, query)
        logits[~state.rankable] = -np.inf
        if seen:
            logits[seen] = -np.inf
        return top_rows(logits, k).tolist()

    def exact_top_k(self, user_id: str, k: int, exclude_seen: bool = True) -> list[str]:
        """Top-K by brute force over every item (to measure the ANN's recall)."""
        state = self.state
        with state.lock:
            _, query = state.user_query(user_id)
            seen = state.seen_rows(user_id) if exclude_seen else []
            return [state.item_at(r).item_id for r in self._exact(query, k, seen)]

    # -- point predictions -----------------------------------------------------------
    def predict(self, user_id: str, item_id: str, context: Context | None = None) -> Prediction:
        """Raise :class:`UnknownItem` for an item not in the state, :class:`NotReady`.

        The rating is the rating model's ``global_mean + b_u + b_i + p_u . q_i`` (parts the
        model does not have count as zero, as :meth:`OnlineMF.predict` does) clipped to the
        scale; the click probability is the click model over the same features the consumer
        gives it, with the implicit score stacked as ``cf_logit``.
        """
        state = self.state
        with state.lock:
            meta = state.meta
            if meta is None:
                raise NotReady("no model state applied yet")
            item = state.item(item_id)
            if item is None:
                raise UnknownItem(item_id)
            user = state.user(user_id)
            # Same summation order as OnlineMF.predict, so the float is the same.
            y = meta.global_mean
            if user is not None and user.rating_bias is not None:
                y += user.rating_bias
            if item.rating_bias is not None:
                y += item.rating_bias
                if user is not None and user.rating_vector and item.rating_vector:
                    y += float(np.array(user.rating_vector).dot(np.array(item.rating_vector)))
            rating = min(max(y, meta.rating_min), meta.rating_max)

            # The implicit score as ImplicitMF.score computes it (0.5 for an unlearned item).
            cf = 0.5
            if item.implicit_vector is not None:
                x = item.implicit_bias or 0.0
                if user is not None and user.implicit_vector is not None:
                    x += float(np.array(user.implicit_vector).dot(np.array(item.implicit_vector)))
                cf = _sigmoid(x)
            features = EngagementModel.features(
                user.profile if user is not None else None, item.profile, context
            )
            features["cf_logit"] = _logit(cf)
            weights = state.engagement.weights
            z = sum(weights.get(f, 0.0) * v for f, v in features.items())
            p = float(_river_sigmoid(z + state.engagement.intercept))
            return Prediction(
                user_id, item_id, float(rating), p, meta.version, state.age_seconds() or 0.0
            )
