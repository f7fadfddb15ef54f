"""Tests of the seeded population and session simulator."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import numpy as np
import pytest

from producers.simulator import (
    GENRES,
    MAX_USER_EVENTS_PER_MINUTE,
    InteractionEventType,
    Simulator,
    SimulatorConfig,
    age_group,
)
from stream.config import ConsumerConfig
from stream.events import (
    ClickEvent,
    DwellEvent,
    ImpressionEvent,
    ItemProfileEvent,
    RatingEvent,
    UserProfileEvent,
    decode_event,
    encode_event,
)

SMALL = SimulatorConfig(n_users=200, n_items=150, seed=3)


def _events(cfg: SimulatorConfig, n: int) -> list[InteractionEventType]:
    return list(Simulator(cfg).events(n))


def _per_minute(events: list[InteractionEventType]) -> dict[str, int]:
    """Each user's largest number of events in one minute bucket int(ts // 60)."""
    counts: Counter[tuple[str, int]] = Counter((e.user_id, int(e.ts // 60)) for e in events)
    worst: dict[str, int] = defaultdict(int)
    for (user, _), c in counts.items():
        worst[user] = max(worst[user], c)
    return worst


@pytest.fixture(scope="module")
def default_run() -> tuple[Simulator, list[InteractionEventType]]:
    sim = Simulator(SimulatorConfig())
    return sim, list(sim.events(50_000))


def test_same_seed_same_events() -> None:
    assert _events(SMALL, 3000) == _events(SMALL, 3000)
    a, b = Simulator(SMALL), Simulator(SMALL)
    assert list(a.profiles()) == list(b.profiles())


def test_different_seed_different_events() -> None:
    other = SimulatorConfig(n_users=200, n_items=150, seed=4)
    a, b = _events(SMALL, 500), _events(other, 500)

    def key(events: list[InteractionEventType]) -> list[tuple[str, str, str]]:
        return [(e.user_id, e.item_id, e.type) for e in events]

    assert key(a) != key(b)
    assert a[0].event_id != b[0].event_id


def test_exactly_n_events_and_calls_continue_the_stream() -> None:
    assert _events(SMALL, 0) == []
    assert len(_events(SMALL, 1)) == 1
    assert len(_events(SMALL, 1234)) == 1234
    sim = Simulator(SMALL)
    chunked = list(sim.events(300)) + list(sim.events(700))
    assert chunked == _events(SMALL, 1000)
    assert sim.events_generated == 1000


def test_ids_are_unique_and_deterministic() -> None:
    events = _events(SMALL, 2000)
    assert [e.event_id for e in events] == [f"sim-3-{i}" for i in range(2000)]
    sim = Simulator(SMALL)
    profiles = list(sim.profiles())
    ids = [p.event_id for p in profiles]
    assert len(set(ids)) == len(ids)
    assert not set(ids) & {e.event_id for e in events}
    assert all(e.user_id in sim.user_ids and e.item_id in sim.item_ids for e in events)


def test_profiles_cover_every_user_and_item_once() -> None:
    sim = Simulator(SMALL)
    profiles = list(sim.profiles())
    users = [p for p in profiles if isinstance(p, UserProfileEvent)]
    items = [p for p in profiles if isinstance(p, ItemProfileEvent)]
    assert len(users) + len(items) == len(profiles)
    assert [u.user_id for u in users] == list(sim.user_ids)
    assert [i.item_id for i in items] == list(sim.item_ids)
    # Users first, so consumers know everyone before the first interaction.
    assert isinstance(profiles[0], UserProfileEvent)
    assert all(p.ts == SMALL.start_ts for p in profiles)
    for u in users:
        assert u.age is not None and 13 <= u.age <= 80
        assert u.gender in {"M", "F"}
    for i in items:
        assert 1 <= len(i.genres) <= 3 and set(i.genres) <= set(GENRES)
        assert len(set(i.genres)) == len(i.genres)
        assert i.year is not None and i.title


def test_every_event_round_trips_and_validates() -> None:
    sim = Simulator(SimulatorConfig(n_users=200, n_items=150, seed=5, bot_share=0.05))
    for p in sim.profiles():
        assert decode_event(encode_event(p)) == p
        # The normal constructor accepts it too (model_construct skipped validation).
        assert type(p).model_validate(p.model_dump()) == p
    events = list(sim.events(5000))
    assert {e.type for e in events} == {"impression", "click", "dwell", "rating"}
    for e in events:
        assert decode_event(encode_event(e)) == e
    for e in events[:200]:
        assert type(e)(**e.model_dump()) == e


def test_timestamps_non_decreasing_and_sessions_tight() -> None:
    events = _events(SMALL, 5000)
    ts = [e.ts for e in events]
    assert ts[0] > SMALL.start_ts
    assert all(a <= b for a, b in zip(ts, ts[1:], strict=False))
    assert ts[-1] - ts[0] < 5000 * 10  # a few seconds per event at the default rate
    sessions: dict[str, list[float]] = defaultdict(list)
    for e in events:
        assert e.context is not None and e.context.session_id is not None
        sessions[e.context.session_id].append(e.ts)
    # Within a session events are seconds apart, not hours.
    assert np.median([max(v) - min(v) for v in sessions.values()]) < 120


def test_context_matches_event_time() -> None:
    for e in _events(SMALL, 300):
        assert e.context is not None and e.context.hour is not None
        assert e.context.device in {"mobile", "desktop", "tablet", "tv"}
        t = time.gmtime(e.ts)
        # The context is stamped at the session start, at most a few minutes earlier.
        assert e.context.weekday in {t.tm_wday, (t.tm_wday - 1) % 7}


def test_session_structure(default_run: tuple[Simulator, list[InteractionEventType]]) -> None:
    _, events = default_run
    checked: Counter[str] = Counter()
    for prev, e in zip(events, events[1:], strict=False):
        checked[e.type] += 1
        # A dwell follows its click, a rating its dwell, on the same user and item.
        if isinstance(e, DwellEvent):
            assert isinstance(prev, ClickEvent)
            assert (prev.user_id, prev.item_id) == (e.user_id, e.item_id)
            assert 0 <= e.seconds <= 1800
        if isinstance(e, RatingEvent):
            assert isinstance(prev, DwellEvent)
            assert (prev.user_id, prev.item_id) == (e.user_id, e.item_id)
            assert e.rating in {1.0, 2.0, 3.0, 4.0, 5.0}
        if isinstance(e, ImpressionEvent | ClickEvent):
            assert e.position is not None and 0 <= e.position < 10
    # Every branch above ran, so none of the checks passed by having nothing to check.
    assert all(checked[t] > 100 for t in ("impression", "click", "dwell", "rating")), checked


def test_ctr_and_event_mix(default_run: tuple[Simulator, list[InteractionEventType]]) -> None:
    _, events = default_run
    mix = Counter(e.type for e in events)
    ctr = mix["click"] / (mix["click"] + mix["impression"])
    assert 0.10 <= ctr <= 0.25, mix
    assert 0.2 <= mix["rating"] / mix["click"] <= 0.4, mix
    assert abs(mix["dwell"] - mix["click"]) <= 1


def test_ratings_and_dwell_follow_affinity(
    default_run: tuple[Simulator, list[InteractionEventType]],
) -> None:
    sim, events = default_run
    ratings = [(e.rating, sim.affinity(e.user_id, e.item_id)) for e in events if e.type == "rating"]
    r = np.corrcoef(np.array(ratings).T)[0, 1]
    assert r > 0.4, r
    dwell = [
        (np.log1p(e.seconds), sim.affinity(e.user_id, e.item_id))
        for e in events
        if isinstance(e, DwellEvent)
    ]
    assert np.corrcoef(np.array(dwell).T)[0, 1] > 0.2
    clicked = [sim.affinity(e.user_id, e.item_id) for e in events if e.type == "click"]
    shown = [sim.affinity(e.user_id, e.item_id) for e in events if e.type == "impression"]
    assert np.mean(clicked) > np.mean(shown) + 0.5


def test_demographics_shift_affinity() -> None:
    sim = Simulator(SMALL)
    profiles = list(sim.profiles())
    users = [p for p in profiles if isinstance(p, UserProfileEvent)]
    items = [p for p in profiles if isinstance(p, ItemProfileEvent)]
    # Same single-genre item, users in different age groups: the demographic part differs.
    item = next(i for i in items if len(i.genres) == 1)
    by_group: dict[int, list[float]] = defaultdict(list)
    for u in users:
        assert u.age is not None
        by_group[age_group(u.age)].append(sim.demographic_effect(u.user_id, item.item_id))
    means = [np.mean(v) for v in by_group.values()]
    assert max(means) - min(means) > 0.1
    effects = [sim.demographic_effect(u.user_id, i.item_id) for u in users[:20] for i in items[:20]]
    assert 0.1 < np.std(effects) < 1.0  # present, but smaller than the latent part (std ~1)


def test_normal_users_stay_under_the_bot_threshold(
    default_run: tuple[Simulator, list[InteractionEventType]],
) -> None:
    _, events = default_run
    assert max(_per_minute(events).values()) <= MAX_USER_EVENTS_PER_MINUTE


def test_per_minute_cap_holds_even_at_a_high_event_rate() -> None:
    cfg = SimulatorConfig(n_users=3, n_items=50, seed=1, events_per_second=100.0)
    events = _events(cfg, 5000)
    worst = _per_minute(events)
    assert max(worst.values()) == MAX_USER_EVENTS_PER_MINUTE  # the cap is what bites
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:], strict=False))


