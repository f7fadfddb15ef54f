"""Incremental biased matrix factorization for explicit ratings.

:class:`OnlineMF` is Funk-SVD / BiasedMF learned one rating at a time: the prediction is
``global_mean + b_u + b_i + p_u . q_i`` and every rating makes one SGD step with L2. Users
and items live in :class:`~stream.models.factors.FactorTable` rows, whose seeded start
vectors make a replay of the same stream rebuild the same model bit for bit.

>>> model = OnlineMF(factors=4, seed=1)
>>> model.predict("alice", "matrix")  # nothing learned yet
0.0
>>> for _ in range(50):
...     _ = model.update("alice", "matrix", 5.0)
...     _ = model.update("bob", "matrix", 1.0)
>>> model.predict("alice", "matrix") > model.predict("bob", "matrix")
True
>>> model.n_users, model.n_items
(2, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream.config import ModelConfig
from stream.models.cold_start import item_keys, user_keys
from stream.models.factors import CHUNK, FactorModel, FactorTable
from stream.models.kernels import rating_step, vdot

# CHUNK, FactorModel and FactorTable stay importable from here: checkpoints pickled before
# they moved to stream.models.factors name them by this module.
__all__ = ["CHUNK", "FactorModel", "FactorTable", "OnlineMF"]


class OnlineMF(FactorModel):
    """Biased matrix factorization learned online by SGD, one rating at a time.

    Parameters
    ----------
    factors
        Length of the user and item vectors.
    learning_rate
        SGD step size of the factor vectors.
    regularization
        L2 penalty on biases and factors.
    bias_learning_rate
        SGD step size of the user and item biases.
    init_scale
        Standard deviation of the initial (normal) factor values.
    seed
        Seed of the initial vectors (non-negative).
    rating_min, rating_max
        Optional bounds the returned predictions are clipped to; learning always uses the
        raw prediction.

    >>> m = OnlineMF(factors=2, seed=3)
    >>> m.update("u", "i", 4.0)  # predicted before learning, as predict() would have
    0.0
    >>> m.global_mean
    4.0
    >>> m2 = OnlineMF(factors=2, seed=3)
    >>> _ = m2.update("u", "i", 4.0)
    >>> m == m2
    True
    """

    def __init__(
        self,
        factors: int = 16,
        learning_rate: float = 0.02,
        regularization: float = 0.02,
        bias_learning_rate: float = 0.02,
        init_scale: float = 0.1,
        seed: int = 42,
        rating_min: float | None = None,
        rating_max: float | None = None,
        cold_start: bool = False,
        cold_start_min_updates: int = 3,
        cold_start_refresh_every: int = 200,
        cold_start_shrinkage: float = 20.0,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.bias_learning_rate = bias_learning_rate
        self.init_scale = init_scale
        self.seed = seed
        self.rating_min = rating_min
        self.rating_max = rating_max
        self.global_mean = 0.0
        self.n_ratings = 0
        self._users = FactorTable(factors, init_scale, seed, stream=0)
        self._items = FactorTable(factors, init_scale, seed, stream=1, keyed=True)
        self._init_cold_start(
            cold_start, cold_start_min_updates, cold_start_refresh_every, cold_start_shrinkage
        )

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        *,
        rating_min: float | None = None,
        rating_max: float | None = None,
    ) -> OnlineMF:
        return cls(
            factors=cfg.factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            bias_learning_rate=cfg.bias_learning_rate,
            init_scale=cfg.init_scale,
            seed=cfg.seed,
            rating_min=rating_min,
            rating_max=rating_max,
            cold_start=cfg.cold_start,
            cold_start_min_updates=cfg.cold_start_min_updates,
            cold_start_refresh_every=cfg.cold_start_refresh_every,
            cold_start_shrinkage=cfg.cold_start_shrinkage,
        )

    def _clip(self, y: float) -> float:
        if self.rating_min is not None and y < self.rating_min:
            return self.rating_min
        if self.rating_max is not None and y > self.rating_max:
            return self.rating_max
        return y

    def predict(
        self,
        user_id: str,
        item_id: str,
        *,
        user_profile: Mapping[str, Any] | None = None,
        item_profile: Mapping[str, Any] | None = None,
    ) -> float:
        """Predicted rating (no state added). An unknown id counts as zero bias and zero
        factors, or, with cold start and a profile, as the prior its profile gives it."""
        user = self._lookup(self._users, self._user_priors, user_id, user_keys, user_profile)
        item = self._lookup(self._items, self._item_priors, item_id, item_keys, item_profile)
        y = self.global_mean
        if user is not None:
            y += user[0]
        if item is not None:
            y += item[0]
            if user is not None:
                y += vdot(user[1], item[1])
        return self._clip(y)

    def update(
        self,
        user_id: str,
        item_id: str,
        rating: float,
        *,
        user_profile: Mapping[str, Any] | None = None,
        item_profile: Mapping[str, Any] | None = None,
    ) -> float:
        """Return the prediction made before learning (what :meth:`predict` with the same
        profiles returns), then learn ``rating`` (one SGD step). The profiles matter only
        with cold start, for an id the model has not seen yet."""
        users, items = self._users, self._items
        u, i, informed = self._rows(user_id, item_id, user_profile, item_profile)
        n = self.n_ratings = self.n_ratings + 1
        # The error is taken against the updated mean (as River's BiasedMF does), so the
        # biases learn residuals and do not soak up the early drift of the mean.
        predicted, self.global_mean = rating_step(
            users.vectors,
            items.vectors,
            users.biases,
            items.biases,
            u,
            i,
            float(rating),  # one compiled signature, whatever the caller passes
            self.global_mean,
            n,
            informed,
            self.learning_rate,
            self.bias_learning_rate,
            self.regularization,
        )
        users.counts[u] += 1
        items.counts[i] += 1
        up = self._user_priors
        if up is not None and n >= up.next_refresh:
            self._refresh_priors(n)
        return self._clip(predicted)

    def state_equal(self, other: object) -> bool:
        """Bit-identical settings, ids, biases, factors and global mean."""
        if not isinstance(other, OnlineMF):
            return False
        return (
            self._settings() == other._settings()
            and self.global_mean == other.global_mean
            and self.n_ratings == other.n_ratings
            and self._users.state_equal(other._users)
            and self._items.state_equal(other._items)
            and self._priors_equal(other)
        )

    def _settings(self) -> tuple[Any, ...]:
        return (
            self.factors,
            self.learning_rate,
            self.regularization,
            self.bias_learning_rate,
            self.init_scale,
            self.seed,
            self.rating_min,
            self.rating_max,
        )

    def __repr__(self) -> str:
        return (
            f"OnlineMF(factors={self.factors}, n_users={self.n_users}, "
            f"n_items={self.n_items}, n_ratings={self.n_ratings})"
        )
