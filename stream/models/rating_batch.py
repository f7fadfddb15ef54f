"""Batch refit of the rating model: biased alternating least squares over a rating history.

Online SGD takes one small step per rating and never revisits it; a batch retrain can solve
for every user's bias and vector exactly given the items (and then every item's given the
users), a few times over. :func:`fit_biased_als` does that in place on an
:class:`~stream.models.rating_mf.OnlineMF`, warm-started from its current rows (the live
model's, or a replay's), so the refit keeps every id's row and the model carries on online
afterwards with its own learning rates.

Each half-step is a ridge regression per user (per item) on ``[1, q_i]`` (``[1, p_u]``)
against ``rating - global_mean - b_i`` (``- b_u``), with ``reg_bias`` on the bias and
``reg_factors`` on the vector. It is deterministic: the same history and start give the
same model.

>>> from stream.models.rating_mf import OnlineMF
>>> m = OnlineMF(factors=2, seed=1)
>>> history = [("a", "x", 5.0), ("a", "y", 4.0), ("b", "x", 2.0), ("b", "y", 1.0)]
>>> for u, i, r in history:
...     _ = m.update(u, i, r)
>>> fit_biased_als(m, *zip(*history), iterations=5, reg_factors=0.1, reg_bias=0.1)
>>> round(m.predict("a", "x"), 1), round(m.predict("b", "x"), 1)  # SGD's first steps: 3.0, 2.9
(4.9, 2.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.models.rating_mf import OnlineMF

__all__ = ["fit_biased_als"]


def _solve_rows(
    groups: list[np.ndarray],
    other_rows: np.ndarray,
    other_vectors: np.ndarray,
    target: np.ndarray,
    penalty: np.ndarray,
    vectors: np.ndarray,
    biases: np.ndarray,
) -> None:
    """Ridge-solve ``[bias, vector]`` of each row from its ratings' ``[1, other vector]``."""
    k = other_vectors.shape[1]
    for row, idx in enumerate(groups):
        if idx.size == 0:
            continue
        x = np.empty((idx.size, k + 1))
        x[:, 0] = 1.0
        x[:, 1:] = other_vectors[other_rows[idx]]
        w = np.linalg.solve(x.T @ x + penalty, x.T @ target[idx])
        biases[row] = w[0]
        vectors[row] = w[1:]


def _groups(rows: np.ndarray, n: int) -> list[np.ndarray]:
    """Indexes of the ratings of each row 0..n-1 (in history order)."""
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(n + 1))
    return [order[bounds[r] : bounds[r + 1]] for r in range(n)]


def fit_biased_als(
    model: OnlineMF,
    users: Sequence[str],
    items: Sequence[str],
    ratings: Sequence[float],
    *,
    iterations: int,
    reg_factors: float,
    reg_bias: float,
) -> None:
    """Refit ``model``'s biases and vectors to the ratings ``(users[j], items[j],
    ratings[j])`` by ``iterations`` rounds of alternating least squares, in place.

    The model's global mean is kept (it is the running mean the online model keeps); ids it
    does not know yet are added in first-seen order, as online learning would add them.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if not len(users) == len(items) == len(ratings):
        raise ValueError("users, items and ratings must have the same length")
    if iterations == 0 or not len(ratings):
        return
    ut, it = model._users, model._items
    for id_ in users:
        if id_ not in ut.index:
            ut.add(id_)
    for id_ in items:
        if id_ not in it.index:
            it.add(id_)
    u_rows = np.fromiter((ut.index[u] for u in users), dtype=np.int64, count=len(users))
    i_rows = np.fromiter((it.index[i] for i in items), dtype=np.int64, count=len(items))
    y = np.asarray(ratings, dtype=np.float64) - model.global_mean
    by_user, by_item = _groups(u_rows, ut.n), _groups(i_rows, it.n)
    penalty = np.diag([reg_bias] + [reg_factors] * model.factors)
    # Row views of the tables: the solves write the model in place.
    p, bu = ut.vectors[: ut.n], ut.biases[: ut.n]
    q, bi = it.vectors[: it.n], it.biases[: it.n]
    for _ in range(iterations):
        _solve_rows(by_user, i_rows, q, y - bi[i_rows], penalty, p, bu)
        _solve_rows(by_item, u_rows, p, y - bu[u_rows], penalty, q, bi)