def test_bots_burst_above_the_consumer_threshold() -> None:
    sim = Simulator(SimulatorConfig(n_users=300, n_items=200, seed=11, bot_share=0.05))
    events = list(sim.events(30_000))
    assert len(sim.bot_users) == 15
    worst = _per_minute(events)
    threshold = ConsumerConfig().bot_events_per_minute
    bots_seen = [u for u in sim.bot_users if u in worst]
    assert bots_seen and all(worst[u] > threshold for u in bots_seen)
    normal = [c for u, c in worst.items() if u not in sim.bot_users]
    assert normal and max(normal) <= MAX_USER_EVENTS_PER_MINUTE
    bot_events = [e for e in events if e.user_id in sim.bot_users]
    assert {e.type for e in bot_events} == {"click"}  # bursts of clicks, never ratings
    # Roughly bot_share of the events, not a flood.
    assert 0.01 < len(bot_events) / len(events) < 0.2


def test_drift_redraws_the_tastes_of_a_share_of_normal_users() -> None:
    base = SimulatorConfig(n_users=400, n_items=200, seed=9, bot_share=0.05)
    cfg = SimulatorConfig(n_users=400, n_items=200, seed=9, bot_share=0.05, drift_at=20_000)
    sim = Simulator(cfg)
    before = {u: sim.taste(u) for u in sim.user_ids}
    first = list(sim.events(20_000))
    assert sim.drift_users == frozenset()  # the 20_000th event (index 20_000) is not out yet
    rest = list(sim.events(20_000))
    drifted = sim.drift_users
    normal = set(sim.user_ids) - sim.bot_users
    assert drifted <= normal
    assert len(drifted) == round(0.5 * len(normal))
    for u in sim.user_ids:
        changed = not np.array_equal(before[u], sim.taste(u))
        assert changed == (u in drifted), u

    # Up to drift_at the stream equals the no-drift stream; after it, it departs.
    plain = Simulator(base)
    assert list(plain.events(20_000)) == first
    assert list(plain.events(20_000)) != rest

    # The drifted users' clicks follow their old tastes before and not after the drift.
    old = Simulator(base)  # same population, tastes never redrawn

    def lift(events: list[InteractionEventType]) -> float:
        aff = defaultdict(list)
        for e in events:
            if e.user_id in drifted and e.type in ("click", "impression"):
                aff[e.type].append(old.affinity(e.user_id, e.item_id))
        return float(np.mean(aff["click"]) - np.mean(aff["impression"]))

    assert lift(first) > 0.8
    assert lift(rest) < 0.5 * lift(first)


