"""Compiled SGD steps of the factorization models (numba), one call per event.

A step in numpy costs a dozen small-array operations of a microsecond each for 16 numbers;
compiled, the whole step (dot, loss gradient, bias, both vectors) is one call. The models
keep plain numpy arrays (they pickle as before); these functions only read and write them.

The vector update is :func:`stream.models.factors.step_pair`'s, operation for operation
(``p = p * decay + step * q``, ``q`` moved with the old ``p``; no fused multiply-add). The
dot product sums in index order, in :func:`vdot`, which the models' ``predict``/``score``
call too, so an update still returns exactly what a prediction just before it said.

>>> import numpy as np
>>> p, q = np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])
>>> float(vdot(p[0], q[0]))
0.0
>>> b = np.zeros(1)
>>> s = implicit_step(p, q, b, 0, 0, 1.0, 1.0, 0.5, 0.2)
>>> s, p.tolist(), q.tolist()
(0.5, [[0.9, 0.5]], [[0.25, 1.8]])
"""

from __future__ import annotations

from math import exp

import numpy as np
from numba import njit

__all__ = ["count_above", "implicit_step", "item_logits", "rating_step", "vdot", "warm_up"]


@njit(cache=True)
def vdot(a: np.ndarray, b: np.ndarray) -> float:  # pragma: no cover - compiled
    """``a . b`` summed in index order (the one dot of prediction and update)."""
    s = 0.0
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(cache=True)
def _step_pair(
    p: np.ndarray, q: np.ndarray, u: int, i: int, step: float, decay: float
) -> None:  # pragma: no cover - compiled
    for k in range(p.shape[1]):
        pk = p[u, k]
        qk = q[i, k]
        p[u, k] = pk * decay + step * qk
        q[i, k] = qk * decay + step * pk


@njit(cache=True)
def implicit_step(
    p: np.ndarray,
    q: np.ndarray,
    item_bias: np.ndarray,
    u: int,
    i: int,
    target: float,
    weight: float,
    lr: float,
    reg: float,
) -> float:  # pragma: no cover - compiled
    """One weighted logistic-loss step of user row ``u`` and item row ``i``; the score
    ``sigmoid(b_i + p_u . q_i)`` before it (:meth:`ImplicitMF.update`)."""
    bi = item_bias[i]
    x = bi + vdot(p[u], q[i])
    if x >= 0.0:
        s = 1.0 / (1.0 + exp(-x))
    else:
        z = exp(x)
        s = z / (1.0 + z)
    g = (s - target) * weight
    item_bias[i] = bi - lr * (g + reg * bi)
    _step_pair(p, q, u, i, -lr * g, 1.0 - lr * reg)
    return s


@njit(cache=True)
def rating_step(
    p: np.ndarray,
    q: np.ndarray,
    user_bias: np.ndarray,
    item_bias: np.ndarray,
    u: int,
    i: int,
    rating: float,
    old_mean: float,
    n: int,
    informed: bool,
    lr: float,
    bias_lr: float,
    reg: float,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """One SGD step of :meth:`OnlineMF.update` (the ``n``-th rating); (the unclipped
    prediction before it, the new global mean)."""
    bu = user_bias[u]
    bi = item_bias[i]
    dot = vdot(p[u], q[i])
    predicted = old_mean + bu + bi  # predict()'s summation order
    if informed:
        predicted += dot
    personal = bu + bi + dot
    mean = old_mean + (rating - old_mean) / n
    err = rating - (mean + personal)
    user_bias[u] = bu + bias_lr * (err - reg * bu)
    item_bias[i] = bi + bias_lr * (err - reg * bi)
    _step_pair(p, q, u, i, lr * err, 1.0 - lr * reg)
    return predicted, mean


@njit(cache=True)
def item_logits(
    q: np.ndarray, item_bias: np.ndarray, n: int, pu: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """``q[r] . pu + item_bias[r]`` for the first ``n`` rows (ranking a user's items)."""
    out = np.empty(n)
    for r in range(n):
        out[r] = vdot(q[r], pu) + item_bias[r]
    return out


@njit(cache=True)
def count_above(
    q: np.ndarray, item_bias: np.ndarray, n: int, pu: np.ndarray, j: int, k: int
) -> int:  # pragma: no cover - compiled
    """How many of the first ``n`` rows have a logit (as :func:`item_logits`) above row
    ``j``'s, counting no further than ``k`` (enough to tell a top-``k`` hit)."""
    target = vdot(q[j], pu) + item_bias[j]
    above = 0
    for r in range(n):
        if vdot(q[r], pu) + item_bias[r] > target:
            above += 1
            if above >= k:
                break
    return above


def warm_up() -> None:
    """Load (or compile) every kernel now, for a process that wants its first event to
    cost what the others do (numba loads a kernel at its first call)."""
    p, b = np.zeros((1, 1)), np.zeros(1)
    vdot(p[0], p[0])
    implicit_step(p, p, b, 0, 0, 1.0, 1.0, 0.0, 0.0)
    rating_step(p, p, b, b, 0, 0, 1.0, 0.0, 1, True, 0.0, 0.0, 0.0)
    item_logits(p, b, 1, p[0])
    count_above(p, b, 1, p[0], 0, 1)
