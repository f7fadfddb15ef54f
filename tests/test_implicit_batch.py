"""The batch fit of the implicit model (stream/models/implicit_batch.py) on seeded streams."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.config import Limits, ModelConfig
from stream.events import ClickEvent, DwellEvent, ImpressionEvent, InteractionEvent
from stream.lifecycle.training import TrainingData, train_window
from stream.models import ImplicitMF, ModelBundle
from stream.models.implicit_batch import fit_implicit, observations, weighted_log_loss

NEGATIVE_WEIGHT = ModelConfig().negative_weight
DWELL_SCALE = ModelConfig().dwell_alpha / Limits().dwell_cap_seconds


def _stream(seed: int, events: int, users: int = 150, items: int = 80) -> TrainingData:
    sim = Simulator(SimulatorConfig(n_users=users, n_items=items, seed=seed))
    return TrainingData.from_events([*sim.profiles(), *sim.events(events)])


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return _stream(seed=5, events=12_000)


def _learn_online(model: ImplicitMF, events: list[InteractionEvent]) -> None:
    """One SGD pass as the live bundle learns (same targets and weights)."""
    for e in events:
        if isinstance(e, ClickEvent):
            model.update(e.user_id, e.item_id, 1.0, 1.0)
        elif isinstance(e, ImpressionEvent):
            model.update(e.user_id, e.item_id, 0.0, NEGATIVE_WEIGHT)
        elif isinstance(e, DwellEvent):
            model.update(e.user_id, e.item_id, 1.0, 1.0 + DWELL_SCALE * e.seconds)


def _fit(model: ImplicitMF, events: list[InteractionEvent], iterations: int = 8) -> None:
    fit_implicit(
        model,
        events,
        iterations=iterations,
        negative_weight=NEGATIVE_WEIGHT,
        dwell_scale=DWELL_SCALE,
    )


def test_same_model_and_history_give_the_same_bits(data: TrainingData) -> None:
    a, b = ImplicitMF(factors=8, seed=3), ImplicitMF(factors=8, seed=3)
    _fit(a, data.events)
    _fit(b, data.events)
    assert a.state_equal(b)
    # A pickled round trip (as the registry stores models) then the same fit: still equal.
    c = pickle.loads(pickle.dumps(ImplicitMF(factors=8, seed=3)))
    _fit(c, data.events)
    assert c.state_equal(a)
    # A different seed starts elsewhere and ends elsewhere.
    d = ImplicitMF(factors=8, seed=4)
    _fit(d, data.events)
    assert not d.state_equal(a)


def test_new_ids_get_rows_in_the_order_online_learning_adds_them(data: TrainingData) -> None:
    head, tail = data.events[:3000], data.events[3000:]
    batch, online = ImplicitMF(factors=8, seed=1), ImplicitMF(factors=8, seed=1)
    _learn_online(batch, head)
    _learn_online(online, head)
    known_users, known_items = batch.n_users, batch.n_items
    fit = fit_implicit(batch, tail, negative_weight=NEGATIVE_WEIGHT, dwell_scale=DWELL_SCALE)
    _learn_online(online, tail)
    assert batch._users.ids == online._users.ids and batch._items.ids == online._items.ids
    assert fit.new_users == batch.n_users - known_users > 0
    assert fit.new_items == batch.n_items - known_items >= 0
    # Every id of the history is scored from its own row now, not the unknown default.
    assert all(batch.has_user(e.user_id) for e in tail)


def test_batch_fits_the_training_observations_better_than_one_sgd_pass(
    data: TrainingData,
) -> None:
    sgd, batch = ImplicitMF(factors=8, seed=2), ImplicitMF(factors=8, seed=2)
    _learn_online(sgd, data.events)
    _fit(batch, data.events)
    obs = observations(copy.deepcopy(sgd), data.events, NEGATIVE_WEIGHT, DWELL_SCALE)
    sgd_loss, batch_loss = weighted_log_loss(sgd, obs), weighted_log_loss(batch, obs)
    assert batch_loss < sgd_loss
    # More sweeps get closer to the optimum.
    one_sweep = ImplicitMF(factors=8, seed=2)
    _fit(one_sweep, data.events, iterations=1)
    assert batch_loss < weighted_log_loss(one_sweep, obs)


def test_a_bundle_refits_only_its_implicit_model(data: TrainingData) -> None:
    cfg, limits = ModelConfig(seed=9), Limits()
    bundle = ModelBundle.fresh(cfg, limits.rating_min, limits.rating_max, limits.dwell_cap_seconds)
    train_window(bundle, data.events, data.users, data.items, window=1.0, epochs=1)
    before = copy.deepcopy(bundle)
    fit = fit_implicit(bundle, data.events, iterations=4)
    assert fit.loss_after < fit.loss_before
    assert bundle.rating.state_equal(before.rating)
    assert bundle.engagement.state_equal(before.engagement)
    assert not bundle.implicit.state_equal(before.implicit)
    assert bundle.implicit.n_updates == before.implicit.n_updates
    # The same bundle weights as an explicit call on its implicit model.
    alone = before.implicit
    fit_implicit(
        alone,
        data.events,
        iterations=4,
        negative_weight=cfg.negative_weight,
        dwell_scale=bundle.dwell_scale,
    )
    assert alone.state_equal(bundle.implicit)


def test_an_implicit_model_needs_its_weights() -> None:
    with pytest.raises(ValueError, match="negative_weight"):
        fit_implicit(ImplicitMF(factors=2), [])
    fit = fit_implicit(ImplicitMF(factors=2), [], negative_weight=0.3, dwell_scale=0.0)
    assert (fit.pairs, fit.users, fit.items) == (0, 0, 0)


def test_with_cold_start_new_rows_get_the_profile_keys_online_learning_gives(
    data: TrainingData,
) -> None:
    cfg, limits = ModelConfig(seed=4, cold_start=True), Limits()
    online, batch = (
        ModelBundle.fresh(cfg, limits.rating_min, limits.rating_max, limits.dwell_cap_seconds)
        for _ in range(2)
    )
    for e in data.events:
        online.learn(e, data.users, data.items)
    fit_implicit(batch, data.events, iterations=1, users=data.users, items=data.items)
    for side in ("_user_priors", "_item_priors"):
        learned, fitted = getattr(online.implicit, side), getattr(batch.implicit, side)
        assert fitted.key_index == learned.key_index and len(fitted.key_index) > 1
        assert fitted._member_rows == learned._member_rows
        assert fitted._member_keys == learned._member_keys


def test_with_cold_start_the_priors_come_from_the_fitted_rows(data: TrainingData) -> None:
    cfg, limits = ModelConfig(seed=6, cold_start=True), Limits()
    bundle = ModelBundle.fresh(cfg, limits.rating_min, limits.rating_max, limits.dwell_cap_seconds)
    train_window(bundle, data.events, data.users, data.items, window=1.0, epochs=1)
    model = bundle.implicit
    stale = model.score("newcomer", data.events[0].item_id)
    fit_implicit(bundle, data.events, users=data.users, items=data.items)
    # A user without a profile starts from the mean of the warm (fitted) user rows.
    table = model._users
    warm = [row for row, n in enumerate(table.counts) if n >= cfg.cold_start_min_updates]
    assert warm
    i = model._items.index[data.events[0].item_id]
    mean = table.vectors[warm].mean(axis=0)
    expected = 1.0 / (1.0 + np.exp(-(model._items.biases[i] + mean @ model._items.vectors[i])))
    fresh = model.score("newcomer", data.events[0].item_id, user_profile={})
    assert fresh == pytest.approx(expected, rel=1e-12)
    assert fresh != stale
