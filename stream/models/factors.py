"""What the factorization models share: factor tables, the pair lookup and the SGD step.

A :class:`FactorTable` holds a factor vector and a bias per id in rows (dict id -> row, numpy
arrays grown by doubling), so a step costs a couple of dict lookups and a handful of small
numpy ops. :class:`FactorModel` is the base of :class:`~stream.models.rating_mf.OnlineMF` and
:class:`~stream.models.implicit_mf.ImplicitMF`; :func:`step_pair` is their common factor
update (compiled in :mod:`stream.models.kernels`).

Initial vectors come from chunks of rows drawn by ``numpy.random.default_rng((seed,
stream, chunk))``: the start vector of the n-th id added depends only on the seed and n,
so replaying the same stream rebuilds the same model bit for bit. A *keyed* table (the item
tables) draws each id's start vector from the id itself, ``default_rng((seed, stream,
id_key(id)))``, so every learner that adds the id starts it from the same vector whatever
order it met the ids in (what lets learners of several partitions share one item model by
exchanging deltas, :mod:`stream.learner.item_sync`). Removing ids
(:meth:`FactorTable.remove`: a forgotten or evicted user) compacts the rows; the ids added
after it start from the draws that follow the last one used, so a replay of the same stream
with the same removals still rebuilds the same model.

>>> import numpy as np
>>> p, q = np.array([1.0, 0.0]), np.array([0.0, 2.0])
>>> step_pair(p, q, step=0.5, decay=0.9)
>>> p.tolist(), q.tolist()  # q moved with the old p, not the updated one
([0.9, 1.0], [0.5, 1.8])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from hashlib import blake2b
from typing import Any

import numpy as np

from stream.models.cold_start import Priors, item_keys, user_keys

__all__ = ["CHUNK", "FactorModel", "FactorTable", "id_key", "step_pair"]

# user_keys or item_keys: the cold-start keys of a profile.
KeysOf = Callable[[Mapping[str, Any] | None], tuple[str, ...]]

CHUNK = 1024
"""Rows of initial vectors drawn at once (and the initial capacity of a table)."""


def id_key(id_: str) -> int:
    """A stable 64-bit key of an id (blake2b, not ``hash()``, which is salted per process).

    >>> id_key("i1") == id_key("i1"), id_key("i1") == id_key("i2"), id_key("") < 2**64
    (True, False, True)
    """
    return int.from_bytes(blake2b(id_.encode(), digest_size=8).digest(), "little")


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
    >>> t.remove(["a", "zzz"]).tolist(), t.ids, t.index  # old row -> new row (-1: removed)
    ([-1, 0], ['b'], {'b': 0})
    """

    # Rows removed so far (class default: tables pickled before removals existed had none).
    # The start vector of a new row is draw number ``row + removed``.
    removed: int = 0
    # Start vectors drawn from the id (class default: tables pickled before were not keyed).
    keyed: bool = False
    # Rows started since the last drain, with their start (bias, vector), while an item
    # sync listens (None: nobody does, nothing is recorded).
    started: list[tuple[int, float, np.ndarray]] | None = None

    def __init__(
        self, factors: int, init_scale: float, seed: int, stream: int, keyed: bool = False
    ) -> None:
        self.keyed = keyed
        self.factors = factors
        self.init_scale = init_scale
        self.seed = seed
        self.stream = stream
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.vectors: np.ndarray = np.zeros((CHUNK, factors))
        self.biases: np.ndarray = np.zeros(CHUNK)
        # Updates per row, for cold start (warm rows are the ones with a few); a list
        # because a list increment is the cheapest per-event write.
        self.counts: list[int] = []

    @property
    def n(self) -> int:
        return len(self.ids)

    def add(self, id_: str, start: np.ndarray | None = None) -> int:
        """Append a new id and return its row (the caller checked it is not known); its
        vector is ``start`` when given (a start another process drew), else a fresh draw."""
        row = len(self.ids)
        if row == len(self.biases):
            self._grow(2 * row)
        if self.keyed:
            if start is None:  # a keyed draw seeds a generator: skip it when overwritten
                self.vectors[row] = self.keyed_draw(id_)
        elif row % CHUNK == 0:
            # Fill the whole chunk now so later adds are just a dict insert.
            self.vectors[row : row + CHUNK] = self._draws(row + self.removed, CHUNK)
        if start is not None:
            self.vectors[row] = start
        self.index[id_] = row
        self.ids.append(id_)
        self.counts.append(0)
        return row

    def keyed_draw(self, id_: str) -> np.ndarray:
        """The start vector a keyed table gives ``id_`` (the same in every process)."""
        rng = np.random.default_rng((self.seed, self.stream, id_key(id_)))
        return rng.normal(0.0, self.init_scale, size=self.factors)

    def _chunk(self, number: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, self.stream, number))
        return rng.normal(0.0, self.init_scale, size=(CHUNK, self.factors))

    def _draws(self, first: int, count: int) -> np.ndarray:
        """Start vectors number ``first`` .. ``first + count - 1`` (chunk-aligned without
        removals: one chunk, drawn exactly as before removals existed)."""
        if first % CHUNK == 0 and count == CHUNK:
            return self._chunk(first // CHUNK)
        chunks = range(first // CHUNK, (first + count - 1) // CHUNK + 1)
        drawn = np.concatenate([self._chunk(c) for c in chunks])
        start = first - chunks[0] * CHUNK
        return drawn[start : start + count]

    def remove(self, ids: Iterable[str]) -> np.ndarray | None:
        """Remove these ids' rows (unknown ids are ignored), keeping the others in order.

        Returns the old row -> new row map (-1 for a removed row) for whoever keeps rows
        (cold-start priors), or None when no id was known. Costs one pass over the rows:
        callers remove in batches. The freed rows are cleared (no vector of a removed id is
        left in memory) and refilled with the next start vectors.
        """
        rows = sorted({r for r in map(self.index.get, ids) if r is not None})
        if not rows:
            return None
        n = len(self.ids)
        keep = np.ones(n, dtype=bool)
        keep[rows] = False
        m = n - len(rows)
        self.vectors[:m] = self.vectors[:n][keep]
        self.biases[:m] = self.biases[:n][keep]
        kept = keep.tolist()
        first = rows[0]
        for id_ in self.ids[first:]:
            del self.index[id_]
        tail = kept[first:]
        self.ids = self.ids[:first] + [i for i, k in zip(self.ids[first:], tail, strict=True) if k]
        self.counts = self.counts[:first] + [
            c for c, k in zip(self.counts[first:], tail, strict=True) if k
        ]
        for row in range(first, m):
            self.index[self.ids[row]] = row
        self.removed += len(rows)
        # New rows start with a zero bias and the next draws, as add() expects.
        self.vectors[m:n] = 0.0
        self.biases[m:n] = 0.0
        if m % CHUNK:
            end = m - m % CHUNK + CHUNK
            self.vectors[m:end] = self._draws(m + self.removed, end - m)
        new_rows = np.cumsum(keep) - 1
        new_rows[~keep] = -1
        return new_rows

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
            (self.factors, self.init_scale, self.seed, self.stream, self.removed, self.keyed)
            == (
                other.factors,
                other.init_scale,
                other.seed,
                other.stream,
                other.removed,
                other.keyed,
            )
            and self.ids == other.ids
            and self.counts == other.counts
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
        if "counts" not in state:  # pickled before rows counted their updates
            self.counts = [0] * n
        self.index = {id_: row for row, id_ in enumerate(self.ids)}
        capacity = CHUNK
        while capacity < n:
            capacity *= 2
        self.vectors = np.zeros((capacity, self.factors))
        self.biases = np.zeros(capacity)
        self.vectors[:n] = used_vectors
        self.biases[:n] = used_biases
        if n % CHUNK:
            end = n - n % CHUNK + CHUNK
            self.vectors[n:end] = self._draws(n + self.removed, end - n)


class FactorModel:
    """What the factorization models share: a user and an item :class:`FactorTable`
    (``_users``, ``_items``), optional cold-start priors for each (``_user_priors``,
    ``_item_priors``, see :mod:`stream.models.cold_start`) and equality by state
    (``state_equal``)."""

    _users: FactorTable
    _items: FactorTable
    # Class-level defaults: models pickled before cold start existed load with it off.
    _user_priors: Priors | None = None
    _item_priors: Priors | None = None

    @property
    def n_users(self) -> int:
        return len(self._users.ids)

    @property
    def n_items(self) -> int:
        return len(self._items.ids)

    @property
    def cold_start(self) -> bool:
        return self._user_priors is not None

    def has_user(self, user_id: str) -> bool:
        return user_id in self._users.index

    def has_item(self, item_id: str) -> bool:
        return item_id in self._items.index

    def remove_users(self, user_ids: Iterable[str]) -> int:
        """Drop these users' rows (and their cold-start memberships); how many were known.
        A removed user who comes back is a new user (a cold start)."""
        new_rows = self._users.remove(user_ids)
        if new_rows is None:
            return 0
        if self._user_priors is not None:
            self._user_priors.renumber(new_rows)
        return int(np.count_nonzero(new_rows < 0))

    def recompute_priors(self) -> None:
        """Recompute the user cold-start means from the rows left (after a forget: the
        means then owe nothing to the forgotten user); the refresh schedule is unchanged."""
        if self._user_priors is not None:
            self._user_priors.recompute(self._users)

    def _init_cold_start(
        self, enabled: bool, min_updates: int, refresh_every: int, shrinkage: float
    ) -> None:
        if enabled:
            self._user_priors = Priors(min_updates, refresh_every, shrinkage)
            self._item_priors = Priors(min_updates, refresh_every, shrinkage)

    def _rows(
        self,
        user_id: str,
        item_id: str,
        user_profile: Mapping[str, Any] | None = None,
        item_profile: Mapping[str, Any] | None = None,
    ) -> tuple[int, int, bool]:
        """Rows of the pair, added if new, and whether both have informed vectors.

        A row is informed when it was known before or, with cold start and a profile,
        started from the prior of its profile (as prediction with that profile would have
        used it). A pair with an uninformed row is reported as prediction without profiles
        saw it (zero factors), but learns from its drawn start vectors.
        """
        users, items = self._users, self._items
        u = users.index.get(user_id)
        i = items.index.get(item_id)
        informed = True
        if u is None:
            u = users.add(user_id)
            informed = self._start_row(users, self._user_priors, u, user_keys, user_profile)
        if i is None:
            i = items.add(item_id)
            informed = (
                self._start_row(items, self._item_priors, i, item_keys, item_profile) and informed
            )
            if items.started is not None:  # an item sync needs the start of each new row
                items.started.append((i, items.biases.item(i), items.vectors[i].copy()))
        return u, i, informed

    @staticmethod
    def _start_row(
        table: FactorTable,
        priors: Priors | None,
        row: int,
        keys_of: KeysOf,
        profile: Mapping[str, Any] | None,
    ) -> bool:
        """Give a new row the cold-start prior of its profile; whether it had one. Without a
        profile it keeps its drawn start vector, as before cold start existed."""
        if priors is None or profile is None:
            return False
        keys = keys_of(profile)
        priors.add_row(row, keys)
        prior = priors.prior(keys)
        if prior is None:
            return False
        table.biases[row], table.vectors[row] = prior
        return True

    @staticmethod
    def _lookup(
        table: FactorTable,
        priors: Priors | None,
        id_: str,
        keys_of: KeysOf,
        profile: Mapping[str, Any] | None,
    ) -> tuple[float, np.ndarray] | None:
        """(bias, vector) of a known id; for an unknown one, with cold start and a profile,
        the prior of the profile; else None (zero bias and factors). Reads only: never adds
        a row, and an unknown id without a profile predicts exactly as serving does."""
        row = table.index.get(id_)
        if row is not None:
            return table.biases.item(row), table.vectors[row]
        if priors is None or profile is None:
            return None
        return priors.prior(keys_of(profile))

    def _refresh_priors(self, updates: int) -> None:
        """Recompute the cold-start means after the model's ``updates``-th update (the
        models call this when ``updates`` reaches ``_user_priors.next_refresh``)."""
        up, ip = self._user_priors, self._item_priors
        assert up is not None and ip is not None  # both or neither
        up.refresh(self._users, updates)
        ip.refresh(self._items, updates)

    def _priors_equal(self, other: FactorModel) -> bool:
        pairs = (
            (self._user_priors, other._user_priors),
            (self._item_priors, other._item_priors),
        )
        for mine, theirs in pairs:
            if mine is None or theirs is None:
                if mine is not theirs:
                    return False
            elif not mine.state_equal(theirs):
                return False
        return True

    def state_equal(self, other: object) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return self.state_equal(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by state


def step_pair(pu: np.ndarray, qi: np.ndarray, step: float, decay: float) -> None:
    """One SGD step of a user and an item vector, in place (``pu``, ``qi`` are row views).

    ``p += lr (g q - reg p)`` written as ``p = decay p + step q`` with ``decay = 1 - lr reg``
    and ``step = lr g``; ``q`` moves with the old ``p``. The models' compiled steps
    (:mod:`stream.models.kernels`) do exactly these operations in this order; this is their
    reference (and the step of any caller without a row index).
    """
    pu_old = pu.copy()
    pu *= decay
    pu += step * qi
    qi *= decay
    qi += step * pu_old
