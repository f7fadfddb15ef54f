"""The learner's outcomes and their observers: the hold-out window and the drift feed."""

from __future__ import annotations

from typing import Any

import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.config import Settings
from stream.drift import EVENT_TYPE_CODES, DriftMonitor, DriftObserver
from stream.drift.observer import REGRET_TREND_RATE
from stream.evaluation import Dwelled, Engagement, Rated
from stream.events import encode_event
from stream.learner import FeedbackLearner
from stream.lifecycle import HoldoutLosses, HoldoutWindow, prequential_losses


class Recorder:
    """An observer that keeps every outcome."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def engagement(self, o: Engagement, /) -> None:
        self.seen.append(o)

    def rating(self, o: Rated, /) -> None:
        self.seen.append(o)

    def dwell(self, o: Dwelled, /) -> None:
        self.seen.append(o)


class MonitorCalls:
    """Stands in for a DriftMonitor and records the calls in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.genre_codes = self

    def code(self, name: str) -> int:
        return len(name)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("observe_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, *args))


@pytest.fixture(scope="module")
def run() -> tuple[FeedbackLearner, Recorder, list[bytes]]:
    sim = Simulator(SimulatorConfig(seed=9, n_users=300, n_items=120))
    raws = [encode_event(e) for e in [*sim.profiles(), *sim.events(5000)]]
    learner = FeedbackLearner(Settings())
    recorder = Recorder()
    learner.observers.append(recorder)
    for raw in raws:
        learner.process(raw)
    return learner, recorder, raws


def test_one_outcome_per_learned_interaction(run: Any) -> None:
    learner, recorder, _ = run
    c = learner.counts
    n_profiles = c.consumed_by_type["user_profile"] + c.consumed_by_type["item_profile"]
    assert len(recorder.seen) == c.applied - n_profiles == 5000
    kinds = {type(o) for o in recorder.seen}
    assert kinds == {Engagement, Rated, Dwelled}
    indexes = [o.event_index for o in recorder.seen]
    assert indexes == sorted(set(indexes)) and indexes[-1] == c.consumed
    # Scores and outcomes agree: the outcomes carry the losses the scores summed.
    eng = [o for o in recorder.seen if isinstance(o, Engagement)]
    assert sum(o.loss for o in eng) == pytest.approx(learner.click_score.logloss_sum)
    assert sum(o.naive_loss for o in eng) == pytest.approx(learner.naive.click_score.logloss_sum)
    assert {o.genre is None for o in eng if not o.clicked} == {True}
    assert any(o.genre is not None for o in eng if o.clicked)
    new_users = sum(o.new_user for o in recorder.seen)
    assert 0 < new_users <= 300


def test_holdout_window_is_the_last_events_losses(run: Any) -> None:
    learner, recorder, _ = run
    size = Settings().retrain.holdout_events
    last = recorder.seen[-size:]
    eng = [o.loss for o in last if isinstance(o, Engagement)]
    se = [o.squared_error for o in last if isinstance(o, Rated)]
    expected = HoldoutLosses(
        sum(eng), len(eng), sum(se), len(se),
        sum(x * x for x in eng), sum(x * x for x in se),
    )  # fmt: skip
    losses = learner.lifecycle.holdout.losses()
    assert len(learner.lifecycle.holdout) == min(size, len(recorder.seen))
    assert (losses.engagement_n, losses.rating_n) == (expected.engagement_n, expected.rating_n)
    assert losses.engagement_n > 0 and losses.rating_n > 0
    assert losses.engagement_logloss_sum == pytest.approx(expected.engagement_logloss_sum)
    assert losses.rating_se_sum == pytest.approx(expected.rating_se_sum)
    assert losses.engagement_logloss_sq_sum == pytest.approx(expected.engagement_logloss_sq_sum)
    assert losses.rating_se_sq_sum == pytest.approx(expected.rating_se_sq_sum)
    assert learner.lifecycle.champion() == {
        "engagement_logloss_sum": losses.engagement_logloss_sum,
        "engagement_n": losses.engagement_n,
        "rating_se_sum": losses.rating_se_sum,
        "rating_n": losses.rating_n,
        "engagement_logloss_sq_sum": losses.engagement_logloss_sq_sum,
        "rating_se_sq_sum": losses.rating_se_sq_sum,
    }


def test_holdout_window_matches_the_retrainers_prequential_losses() -> None:
    """The champion's window sums what prequential_losses sums for the same events."""
    from stream.lifecycle import TrainingData
    from stream.models import ModelBundle

    sim = Simulator(SimulatorConfig(seed=3, n_users=100, n_items=60))
    events = [*sim.profiles(), *sim.events(3000)]
    learner = FeedbackLearner(Settings())
    for e in events:
        learner.apply(e)
    data = TrainingData.from_events(events)
    limits = Settings().limits
    bundle = ModelBundle.fresh(
        Settings().model, rating_min=limits.rating_min, rating_max=limits.rating_max,
        dwell_cap_seconds=limits.dwell_cap_seconds,
    )  # fmt: skip
    size = Settings().retrain.holdout_events
    prequential_losses(bundle, data.events[:-size], data.users, data.items)
    theirs = prequential_losses(bundle, data.events[-size:], data.users, data.items)
    assert learner.lifecycle.holdout.losses() == theirs


def test_holdout_window_slots() -> None:
    w = HoldoutWindow(3)
    assert w.losses() == HoldoutLosses(0.0, 0, 0.0, 0)
    w.engagement(Engagement(1, False, True, 0.25, 0.5, "Drama"))
    w.rating(Rated(2, False, 1.5))
    w.dwell(Dwelled(3, True, 12.0))
    assert w.losses() == HoldoutLosses(0.25, 1, 1.5, 1, 0.0625, 2.25)
    w.rating(Rated(4, False, 0.5))  # the engagement slot falls out
    assert w.losses() == HoldoutLosses(0.0, 0, 2.0, 2, 0.0, 2.5)


def test_drift_observer_feeds_the_monitor_in_order() -> None:
    monitor = MonitorCalls()
    obs = DriftObserver(monitor)  # type: ignore[arg-type]
    obs.engagement(Engagement(5, True, True, 0.4, 0.6, "Drama"))
    obs.engagement(Engagement(6, False, False, 0.3, 0.1, None))
    obs.rating(Rated(7, False, 2.0))
    obs.dwell(Dwelled(8, False, 30.0))
    codes = EVENT_TYPE_CODES
    regret1 = 0.4 - 0.6
    regret2 = 0.3 - 0.1
    assert monitor.calls == [
        ("observe_event_type", codes["click"], 5),
        ("observe_new_user", True, 5),
        ("observe_engagement_loss", pytest.approx(regret1), 5),  # against a zero trend
        ("observe_click_genre", len("Drama"), 5),
        ("observe_event_type", codes["impression"], 6),
        ("observe_new_user", False, 6),
        ("observe_engagement_loss", pytest.approx(regret2 - regret1), 6),
        ("observe_event_type", codes["rating"], 7),
        ("observe_new_user", False, 7),
        ("observe_rating_error", 2.0, 7),
        ("observe_event_type", codes["dwell"], 8),
        ("observe_new_user", False, 8),
        ("observe_dwell", 30.0, 8),
    ]
    # A running mean for the first 1 / rate regrets.
    assert obs.regret_trend == pytest.approx((regret1 + regret2) / 2)
    assert REGRET_TREND_RATE < 0.5


def test_drift_observer_trend_becomes_a_slow_average() -> None:
    obs = DriftObserver(DriftMonitor.default())
    n = int(1 / REGRET_TREND_RATE)
    for k in range(n):
        obs.engagement(Engagement(k, False, False, 1.0, 0.0, None))
    assert obs.regret_trend == pytest.approx(1.0)
    obs.engagement(Engagement(n, False, False, 0.0, 0.0, None))
    assert obs.regret_trend == pytest.approx(1.0 - REGRET_TREND_RATE)


def test_learner_without_drift_has_only_the_holdout_observer() -> None:
    settings = Settings()
    settings = settings.model_copy(
        update={"drift": settings.drift.model_copy(update={"enabled": False})}
    )
    learner = FeedbackLearner(settings)
    assert learner.lifecycle.monitor is None
    assert [type(o) for o in learner.observers] == [HoldoutWindow]
