"""Incremental biased matrix factorization for explicit ratings.

:class:`OnlineMF` is Funk-SVD / BiasedMF learned one rating at a time: the prediction is
``global_mean + b_u + b_i + p_u . q_i`` and every rating makes one SGD step with L2. Users
and items live in :class:`FactorTable` rows (dict id -> row, numpy arrays grown by
doubling), so a step costs a couple of dict lookups and a handful of small numpy ops.

Initial vectors come from chunks of rows drawn by ``numpy.random.default_rng((seed,
stream, chunk))``: the start vector of the n-th id added depends only on the seed and n,
so replaying the same stream rebuilds the same model bit for bit.

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

from typing import Any

import numpy as np

from stream.config import ModelConfig

__all__ = ["CHUNK", "FactorModel", "FactorTable", "OnlineMF"]

CHUNK = 1024
"""Rows of initial vectors drawn at once (and the initial capacity of a table)."""


class FactorTable:
    """Factor vectors and a bias per id, stored in rows in the order ids were added.

    Hot paths read ``index``, ``vectors`` and ``biases`` directly (no method call per
    lookup); only :meth:`add` grows the table. ``vectors`` and ``biases`` are replaced when
    capacity doubles, so never keep a reference across an :meth:`add`.

    >>> t = FactorTable(factors=3, init_scale=0.1, seed=7, stream=0)
    >>> t.add("a"), t.add("b"), t.index.get("a"), t.index.get("zzz")
    (0, 1, 0, None)
    >>> t.vectors.shape[1], t.n
    (3, 2)
    """

    def __init__(self, factors: int, init_scale: float, seed: int, stream: int) -> None:
        self.factors = factors
        self.init_scale = init_scale
        self.seed = seed
        self.stream = stream
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.vectors: np.ndarray = np.zeros((CHUNK, factors))
        self.biases: np.ndarray = np.zeros(CHUNK)

    @property
    def n(self) -> int:
        return len(self.ids)

    def add(self, id_: str) -> int:
        """Append a new id and return its row (the caller checked it is not known)."""
        row = len(self.ids)
        if row == len(self.biases):
            self._grow(2 * row)
        if row % CHUNK == 0:
            # Fill the whole chunk now so later adds are just a dict insert.
            self.vectors[row : row + CHUNK] = self._chunk(row // CHUNK)
        self.index[id_] = row
        self.ids.append(id_)
        return row

    def _chunk(self, number: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.stream, number))
        return rng.normal(0.0, self.init_scale, size=(CHUNK, self.factors))

    def _grow(self, capacity: int) -> None:
        n = len(self.ids)
        vectors = np.zeros((capacity, self.factors))
        vectors[:n] = self.vectors[:n]
        biases = np.zeros(capacity)
        biases[:n] = self.biases[:n]
        self.vectors, self.biases = vectors, biases

    def state_equal(self, other: FactorTable) -> bool:
        """Same settings, same ids in the same order and bit-identical rows."""
        n = len(self.ids)
        return (
            (self.factors, self.init_scale, self.seed, self.stream)
            == (other.factors, other.init_scale, other.seed, other.stream)
            and self.ids == other.ids
            and np.array_equal(self.vectors[:n], other.vectors[:n])
            and np.array_equal(self.biases[:n], other.biases[:n])
        )

    # Pickle only the used rows; the unused rest of the current chunk is redrawn on load.
    def __getstate__(self) -> dict[str, Any]:
        n = len(self.ids)
        state = self.__dict__.copy()
        del state["index"]
        state["vectors"] = self.vectors[:n].copy()
        state["biases"] = self.biases[:n].copy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        used_vectors, used_biases = state.pop("vectors"), state.pop("biases")
        self.__dict__.update(state)
        n = len(self.ids)
        self.index = {id_: row for row, id_ in enumerate(self.ids)}
        capacity = CHUNK
        while capacity < n:
            capacity *= 2
        self.vectors = np.zeros((capacity, self.factors))
        self.biases = np.zeros(capacity)
        self.vectors[:n] = used_vectors
        self.biases[:n] = used_biases
        if n % CHUNK:
            start = n - n % CHUNK
            self.vectors[n : start + CHUNK] = self._chunk(start // CHUNK)[n % CHUNK :]


class FactorModel:
    """What the factorization models share: a user and an item :class:`FactorTable`
    (``_users``, ``_items``) and equality by state (``state_equal``)."""

    _users: FactorTable
    _items: FactorTable

    @property
    def n_users(self) -> int:
        return len(self._users.ids)

    @property
    def n_items(self) -> int:
        return len(self._items.ids)

    def has_user(self, user_id: str) -> bool:
        return user_id in self._users.index

    def has_item(self, item_id: str) -> bool:
        return item_id in self._items.index

    def _rows(self, user_id: str, item_id: str) -> tuple[int, int, bool]:
        """Rows of the pair, added if new, and whether both were known before.

        A pair with a new id is reported as prediction saw it (zero factors), but learns
        from its drawn start vectors.
        """
        users, items = self._users, self._items
        u = users.index.get(user_id)
        i = items.index.get(item_id)
        known = u is not None and i is not None
        if u is None:
            u = users.add(user_id)
        if i is None:
            i = items.add(item_id)
        return u, i, known

    def state_equal(self, other: object) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return self.state_equal(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by state


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
        self._items = FactorTable(factors, init_scale, seed, stream=1)

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
        )

    def _clip(self, y: float) -> float:
        if self.rating_min is not None and y < self.rating_min:
            return self.rating_min
        if self.rating_max is not None and y > self.rating_max:
            return self.rating_max
        return y

    def predict(self, user_id: str, item_id: str) -> float:
        """Predicted rating; unknown ids count as zero bias and zero factors (no state added)."""
        users, items = self._users, self._items
        u = users.index.get(user_id)
        i = items.index.get(item_id)
        y = self.global_mean
        if u is not None:
            y += users.biases.item(u)
        if i is not None:
            y += items.biases.item(i)
            if u is not None:
                y += float(users.vectors[u].dot(items.vectors[i]))
        return self._clip(y)

    def update(self, user_id: str, item_id: str, rating: float) -> float:
        """Return the prediction made before learning, then learn ``rating`` (one SGD step)."""
        users, items = self._users, self._items
        u, i, known = self._rows(user_id, item_id)
        pu = users.vectors[u]  # views: the in-place ops below write the model
        qi = items.vectors[i]
        bu_arr, bi_arr = users.biases, items.biases
        bu = bu_arr.item(u)
        bi = bi_arr.item(i)
        dot = float(pu.dot(qi))
        old_mean = self.global_mean
        predicted = old_mean + bu + bi  # same summation order as predict(): same float
        if known:
            predicted += dot
        personal = bu + bi + dot

        self.n_ratings += 1
        mean = old_mean + (rating - old_mean) / self.n_ratings
        self.global_mean = mean
        # The error is taken against the updated mean (as River's BiasedMF does), so the
        # biases learn residuals and do not soak up the early drift of the mean.
        err = rating - (mean + personal)

        reg = self.regularization
        blr = self.bias_learning_rate
        bu_arr[u] = bu + blr * (err - reg * bu)
        bi_arr[i] = bi + blr * (err - reg * bi)
        # p += lr (err q - reg p) == (1 - lr reg) p + lr err q; q uses the old p.
        lr = self.learning_rate
        step = lr * err
        decay = 1.0 - lr * reg
        pu_old = pu.copy()
        pu *= decay
        pu += step * qi
        qi *= decay
        qi += step * pu_old
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
