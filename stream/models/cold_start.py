"""Hybrid cold start: a new id's start row from the warm rows that share its profile keys.

A user's keys are their demographic segments (age band x gender, and occupation), an item's
its genres, named as the click model names its features. :class:`Priors` keeps, beside one
:class:`~stream.models.factors.FactorTable` (which counts each row's updates), the keys of
each row; every so many updates it recomputes, over the *warm* rows (at least
``min_updates`` updates), the mean bias and vector of each key (shrunk towards the mean of
all warm rows) and of all warm rows. A new id with a profile then starts from the mean of
its keys' means (keys without warm rows are skipped), or the mean of all warm rows when none
of its keys has any: a mapping from profile to factors learned from the warm ids, refreshed
lazily so the per-event cost is an update counter per row and one comparison. An id without
a profile keeps its drawn start vector, as with cold start off.

The refresh happens at fixed update counts (never on a clock) and its result is part of the
model's state, so a replay of the same stream rebuilds the same priors bit for bit; reading
a prior (:meth:`Priors.prior`) changes nothing.

>>> import numpy as np
>>> from stream.models.factors import FactorTable
>>> table = FactorTable(factors=2, init_scale=0.1, seed=0, stream=0)
>>> priors = Priors(min_updates=1, refresh_every=1, shrinkage=0.0)
>>> priors.prior(user_keys({"age": 21}))  # no warm row yet: the drawn start vector
>>> for id_, age, bias in (("a", 25, 1.0), ("b", 27, 0.5), ("c", 64, -1.0)):
...     row = table.add(id_)
...     priors.add_row(row, user_keys({"age": age}))
...     table.biases[row] = bias
...     table.counts[row] += 1
>>> priors.refresh(table)
>>> priors.prior(user_keys({"age": 21, "occupation": "poet"}))[0]  # 20s mean; no poets
0.75
>>> round(priors.prior(user_keys({"gender": "F"}))[0], 4)  # no key known: all warm rows
0.1667
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # factors imports this module
    from stream.models.factors import FactorTable

__all__ = ["Priors", "item_keys", "user_keys", "user_segments"]


def _age_band(age: int) -> str:
    if age < 18:
        return "under18"
    if age >= 60:
        return "60+"
    return f"{age // 10 * 10}s"


# The click model's own age bands (stream.models.click imports this table).
AGE_BANDS: tuple[str, ...] = tuple(_age_band(a) for a in range(121))


def user_segments(profile: Mapping[str, Any] | None) -> list[tuple[str, ...]]:
    """The demographic segments of a user profile: (age band, gender) and (occupation,),
    each named by the click model's features; the same as serving's cold start uses.

    >>> user_segments({"age": 34, "gender": "M", "occupation": "writer"})
    [('age=30s', 'gender=M'), ('occ=writer',)]
    >>> user_segments({"gender": "F"}), user_segments(None)
    ([('gender=F',)], [])
    """
    if not profile:
        return []
    age = profile.get("age")
    age_f = "age=" + AGE_BANDS[age] if age is not None and 0 <= age <= 120 else None
    gender = profile.get("gender")
    gender_f = "gender=" + gender if gender else None
    occupation = profile.get("occupation")
    out: list[tuple[str, ...]] = []
    if age_f or gender_f:
        out.append(tuple(f for f in (age_f, gender_f) if f))
    if occupation:
        out.append(("occ=" + occupation,))
    return out


def user_keys(profile: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Cold-start keys of a user: their segments joined into single names.

    >>> user_keys({"age": 34, "gender": "M", "occupation": "writer"})
    ('age=30s|gender=M', 'occ=writer')
    """
    return tuple("|".join(segment) for segment in user_segments(profile))