def test_drift_at_zero_and_full_share() -> None:
    sim = Simulator(SimulatorConfig(n_users=50, n_items=40, drift_at=0, drift_share=1.0))
    before = {u: sim.taste(u) for u in sim.user_ids}
    next(iter(sim.events(1)))
    assert sim.drift_users == frozenset(sim.user_ids)
    assert all(not np.array_equal(before[u], sim.taste(u)) for u in sim.user_ids)


def test_generates_exactly_the_events_asked_for() -> None:
    # Generation speed is measured in bench/throughput.py, not asserted here.
    sim = Simulator(SimulatorConfig())
    assert sum(1 for _ in sim.events(100_000)) == 100_000
    assert sim.events_generated == 100_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0}, "n_users must be a positive integer"),
        ({"n_items": -5}, "n_items must be a positive integer"),
        ({"factors": 2.5}, "factors must be a positive integer"),
        ({"slate_size": 0}, "slate_size must be a positive integer"),
        ({"n_items": 5, "slate_size": 10}, r"slate_size \(10\) cannot exceed n_items \(5\)"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"bot_share": 1.5}, r"bot_share must be a share in \[0, 1\]"),
        ({"drift_share": -0.1}, r"drift_share must be a share in \[0, 1\]"),
        ({"rating_prob": 2}, r"rating_prob must be a share in \[0, 1\]"),
        ({"drift_at": -3}, "drift_at must be None or a non-negative event index"),
        ({"events_per_second": 0}, "events_per_second must be a positive number"),
        ({"events_per_second": float("inf")}, "events_per_second must be a positive number"),
        ({"start_ts": 1.0}, "start_ts .* is before the earliest time"),
        ({"start_ts": 4e9}, "start_ts .* is in the future"),
        ({"bot_burst_size": 0}, "bot_burst_size must be a positive integer"),
    ],
)
def test_invalid_config_raises_clear_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatorConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_n_raises() -> None:
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        Simulator(SMALL).events(-1)


