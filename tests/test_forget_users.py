"""Forgetting a user and bounded memory, on the learner itself (no broker).

The end-to-end forget over the embedded broker, the CLI and the model-state topic is in
``tests/test_forget_broker.py``.
"""

from __future__ import annotations

import pickle
from collections import Counter

from producers.simulator import Simulator, SimulatorConfig
from stream.config import ConsumerConfig, Settings
from stream.events import Event, ForgottenUsers, encode_event
from stream.kafka.history import HistoryCollector
from stream.learner import FeedbackLearner


def stream(n: int, seed: int = 3, n_users: int = 300) -> list[Event]:
    sim = Simulator(SimulatorConfig(n_users=n_users, n_items=200, seed=seed, bot_share=0.0))
    return [*sim.profiles(), *sim.events(n)]


def busiest_user(events: list[Event]) -> str:
    """The user with the most interactions (ids are zero-padded: none is part of another)."""
    counts = Counter(getattr(e, "user_id", None) for e in events if e.type != "user_profile")
    counts.pop(None, None)
    return str(counts.most_common(1)[0][0])


def traces(learner: FeedbackLearner, user_id: str) -> bool:
    blob = pickle.dumps(learner)
    return user_id.encode() in blob


def test_forget_leaves_no_trace_and_filters_later_events() -> None:
    events = stream(20_000)
    user = busiest_user(events)
    cut = len(events) // 2
    learner = FeedbackLearner(Settings())
    for e in events[:cut]:
        learner.process(encode_event(e))
    assert learner.models.implicit.has_user(user) and traces(learner, user)
    learner.forget(user)
    later = 0
    for e in events[cut:]:
        learner.process(encode_event(e))
        later += getattr(e, "user_id", None) == user
    assert later > 20
    assert not traces(learner, user)
    m = learner.models
    assert not m.rating.has_user(user) and not m.implicit.has_user(user)
    assert user not in learner.users and user not in learner.interactions.seen
    c = learner.counts
    assert c.filtered_by_reason["forgotten_user"] == later
    assert c.reconciles()
    assert learner.users_forgotten == 1


def test_history_leaves_forgotten_users_out_with_the_same_indexes() -> None:
    events = stream(5000)
    user = busiest_user(events)
    forgotten = ForgottenUsers()
    forgotten.add(user)
    plain, without = HistoryCollector(Settings()), HistoryCollector(Settings(), forgotten)
    for e in events:
        plain.process(encode_event(e))
        without.process(encode_event(e))
    assert user not in without.users and all(e.user_id != user for e in without.events)
    kept = [(i, e) for i, e in zip(plain.indexes, plain.events, strict=True) if e.user_id != user]
    assert kept == list(zip(without.indexes, without.events, strict=True))
    assert without.counts.consumed == plain.counts.consumed and without.counts.reconciles()


def run_capped(events: list[Event], max_users: int | None) -> FeedbackLearner:
    learner = FeedbackLearner(Settings(consumer=ConsumerConfig(max_users=max_users)))
    for e in events:
        learner.process(encode_event(e))
    return learner


def test_capped_learner_stays_bounded_and_replays_bit_for_bit() -> None:
    events = stream(30_000, n_users=2000)
    cap = 200
    learner = run_capped(events, cap)
    slack = cap + cap // 20
    m = learner.models
    assert m.rating.n_users <= slack and m.implicit.n_users <= slack
    assert learner.users_held <= slack and len(learner.interactions.seen) <= slack
    assert len(learner.admission.bots._activity) <= slack
    assert learner.users_evicted > 1000
    assert learner.counts.reconciles()
    again = run_capped(events, cap)
    assert learner.state_equal(again) and again.users_evicted == learner.users_evicted
    assert list(learner.recency) == list(again.recency)
    # Evicted users keep their profile (their events are still admitted) and come back cold.
    assert len(learner.users) == 2000


def test_without_a_cap_nothing_is_evicted() -> None:
    learner = run_capped(stream(5000), None)
    assert learner.users_evicted == 0
    assert learner.users_held == learner.models.implicit.n_users


def test_evictions_reach_the_metrics_and_serving() -> None:
    from prometheus_client import CollectorRegistry

    from stream.observability.collector import LearnerCollector
    from stream.serving.export import ModelStateExporter
    from stream.serving.records import decode_record, encode_record
    from stream.serving.state import ServingState

    events = stream(12_000, n_users=1000)
    learner = FeedbackLearner(Settings(consumer=ConsumerConfig(max_users=100)))
    collector, registry = LearnerCollector(), CollectorRegistry()
    registry.register(collector)
    collector.track(lambda: learner)
    exporter, serving = ModelStateExporter(), ServingState()
    for start in range(0, len(events), 1500):
        for e in events[start : start + 1500]:
            learner.process(encode_event(e))
        for record in exporter.changes(learner):
            serving.apply(decode_record(*encode_record(record)))
    assert learner.users_evicted > 0
    assert registry.get_sample_value("feedback_loop_users_evicted_total") == learner.users_evicted
    assert registry.get_sample_value("feedback_loop_users_held") == learner.users_held
    implicit = learner.models.implicit._users
    for user_id in learner.users:  # held: their vectors; evicted: a cold start (profile only)
        got = serving.user(user_id)
        assert got is not None and got.profile is not None
        row = implicit.index.get(user_id)
        want = None if row is None else tuple(implicit.vectors[row].tolist())
        assert got.implicit_vector == want, user_id
