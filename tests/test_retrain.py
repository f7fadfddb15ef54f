"""Batch retrain: split, hyperparameter search, champion/challenger (no broker needed)."""

from __future__ import annotations

import json
import math
from collections import Counter
from functools import cache
from typing import Any

import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.config import Limits, ModelConfig
from stream.events import ClickEvent, DwellEvent, ImpressionEvent, RatingEvent
from stream.lifecycle import (
    HoldoutLosses,
    References,
    RetrainOutcome,
    TrainingData,
    naive_references,
    prequential_losses,
    quality_loss,
    retrain,
)
from stream.models import ModelBundle

LIMITS = Limits()


@cache
def simulated(n: int, seed: int, drift_at: int | None = None) -> TrainingData:
    """Profiles and ``n`` events of a simulator, in the learner's formats (cached)."""
    sim = Simulator(SimulatorConfig(seed=seed, drift_at=drift_at))
    return TrainingData.from_events([*sim.profiles(), *sim.events(n)])


def fresh_bundle(cfg: ModelConfig | None = None) -> ModelBundle:
    return ModelBundle.fresh(
        cfg or ModelConfig(),
        rating_min=LIMITS.rating_min,
        rating_max=LIMITS.rating_max,
        dwell_cap_seconds=LIMITS.dwell_cap_seconds,
    )


def champion_losses(data: TrainingData, holdout: int) -> HoldoutLosses:
    """A default bundle that learned online from the start, scored on the hold-out."""
    bundle = fresh_bundle()
    prequential_losses(bundle, data.events[:-holdout], data.users, data.items)
    return prequential_losses(bundle, data.events[-holdout:], data.users, data.items)


def run(data: TrainingData, **kw: Any) -> RetrainOutcome:
    args: dict[str, Any] = {
        "base": ModelConfig(),
        "limits": LIMITS,
        "holdout": 1000,
        "validation": 1000,
        "n_trials": 3,
        "champion": None,
    }
    args.update(kw)
    return retrain(data, **args)


# -- building blocks -----------------------------------------------------------------------


def test_training_data_from_simulator_profiles() -> None:
    data = simulated(3000, 11)
    assert len(data.events) == 3000
    assert len(data.users) == 1000 and len(data.items) == 500
    user = next(iter(data.users.values()))
    assert set(user) == {"age", "gender", "occupation"}
    item = next(iter(data.items.values()))
    assert set(item) == {"genres", "year"} and isinstance(item["genres"], tuple)
    assert all(e.type in {"impression", "click", "dwell", "rating"} for e in data.events)


def test_quality_loss_terms() -> None:
    refs = References(logloss=0.5, rmse=2.0)
    assert quality_loss(40.0, 100, 100.0, 100, refs) == pytest.approx((0.8 + 0.5) / 2)
    assert quality_loss(40.0, 100, 0.0, 0, refs) == pytest.approx(0.8)
    assert quality_loss(0.0, 0, 100.0, 100, refs) == pytest.approx(0.5)
    # A missing or zero reference drops its term.
    assert quality_loss(40.0, 100, 100.0, 100, References(0.5, None)) == pytest.approx(0.8)
    assert quality_loss(40.0, 100, 100.0, 100, References(0.5, 0.0)) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no quality term"):
        quality_loss(0.0, 0, 0.0, 0, refs)
    losses = HoldoutLosses(40.0, 100, 100.0, 100)
    assert losses.quality(refs) == quality_loss(40.0, 100, 100.0, 100, refs)


def test_naive_references_by_hand() -> None:
    kw: dict[str, Any] = {"user_id": "u", "item_id": "i", "ts": 1.7e9}
    history = [
        ClickEvent(event_id="c0", **kw),
        ImpressionEvent(event_id="m0", **kw),
        RatingEvent(event_id="r0", rating=4, **kw),
    ]
    window = [
        ImpressionEvent(event_id="m1", **kw),  # P(click) = (1 + 0.5) / (2 + 1) = 0.5
        ClickEvent(event_id="c1", **kw),  # P(click) = 1.5 / 4 = 0.375
        RatingEvent(event_id="r1", rating=2, **kw),  # mean 4: error -2
        DwellEvent(event_id="d1", seconds=3.0, **kw),  # not scored
        RatingEvent(event_id="r2", rating=5, **kw),  # mean 3: error 2
    ]
    refs = naive_references(window, history)
    assert refs.logloss == pytest.approx((math.log(2.0) - math.log(0.375)) / 2)
    assert refs.rmse == pytest.approx(2.0)
    # Without history the first rating has no mean to be scored against.
    cold = naive_references(window)
    assert cold.rmse == pytest.approx(math.sqrt(((5 - 2) ** 2) / 1))
    assert cold.logloss == pytest.approx((math.log(2.0) - math.log(0.25)) / 2)
    # Nothing to score: no references.
    assert naive_references(window[3:4], history) == References(None, None)


