"""Batch fit of the implicit model: alternating Newton steps on its own weighted log loss.

:class:`~stream.models.implicit_mf.ImplicitMF` scores ``sigmoid(b_i + p_u . q_i)`` and
learns online by SGD: a click is target 1 (weight 1), a dwell target 1 (weight ``1 +
dwell_scale * seconds``), an impression target 0 (weight ``negative_weight``), and every
step shrinks the pair's vectors and the item bias by ``regularization``. Summed over a
history that is the objective

    sum over (u, i) of  w+ softplus(-x_ui) + w- softplus(x_ui)
    + reg/2 * (sum_u n_u |p_u|^2 + sum_i n_i (|q_i|^2 + b_i^2)),   x_ui = b_i + p_u . q_i

(``w+``, ``w-``: the pair's summed positive and negative weights; ``n_u``, ``n_i``: how
many events of the user, the item). :func:`fit_implicit` minimizes it in batch (with a
heavier penalty by default, :data:`BATCH_REGULARIZATION`): with the
items fixed, each user's part is a small weighted logistic regression, and with the users
fixed, each item's (its bias included); one Newton step per entity and half-sweep, both
halves repeated ``iterations`` times. Logistic rather than squared loss (as the ALS of
the ``implicit`` library uses) because the result is written back into the online model,
which goes on learning by the same logistic SGD and whose score is a probability the click
model stacks (``cf_logit``); measured, the library's ALS written back (calibrated) left
the click model's log loss and AUC far worse than one plain SGD pass, its recall@10 on a
par with this fit's at best (``bench/implicit_batch.py --als``).

The fit starts from the model's current rows (warm start from a live or SGD-trained model;
a fresh model's drawn start vectors otherwise) and involves no randomness, so the same
model and history give the same bits. Ids new to the model are added first, in first-seen
order, exactly as online learning would add them.

>>> from stream.events import ClickEvent, ImpressionEvent
>>> events = []
>>> for n in range(20):
...     events += [ClickEvent(event_id=f"c{n}", user_id="ann", item_id="jazz", ts=1.7e9),
...                ImpressionEvent(event_id=f"i{n}", user_id="ann", item_id="metal", ts=1.7e9),
...                ClickEvent(event_id=f"d{n}", user_id="bob", item_id="metal", ts=1.7e9),
...                ImpressionEvent(event_id=f"j{n}", user_id="bob", item_id="jazz", ts=1.7e9)]
>>> model = ImplicitMF(factors=4, seed=0)
>>> fit = fit_implicit(model, events, negative_weight=1.0, dwell_scale=0.0)
>>> (fit.users, fit.items, fit.pairs, fit.new_users, fit.new_items)
(2, 2, 4, 2, 2)
>>> fit.loss_after < fit.loss_before
True
>>> model.top_k("ann", 1), model.top_k("bob", 1)
(['jazz'], ['metal'])
>>> model.score("ann", "jazz") > 0.9 > 0.1 > model.score("ann", "metal")
True
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.events import ClickEvent, DwellEvent, ImpressionEvent, InteractionEvent
from stream.models.bundle import ModelBundle
from stream.models.implicit_mf import ImplicitMF

__all__ = [
    "BATCH_REGULARIZATION",
    "BatchFit",
    "Observations",
    "fit_implicit",
    "observations",
    "weighted_log_loss",
]

BATCH_REGULARIZATION = 0.03
"""Default L2 penalty per event of the batch fit. Higher than the online model's 0.01: one
SGD pass stops far from the optimum (an implicit regularization) while the batch reaches
it, and at 0.01 it overfits (bench/implicit_batch.py, two seeds: recall@10 and log loss
after the fit worse than one SGD pass; at 0.03 better on both; at 0.1 recall@10 higher
still but the click model's log loss far worse)."""

# Newton steps longer than this (in logit units per coordinate) are scaled down: a step
# from far-off start vectors can otherwise overshoot on a user with a handful of events.
_MAX_STEP = 3.0


@dataclass(frozen=True)
class Observations:
    """A history aggregated per (user, item) pair, in the model's rows.

    ``positive`` and ``negative`` are the pair's summed weights with target 1 and 0;
    ``user_events`` and ``item_events`` count each row's events (the SGD's shrink count).
    """

    users: np.ndarray
    items: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    user_events: np.ndarray
    item_events: np.ndarray


@dataclass(frozen=True)
class BatchFit:
    """What :func:`fit_implicit` did: sizes, the objective (per unit of weight) before
    and after, and its seconds."""

    users: int
    items: int
    pairs: int
    new_users: int
    new_items: int
    iterations: int
    loss_before: float
    loss_after: float
    seconds: float


def observations(
    model: ImplicitMF,
    events: Iterable[InteractionEvent],
    negative_weight: float,
    dwell_scale: float,
    users: Mapping[str, Mapping[str, Any]] | None = None,
    items: Mapping[str, Mapping[str, Any]] | None = None,
) -> Observations:
    """Aggregate the implicit model's observations in ``events`` per pair (ratings are not
    its data and are skipped); ids new to ``model`` get rows, in first-seen order.

    ``users`` and ``items`` are the profiles by id: with cold start, a new row registers
    its profile keys exactly as the online update of the same event would (clicks and
    impressions carry profiles, dwell does not).
    """
    rows = model._rows  # same package: the rows are ours to write
    no_profiles: Mapping[str, Mapping[str, Any]] = {}
    user_profiles = no_profiles if users is None else users
    item_profiles = no_profiles if items is None else items
    pair_rows: dict[tuple[int, int], int] = {}
    positive: list[float] = []
    negative: list[float] = []
    u_rows: list[int] = []
    i_rows: list[int] = []
    for e in events:
        kind = type(e)
        if kind is ClickEvent:
            target, weight = 1, 1.0
        elif kind is ImpressionEvent:
            target, weight = 0, negative_weight
        elif kind is DwellEvent:
            target, weight = 1, 1.0 + dwell_scale * e.seconds  # type: ignore[attr-defined]
        else:
            continue
        item_id: str = e.item_id  # type: ignore[attr-defined]  # every kind left has one
        # The online model's own lookup: new ids get rows as its updates would add them.
        if kind is DwellEvent:
            u, i, _ = rows(e.user_id, item_id)
        else:
            u, i, _ = rows(
                e.user_id, item_id, user_profiles.get(e.user_id), item_profiles.get(item_id)
            )
        row = pair_rows.setdefault((u, i), len(pair_rows))
        if row == len(positive):
            positive.append(0.0)
            negative.append(0.0)
        if target:
            positive[row] += weight
        else:
            negative[row] += weight
        u_rows.append(u)
        i_rows.append(i)
    pairs = np.array(list(pair_rows), dtype=np.int64).reshape(-1, 2)
    return Observations(
        users=pairs[:, 0],
        items=pairs[:, 1],
        positive=np.array(positive),
        negative=np.array(negative),
        user_events=np.bincount(np.array(u_rows, dtype=np.int64), minlength=model.n_users),
        item_events=np.bincount(np.array(i_rows, dtype=np.int64), minlength=model.n_items),
    )


def weighted_log_loss(model: ImplicitMF, obs: Observations) -> float:
    """The data part of the objective per unit of weight: the model's weighted log loss
    on the observations (lower is a closer fit)."""
    x = _logits(model._users.vectors, model._items.vectors, model._items.biases, obs)
    total = obs.positive @ np.logaddexp(0.0, -x) + obs.negative @ np.logaddexp(0.0, x)
    return float(total / (obs.positive.sum() + obs.negative.sum()))


def _logits(p: np.ndarray, q: np.ndarray, b: np.ndarray, obs: Observations) -> np.ndarray:
    return b[obs.items] + np.einsum("ij,ij->i", p[obs.users], q[obs.items])


class _Groups:
    """The observations of each row of one side (``rows``: the row of each observation),
    as slices of an order sorted by row."""

    def __init__(self, rows: np.ndarray, n: int) -> None:
        self.rows = rows
        self.order = np.argsort(rows, kind="stable")
        bounds = np.searchsorted(rows[self.order], np.arange(n + 1))
        self.spans = [
            (r, int(bounds[r]), int(bounds[r + 1])) for r in range(n) if bounds[r + 1] > bounds[r]
        ]


def _newton_half_step(
    own: np.ndarray,
    other: np.ndarray,
    groups: _Groups,
    other_rows: np.ndarray,
    offset: np.ndarray,
    obs: Observations,
    penalty: np.ndarray,
    scale: np.ndarray,
) -> None:
    """One Newton step of every row of ``own`` (in place) with ``other`` fixed.

    Each row's logits are ``offset + own[row] . other[other_rows]``; its part of the
    objective is a weighted logistic regression with an L2 penalty of ``penalty[row] *
    scale`` (``scale``: one factor per coordinate).
    """
    x = offset + np.einsum("ij,ij->i", own[groups.rows], other[other_rows])
    total = obs.positive + obs.negative
    s = 1.0 / (1.0 + np.exp(-x))
    residual = total * s - obs.positive  # d(loss)/d(logit)
    curvature = total * s * (1.0 - s)  # d2(loss)/d(logit)2
    order = groups.order
    for row, lo, hi in groups.spans:
        sel = order[lo:hi]
        features = other[other_rows[sel]]
        vec = own[row]
        lam = penalty[row] * scale
        grad = features.T @ residual[sel] + lam * vec
        hess = (features.T * curvature[sel]) @ features + np.diag(lam)
        step = np.linalg.solve(hess, grad)
        biggest = np.abs(step).max()
        if biggest > _MAX_STEP:
            step *= _MAX_STEP / biggest
        vec -= step


def fit_implicit(
    target: ModelBundle | ImplicitMF,
    events: Iterable[InteractionEvent],
    *,
    iterations: int = 8,
    regularization: float | None = None,
    bias_regularization: float | None = None,
    negative_weight: float | None = None,
    dwell_scale: float | None = None,
    users: Mapping[str, Mapping[str, Any]] | None = None,
    items: Mapping[str, Mapping[str, Any]] | None = None,
) -> BatchFit:
    """Fit the implicit model of ``target`` to ``events`` in batch, in place.

    ``target`` is a :class:`~stream.models.ModelBundle` (its ``implicit`` model is fitted,
    with the bundle's ``negative_weight`` and ``dwell_scale``) or an :class:`ImplicitMF`
    (then give ``negative_weight`` and ``dwell_scale``). ``events`` are admitted interaction
    events in stream order (ratings are skipped). ``regularization`` is the L2 penalty per
    event of a row, as the SGD applies ``regularization`` at each update (default
    :data:`BATCH_REGULARIZATION`; the model's own ``regularization`` gives exactly the
    objective its SGD follows, which the batch overfits);
    ``bias_regularization`` (default: ``regularization``) is the item biases' own penalty;
    ``iterations`` is the number of user + item Newton sweeps. ``users`` and ``items``
    (profiles by id, as the retrain has them) matter only with cold start, for ids new to
    the model: their rows register the profile keys the online update would.

    For a retrain: call it after the SGD passes of
    :func:`stream.lifecycle.training.train_window` on the same history (the click model
    then has learned ``cf_logit`` from the pre-learning scores of the first pass, without
    a stacking leak, and the implicit factors end at the batch optimum). Only the implicit
    model's rows change; its ``n_updates`` and per-row update counts count online
    updates and are left as they are. With cold start, the priors are recomputed from the
    fitted rows at the end, so new ids start from the batch optimum's means.
    """
    start = time.perf_counter()
    if isinstance(target, ModelBundle):
        model = target.implicit
        if negative_weight is None:
            negative_weight = target.config.negative_weight
        dwell_scale = target.dwell_scale if dwell_scale is None else dwell_scale
    else:
        model = target
    if negative_weight is None or dwell_scale is None:
        raise ValueError("an ImplicitMF needs negative_weight and dwell_scale")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    reg = BATCH_REGULARIZATION if regularization is None else regularization
    bias_reg = reg if bias_regularization is None else bias_regularization
    n_users_before, n_items_before = model.n_users, model.n_items
    obs = observations(model, events, negative_weight, dwell_scale, users, items)
    user_table, item_table = model._users, model._items
    n_users, n_items = user_table.n, item_table.n
    loss_before = weighted_log_loss(model, obs) if len(obs.users) else 0.0
    if len(obs.users) and iterations:
        user_groups = _Groups(obs.users, n_users)
        item_groups = _Groups(obs.items, n_items)
        p = user_table.vectors[:n_users]  # views: the Newton steps write the model
        k = p.shape[1]
        # The item side learns [q_i, b_i] against [p_u, 1]: the bias is one more factor.
        q_aug = np.hstack([item_table.vectors[:n_items], item_table.biases[:n_items, None]])
        # Per event, as the SGD shrinks a row at each of its updates.
        user_penalty = obs.user_events.astype(np.float64)
        item_penalty = obs.item_events.astype(np.float64)
        user_scale = np.full(k, reg)
        item_scale = np.append(np.full(k, reg), bias_reg)
        ones = np.ones((n_users, 1))
        for _ in range(iterations):
            _newton_half_step(
                p,
                q_aug[:, :k],
                user_groups,
                obs.items,
                q_aug[obs.items, k],
                obs,
                user_penalty,
                user_scale,
            )
            p_aug = np.hstack([p, ones])
            _newton_half_step(
                q_aug,
                p_aug,
                item_groups,
                obs.users,
                np.zeros(len(obs.users)),
                obs,
                item_penalty,
                item_scale,
            )
        item_table.vectors[:n_items] = q_aug[:, :k]
        item_table.biases[:n_items] = q_aug[:, k]
        if model.cold_start:
            # The means were taken from the rows before the fit: take them again.
            model._refresh_priors(model.n_updates)
    loss_after = weighted_log_loss(model, obs) if len(obs.users) else 0.0
    return BatchFit(
        users=n_users,
        items=n_items,
        pairs=len(obs.users),
        new_users=n_users - n_users_before,
        new_items=n_items - n_items_before,
        iterations=iterations,
        loss_before=loss_before,
        loss_after=loss_after,
        seconds=time.perf_counter() - start,
    )