def item_keys(profile: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Cold-start keys of an item: its genres.

    >>> item_keys({"genres": ("Comedy", "Drama"), "year": 1995}), item_keys(None)
    (('genre=Comedy', 'genre=Drama'), ())
    """
    if not profile:
        return ()
    return tuple("genre=" + g for g in profile.get("genres") or ())


class Priors:
    """Per-key mean bias and vector of the warm rows of one factor table.

    Parameters
    ----------
    min_updates
        Updates a row needs before it counts as warm (and enters the means).
    refresh_every
        Updates between two recomputations of the means; a refresh also waits for as many
        updates as the table has rows, so its amortized cost per update stays constant.
    shrinkage
        Pseudo-count of the global warm mean in each key's mean, so a key with few warm
        rows starts close to the global mean rather than to its few members.

    Warmth is the table's own ``counts`` (updates per row). :meth:`add_row` registers the
    keys of a row the model adds; a row added without it (the rating model's batch fit adds
    rows directly) has no keys and, once warm, enters only the global mean.
    """

    def __init__(self, min_updates: int = 3, refresh_every: int = 200, shrinkage: float = 20.0):
        self.min_updates = min_updates
        self.refresh_every = refresh_every
        self.shrinkage = shrinkage
        self.key_index: dict[str, int] = {}
        # (row, key) memberships, appended as rows are added: the scatter of a refresh.
        self._member_rows: list[int] = []
        self._member_keys: list[int] = []
        # The model's update count at which the means are next recomputed.
        self.next_refresh = refresh_every
        # The last refresh: per-key means (an entry per key_index entry, keys registered
        # since are cold) and the global mean, None until some row is warm. Bias and
        # warmth are lists because prior() reads them one scalar at a time.
        self.key_bias: list[float] = []
        self.key_vectors: np.ndarray = np.zeros((0, 0))
        self.key_warm: list[bool] = []
        self.global_bias: float | None = None
        self.global_vector: np.ndarray | None = None

    def add_row(self, row: int, keys: tuple[str, ...]) -> None:
        """Register the profile keys of a new row."""
        index = self.key_index
        for key in keys:
            k = index.get(key)
            if k is None:
                k = index[key] = len(index)
            self._member_rows.append(row)
            self._member_keys.append(k)

    def prior(self, keys: tuple[str, ...]) -> tuple[float, np.ndarray] | None:
        """Start bias and vector for a new row with ``keys`` (None: no warm row yet).
        Reads only; the vector is a fresh array."""
        if self.global_vector is None or self.global_bias is None:
            return None
        index, warm, n_keys = self.key_index, self.key_warm, len(self.key_warm)
        found = []
        for key in keys:
            k = index.get(key)
            if k is not None and k < n_keys and warm[k]:
                found.append(k)
        if not found:
            return self.global_bias, self.global_vector.copy()
        # The mean of the keys' means, summed in key order: a few scalar ops, no fancy
        # indexing (this runs once per new row).
        bias, vector = self.key_bias[found[0]], self.key_vectors[found[0]].copy()
        if len(found) > 1:
            for k in found[1:]:
                bias += self.key_bias[k]
                vector += self.key_vectors[k]
            bias /= len(found)
            vector /= len(found)
        return bias, vector

    def refresh(self, table: FactorTable, updates: int = 0) -> None:
        """Recompute the means from the warm rows of ``table`` after the model's ``updates``-th
        update; the next refresh is due after ``max(refresh_every, rows)`` more."""
        self.next_refresh = updates + max(self.refresh_every, table.n)
        self.recompute(table)

    def recompute(self, table: FactorTable) -> None:
        """Recompute the means from the warm rows of ``table`` now (no schedule change)."""
        n = table.n
        warm = np.asarray(table.counts, dtype=np.int64) >= self.min_updates
        n_warm = int(warm.sum())
        if n_warm == 0:  # (only after removals: a row once warm stays warm)
            self.key_bias, self.key_vectors, self.key_warm = [], np.zeros((0, 0)), []
            self.global_bias = self.global_vector = None
            return
        vectors, biases = table.vectors[:n], table.biases[:n]
        g_vec = vectors[warm].mean(axis=0)
        g_bias = float(biases[warm].mean())
        n_keys = len(self.key_index)
        rows = np.asarray(self._member_rows, dtype=np.int64)
        keys = np.asarray(self._member_keys, dtype=np.int64)
        take = warm[rows] if len(rows) else np.zeros(0, dtype=bool)
        rows, keys = rows[take], keys[take]
        cnt = np.bincount(keys, minlength=n_keys).astype(np.float64)
        bias_sum = np.bincount(keys, weights=biases[rows], minlength=n_keys)
        vec_sum = np.zeros((n_keys, table.factors))
        np.add.at(vec_sum, keys, vectors[rows])
        s = self.shrinkage
        warm_keys = cnt > 0
        # Keys without warm rows are never read; a denominator of 1 keeps them finite.
        denom = np.where(warm_keys, cnt + s, 1.0)
        self.key_bias = ((bias_sum + s * g_bias) / denom).tolist()
        self.key_vectors = (vec_sum + s * g_vec) / denom[:, None]
        self.key_warm = warm_keys.tolist()
        self.global_bias, self.global_vector = g_bias, g_vec

    def renumber(self, new_rows: np.ndarray) -> None:
        """Follow a compaction of the table (old row -> new row, -1: removed): memberships
        of removed rows go, the others move with their rows."""
        rows = new_rows[np.asarray(self._member_rows, dtype=np.int64)]
        keep = rows >= 0
        self._member_rows = rows[keep].tolist()
        self._member_keys = np.asarray(self._member_keys, dtype=np.int64)[keep].tolist()

    def state_equal(self, other: Priors) -> bool:
        """Same settings, memberships, counts and bit-identical means."""
        mine, theirs = self.global_vector, other.global_vector
        if mine is None or theirs is None:
            same_global = mine is None and theirs is None
        else:
            same_global = self.global_bias == other.global_bias and np.array_equal(mine, theirs)
        return (
            (self.min_updates, self.refresh_every, self.shrinkage)
            == (other.min_updates, other.refresh_every, other.shrinkage)
            and self.key_index == other.key_index
            and self._member_rows == other._member_rows
            and self._member_keys == other._member_keys
            and self.next_refresh == other.next_refresh
            and same_global
            and self.key_bias == other.key_bias
            and np.array_equal(self.key_vectors, other.key_vectors)
            and self.key_warm == other.key_warm
        )