def test_prequential_losses_count_scored_events() -> None:
    data = simulated(3000, 11)
    losses = prequential_losses(fresh_bundle(), data.events, data.users, data.items)
    counts = Counter(e.type for e in data.events)
    assert losses.engagement_n == counts["click"] + counts["impression"]
    assert losses.rating_n == counts["rating"]
    assert losses.engagement_logloss_sum > 0 and losses.rating_se_sum > 0


# -- the procedure -------------------------------------------------------------------------


def test_split_sizes_and_reported_ranges() -> None:
    base = simulated(6000, 12)
    data = TrainingData(base.events, base.users, base.items, first_index=500)
    calls: list[tuple[int, float, dict[str, Any]]] = []
    out = run(
        data,
        holdout=1500,
        validation=1000,
        n_trials=3,
        on_trial=lambda i, v, p: calls.append((i, v, p)),
    )
    assert out.n_events == 6000
    assert (out.first_index, out.last_index) == (500, 6499)
    assert out.splits == {
        "training": (500, 3999),
        "validation": (4000, 4999),
        "holdout": (5000, 6499),
    }
    assert out.challenger_losses.engagement_n + out.challenger_losses.rating_n == sum(
        not isinstance(e, DwellEvent) for e in data.events[-1500:]
    )
    assert [c[0] for c in calls] == [0, 1, 2] and out.trials == 3
    assert out.best_validation == min(c[1] for c in calls) == min(out.trial_values)
    assert set(out.params) == set(calls[0][2]) >= {
        "factors", "learning_rate", "regularization", "bias_learning_rate",
        "implicit_learning_rate", "engagement_learning_rate", "epochs", "window",
    }  # fmt: skip
    assert out.params["window"] in (0.25, 0.5, 1.0) and out.params["epochs"] in (1, 2, 3)
    assert out.accepted and out.champion_holdout is None
    summary = json.loads(json.dumps(out.as_dict()))
    assert "bundle" not in summary
    assert summary["splits"]["holdout"] == [5000, 6499]
    assert summary["params"] == out.params


def test_retrain_is_deterministic() -> None:
    data = simulated(6000, 13)
    # 6 trials are enqueued (the live config and its refinements); the seed drives the rest.
    a = run(data, n_trials=8, seed=7)
    b = run(data, n_trials=8, seed=7)
    assert a.params == b.params
    assert a.trial_values == b.trial_values
    assert (a.best_validation, a.challenger_holdout) == (b.best_validation, b.challenger_holdout)
    assert a.bundle.state_equal(b.bundle)
    c = run(data, n_trials=8, seed=8)
    assert c.trial_values[6:] != a.trial_values[6:]


def test_first_trial_is_the_base_config_learned_online() -> None:
    """With one trial the challenger is the base config that learned every event once:
    exactly the model a learner running from the start would have."""
    data = simulated(6000, 14)
    out = run(data, n_trials=1)
    assert out.params["window"] == 1.0 and out.params["epochs"] == 1
    online = fresh_bundle()
    for e in data.events:
        online.learn(e, data.users, data.items)
    assert out.bundle.state_equal(online)
    assert out.bundle.rating.n_ratings == sum(isinstance(e, RatingEvent) for e in data.events)
    assert out.trained_from == out.first_index