def test_unknown_ids_raise_key_error() -> None:
    sim = Simulator(SMALL)
    with pytest.raises(KeyError):
        sim.taste("u99999")
    with pytest.raises(KeyError):
        sim.affinity("u00001", "x00001")


def test_gradual_drift_moves_tastes_step_by_step_over_the_duration() -> None:
    cfg = SimulatorConfig(n_users=200, n_items=100, seed=4, drift_at=1000, drift_duration=2000)
    sim = Simulator(cfg)
    before = {u: sim.taste(u) for u in sim.user_ids}
    list(sim.events(2000))  # half-way through the change
    moved = sorted(sim.drift_users)
    assert moved
    mid = {u: sim.taste(u) for u in moved}
    list(sim.events(2000))  # past drift_at + drift_duration
    end = {u: sim.taste(u) for u in moved}
    for u in moved:
        total = np.linalg.norm(end[u] - before[u])
        half = np.linalg.norm(mid[u] - before[u])
        assert total > 0
        assert 0.3 * total < half < 0.7 * total
    unmoved = [u for u in sim.user_ids if u not in sim.drift_users]
    assert unmoved and all(np.array_equal(sim.taste(u), before[u]) for u in unmoved)


def test_drift_preferences_change_the_affinity_of_unmoved_users_too() -> None:
    cfg = SimulatorConfig(n_users=200, n_items=100, seed=4, drift_at=10)
    sim = Simulator(cfg)
    item = sim.item_ids[0]
    before = {u: sim.affinity(u, item) for u in sim.user_ids}
    list(sim.events(20))
    unmoved = [u for u in sim.user_ids if u not in sim.drift_users]
    assert any(sim.affinity(u, item) != before[u] for u in unmoved)
    off = Simulator(
        SimulatorConfig(n_users=200, n_items=100, seed=4, drift_at=10, drift_preferences=False)
    )
    list(off.events(20))
    kept = [u for u in off.user_ids if u not in off.drift_users]
    assert kept and all(off.affinity(u, item) == before[u] for u in kept)


def test_negative_drift_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match="drift_duration"):
        SimulatorConfig(drift_duration=-1)
