"""Matrix factorization for implicit feedback (clicks, dwell, impressions).

:class:`ImplicitMF` scores a (user, item) pair as ``sigmoid(b_i + p_u . q_i)``, a
probability-like preference, and learns by weighted logistic-loss SGD: positives (clicks,
dwell) have target 1, impressions without a click target 0, and ``weight`` carries the
confidence (long dwell, low weight for negatives). Ranking all known items is one
matrix-vector product over the item table.

Storage and seeding are those of :class:`stream.models.factors.FactorTable`, so replays are
bit-identical and scoring never adds users or items.

>>> model = ImplicitMF(factors=4, seed=0)
>>> for _ in range(200):
...     _ = model.update("ann", "jazz", 1.0)
...     _ = model.update("ann", "metal", 0.0)
...     _ = model.update("bob", "metal", 1.0)
...     _ = model.update("bob", "jazz", 0.0)
>>> model.top_k("ann", 1), model.top_k("bob", 1)
(['jazz'], ['metal'])
>>> model.hit_at_k("ann", "jazz", 1), model.hit_at_k("ann", "unknown", 1)
(True, None)
>>> model.n_users, model.n_items
(2, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from math import exp
from typing import Any

import numpy as np

from stream.config import ModelConfig
from stream.models.cold_start import item_keys, user_keys
from stream.models.factors import FactorModel, FactorTable
from stream.models.kernels import count_above, implicit_step, item_logits, vdot

__all__ = ["ImplicitMF", "top_rows"]


def _sigmoid(x: float) -> float:
    # Two branches so exp never overflows.
    if x >= 0.0:
        return 1.0 / (1.0 + exp(-x))
    z = exp(x)
    return z / (1.0 + z)


def top_rows(logits: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` highest logits, best first (ties: lower row first); rows at
    ``-inf`` are excluded. ``logits`` is not changed.

    >>> top_rows(np.array([0.5, 2.0, -np.inf, 2.0]), 5).tolist()
    [1, 3, 0]
    """
    k = min(k, int(np.count_nonzero(logits > -np.inf)))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    n = len(logits)
    if k < n:
        # Everything at least as good as the k-th best (so boundary ties are all kept).
        kth = np.partition(logits, n - k)[n - k]
        rows = np.flatnonzero(logits >= kth)
    else:
        rows = np.arange(n)
    order = np.lexsort((rows, -logits[rows]))[:k]
    return rows[order]