def test_returned_bundle_has_learned_every_event_of_its_window() -> None:
    data = simulated(8000, 15)
    out = run(data, n_trials=5, holdout=1500, validation=1500)
    p = out.params
    events = data.events
    start = out.trained_from - out.first_index
    history, window, hold = events[:start], events[start:-1500], events[-1500:]

    def ratings(evs: list[Any]) -> int:
        return sum(isinstance(e, RatingEvent) for e in evs)

    def shown(evs: list[Any]) -> int:
        return sum(isinstance(e, ClickEvent | ImpressionEvent) for e in evs)

    before = ratings(history) if p["older"] in ("ratings", "once") else 0
    assert out.bundle.rating.n_ratings == before + p["epochs"] * ratings(window) + ratings(hold)
    # The click model learns each event once (extra passes refine the factor models).
    shown_before = shown(history) if p["older"] == "once" else 0
    assert out.bundle.engagement.n_learned == shown_before + shown(window) + shown(hold)
    for e in hold:
        assert out.bundle.implicit.has_user(e.user_id)
        assert out.bundle.implicit.has_item(e.item_id)


def test_challenger_beats_naive_on_stationary_data() -> None:
    data = simulated(30_000, 16)
    out = run(data, holdout=5000, validation=5000, n_trials=4)
    assert out.best_validation < 1.0
    assert out.challenger_holdout < 0.97
    assert out.holdout_refs.logloss is not None and out.holdout_refs.rmse is not None


@pytest.mark.slow
def test_challenger_beats_online_champion_after_abrupt_drift() -> None:
    n, holdout = 60_000, 6000
    data = simulated(n, 4, drift_at=n // 2)
    champion = champion_losses(data, holdout)
    out = run(data, holdout=holdout, validation=6000, n_trials=12, champion=champion)
    assert out.champion_holdout == pytest.approx(champion.quality(out.holdout_refs))
    assert out.challenger_holdout < out.champion_holdout
    assert out.accepted


def test_min_improvement_is_required_of_the_challenger() -> None:
    data = simulated(6000, 20)
    first = run(data)
    own = first.challenger_losses
    # A champion exactly as good as the challenger keeps its place (strictly better needed).
    assert not run(data, champion=own).accepted
    # 2 % worse on both terms: accepted, unless a 5 % improvement is required.
    worse = HoldoutLosses(
        own.engagement_logloss_sum * 1.02, own.engagement_n,
        own.rating_se_sum * 1.02**2, own.rating_n,
    )  # fmt: skip
    out = run(data, champion=worse)
    assert out.champion_holdout == pytest.approx(first.challenger_holdout * 1.02)
    assert out.accepted
    assert not run(data, champion=worse, min_improvement=0.05).accepted
    with pytest.raises(ValueError, match="min_improvement"):
        run(data, min_improvement=1.0)


def test_rejected_when_the_champion_is_better() -> None:
    data = simulated(6000, 17)
    tiny = HoldoutLosses(
        engagement_logloss_sum=1e-6, engagement_n=900, rating_se_sum=1e-6, rating_n=40
    )
    out = run(data, champion=tiny)
    assert out.champion_holdout is not None and out.champion_holdout < 1e-3
    assert out.challenger_holdout > out.champion_holdout
    assert not out.accepted
    assert out.as_dict()["accepted"] is False


def test_too_few_events_raise() -> None:
    data = simulated(3000, 18)
    with pytest.raises(ValueError, match="too few events"):
        run(data, holdout=1000, validation=1001)
    with pytest.raises(ValueError, match="too few events"):
        run(TrainingData([], data.users, data.items))
    with pytest.raises(ValueError, match="positive"):
        run(data, holdout=0)


def test_window_without_anything_to_score_raises() -> None:
    data = simulated(3000, 18)
    dwell = [e for e in data.events if isinstance(e, DwellEvent)]
    assert len(dwell) >= 300
    events = data.events[:2000] + dwell[:300] + data.events[2000:2300]
    with pytest.raises(ValueError, match="validation window has nothing to score"):
        run(TrainingData(events, data.users, data.items), holdout=300, validation=300)
    events = data.events[:2300] + dwell[:300]
    with pytest.raises(ValueError, match="hold-out window has nothing to score"):
        run(TrainingData(events, data.users, data.items), holdout=300, validation=300)


def test_timeout_stops_the_search() -> None:
    data = simulated(6000, 19)
    out = run(data, n_trials=200, timeout_seconds=0.5)
    assert 1 <= out.trials < 200