class ImplicitMF(FactorModel):
    """Logistic matrix factorization learned online from weighted implicit feedback.

    Parameters
    ----------
    factors
        Length of the user and item vectors.
    learning_rate
        SGD step size (factors and item biases).
    regularization
        L2 penalty on item biases and factors.
    init_scale
        Standard deviation of the initial (normal) factor values.
    seed
        Seed of the initial vectors (non-negative).

    >>> m = ImplicitMF(factors=2)
    >>> m.score("u", "i")  # unknown: zero bias and factors
    0.5
    >>> m.update("u", "i", 1.0)  # score before learning, as score() would have
    0.5
    >>> m.score("u", "i") > 0.5
    True
    """

    def __init__(
        self,
        factors: int = 16,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        init_scale: float = 0.1,
        seed: int = 42,
        cold_start: bool = False,
        cold_start_min_updates: int = 3,
        cold_start_refresh_every: int = 200,
        cold_start_shrinkage: float = 20.0,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.init_scale = init_scale
        self.seed = seed
        self.n_updates = 0
        # Streams 2 and 3 keep these start vectors apart from OnlineMF's (streams 0, 1).
        self._users = FactorTable(factors, init_scale, seed, stream=2)
        self._items = FactorTable(factors, init_scale, seed, stream=3, keyed=True)
        self._init_cold_start(
            cold_start, cold_start_min_updates, cold_start_refresh_every, cold_start_shrinkage
        )

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ImplicitMF:
        return cls(
            factors=cfg.implicit_factors,
            learning_rate=cfg.implicit_learning_rate,
            regularization=cfg.implicit_regularization,
            init_scale=cfg.init_scale,
            seed=cfg.seed,
            cold_start=cfg.cold_start,
            cold_start_min_updates=cfg.cold_start_min_updates,
            cold_start_refresh_every=cfg.cold_start_refresh_every,
            cold_start_shrinkage=cfg.cold_start_shrinkage,
        )

    def score(
        self,
        user_id: str,
        item_id: str,
        *,
        user_profile: Mapping[str, Any] | None = None,
        item_profile: Mapping[str, Any] | None = None,
    ) -> float:
        """Preference in (0, 1), no state added. Unknown ids count as zero bias and factors,
        or, with cold start and a profile, as the prior the profile gives them."""
        item = self._lookup(self._items, self._item_priors, item_id, item_keys, item_profile)
        user = self._lookup(self._users, self._user_priors, user_id, user_keys, user_profile)
        if item is None:
            return 0.5
        x = item[0]
        if user is not None:
            x += vdot(user[1], item[1])
        return _sigmoid(x)

    def update(
        self,
        user_id: str,
        item_id: str,
        target: float,
        weight: float = 1.0,
        *,
        user_profile: Mapping[str, Any] | None = None,
        item_profile: Mapping[str, Any] | None = None,
    ) -> float:
        """Return the score before learning (what :meth:`score` with the same profiles
        returns), then take one weighted logistic-loss SGD step.

        ``target`` is 1.0 for a positive and 0.0 for a negative (values in between work as
        soft labels); ``weight`` scales the loss gradient, not the L2 penalty. The profiles
        matter only with cold start, for an id the model has not seen yet.
        """
        users, items = self._users, self._items
        u = users.index.get(user_id)
        i = items.index.get(item_id)
        if u is None or i is None:  # a new row: _rows adds it (known pairs skip the call)
            u, i, informed = self._rows(user_id, item_id, user_profile, item_profile)
        else:
            informed = True
        bi = 0.0 if informed else items.biases.item(i)  # for an uninformed pair's score
        s = implicit_step(
            users.vectors,
            items.vectors,
            items.biases,
            u,
            i,
            target,
            weight,
            self.learning_rate,
            self.regularization,
        )
        n = self.n_updates = self.n_updates + 1
        users.counts[u] += 1
        items.counts[i] += 1
        up = self._user_priors
        if up is not None and n >= up.next_refresh:
            self._refresh_priors(n)
        return s if informed else _sigmoid(bi)

    def _logits(self, user_id: str) -> np.ndarray:
        """Logits of every known item for a user (a fresh array); item bias if unknown user."""
        users, items = self._users, self._items
        n = len(items.ids)
        u = users.index.get(user_id)
        if u is None:
            # Zero user factors: the item bias alone, a popularity proxy.
            return items.biases[:n].copy()
        return item_logits(items.vectors, items.biases, n, users.vectors[u])

    def top_k(self, user_id: str, k: int, exclude: frozenset[str] | None = None) -> list[str]:
        """The ``k`` known items with the highest score, best first (ties: first learned)."""
        items = self._items
        n = len(items.ids)
        if k <= 0 or n == 0:
            return []
        logits = self._logits(user_id)
        if exclude:
            rows = [r for r in map(items.index.get, exclude) if r is not None]
            logits[rows] = -np.inf
        ids = items.ids
        return [ids[r] for r in top_rows(logits, k).tolist()]

    def hit_at_k(self, user_id: str, item_id: str, k: int) -> bool | None:
        """Whether ``item_id`` is in the user's top ``k`` among all known items.

        Fewer than ``k`` items score strictly higher; ``None`` for an unknown item, which
        could not have been recommended. Call before :meth:`update` for a prequential
        recall@k.
        """
        items = self._items
        j = items.index.get(item_id)
        if j is None:
            return None
        u = self._users.index.get(user_id)
        if u is None or k <= 0:
            logits = self._logits(user_id)
            return int(np.count_nonzero(logits > logits[j])) < k
        # The logits top_k ranks by, compared one by one: no array of them per event.
        n = len(items.ids)
        return count_above(items.vectors, items.biases, n, self._users.vectors[u], j, k) < k

    def state_equal(self, other: object) -> bool:
        """Bit-identical settings, ids, item biases and factors."""
        if not isinstance(other, ImplicitMF):
            return False
        return (
            self._settings() == other._settings()
            and self.n_updates == other.n_updates
            and self._users.state_equal(other._users)
            and self._items.state_equal(other._items)
            and self._priors_equal(other)
        )

    def _settings(self) -> tuple[Any, ...]:
        return (self.factors, self.learning_rate, self.regularization, self.init_scale, self.seed)

    def __repr__(self) -> str:
        return (
            f"ImplicitMF(factors={self.factors}, n_users={self.n_users}, "
            f"n_items={self.n_items}, n_updates={self.n_updates})"
        )
