"""Admission: every message ends in exactly one bucket, with the reasons counted."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.config import Limits, Settings
from stream.events import (
    Admission,
    BotFilter,
    ClickEvent,
    ItemProfileEvent,
    Profiles,
    RatingEvent,
    Rejection,
    UserProfileEvent,
    encode_event,
)
from stream.kafka.history import HistoryCollector
from stream.learner import FeedbackLearner
from stream.lifecycle import TrainingData
from stream.models.click import EngagementModel

KW: dict[str, Any] = {"user_id": "u", "item_id": "i", "ts": 1.7e9}


def gate(**limits: Any) -> Admission:
    adm = Admission(Limits(**limits), dedup_window=100, bot_events_per_minute=5)
    adm.admit(UserProfileEvent(event_id="pu", user_id="u", ts=1.7e9, age=30))
    adm.admit(ItemProfileEvent(event_id="pi", item_id="i", ts=1.7e9, genres=("Drama",)))
    return adm


@pytest.mark.parametrize(
    ("raw", "kind", "event_type"),
    [
        (b"", "invalid_event", "invalid"),
        (None, "null_value", "invalid"),
        (b"{not json", "malformed_json", "invalid"),
        (b'{"type": "teleport", "event_id": "x"}', "unknown_type", "invalid"),
        (b'{"event_id": "x"}', "unknown_type", "invalid"),
        (b'{"type": "rating", "event_id": "x", "user_id": "u"}', "invalid_event", "rating"),
    ],
)
def test_invalid_messages_are_dead_lettered(raw: bytes | None, kind: str, event_type: str) -> None:
    adm = gate()
    out = adm.admit_raw(raw)
    assert isinstance(out, Rejection)
    assert (out.kind, out.event_type) == (kind, event_type)
    assert out.reason
    c = adm.counts
    assert (c.consumed, c.applied, c.dead_lettered) == (3, 2, 1)
    assert c.dead_letters_by_kind == {kind: 1}
    assert c.consumed_by_type[event_type] == 1
    assert c.reconciles()


def test_unknown_user_and_item_are_dead_lettered_and_not_remembered() -> None:
    adm = gate()
    stranger = RatingEvent(event_id="r1", rating=3, **{**KW, "user_id": "v"})
    out = adm.admit(stranger)
    assert isinstance(out, Rejection) and out.kind == "unknown_user" and "'v'" in out.reason
    out = adm.admit(RatingEvent(event_id="r2", rating=3, **{**KW, "item_id": "j"}))
    assert isinstance(out, Rejection) and out.kind == "unknown_item"
    assert out.event_type == "rating"
    # A dead-lettered event is not marked seen: once its user is known it is admitted.
    adm.admit(UserProfileEvent(event_id="pv", user_id="v", ts=1.7e9))
    assert adm.admit(stranger) is stranger
    c = adm.counts
    assert c.dead_letters_by_kind == {"unknown_user": 1, "unknown_item": 1}
    assert (c.consumed, c.applied, c.dead_lettered) == (6, 4, 2) and c.reconciles()


def test_unknown_ids_are_admitted_when_not_required() -> None:
    adm = gate(require_known_users=False, require_known_items=False)
    e = ClickEvent(event_id="c", **{**KW, "user_id": "v", "item_id": "j"})
    assert adm.admit(e) is e


def test_duplicates_are_dropped_and_counted() -> None:
    adm = gate()
    e = ClickEvent(event_id="c1", **KW)
    assert adm.admit(e) is e
    assert adm.admit(e) is None
    assert adm.admit_raw(encode_event(e)) is None
    c = adm.counts
    assert (c.applied, c.duplicates, c.consumed_by_type["click"]) == (3, 2, 3)
    assert c.reconciles()


def test_dedup_window_is_bounded() -> None:
    adm = Admission(Limits(require_known_users=False, require_known_items=False), 2, 1000)
    events = [ClickEvent(event_id=f"c{k}", **KW) for k in range(3)]
    for e in events:
        assert adm.admit(e) is e
    assert len(adm.seen) == 2
    assert adm.admit(events[0]) is events[0]  # forgotten: admitted again
    assert adm.admit(events[2]) is None


def test_bot_filter_drops_bursts_and_remembers_them() -> None:
    adm = gate()  # at most 5 events a minute
    burst = [ClickEvent(event_id=f"b{k}", **{**KW, "ts": 1.7e9 + k}) for k in range(8)]
    admitted = [adm.admit(e) is e for e in burst]
    assert admitted == [True] * 5 + [False] * 3
    c = adm.counts
    assert c.filtered == 3 and c.filtered_by_reason == {"bot": 3}
    # A filtered event is seen: its redelivery is a duplicate, not filtered twice.
    assert adm.admit(burst[-1]) is None and c.duplicates == 1
    # Still flagged an hour later (a day of event time), in a quiet minute.
    later = ClickEvent(event_id="later", **{**KW, "ts": 1.7e9 + 3600})
    assert adm.admit(later) is None and c.filtered == 4
    assert c.reconciles()


def test_bot_filter_counts_per_user_and_per_minute() -> None:
    bots = BotFilter(limit=2)
    assert [bots.is_bot("a", 0.0), bots.is_bot("b", 1.0), bots.is_bot("a", 2.0)] == [False] * 3
    assert not bots.is_bot("a", 61.0)  # a new minute starts a new count
    assert not bots.is_bot("a", 62.0)
    assert bots.is_bot("a", 63.0)
    assert not bots.is_bot("b", 63.0)


def test_profiles_last_one_wins_and_training_data_uses_the_same_builder() -> None:
    events = [
        UserProfileEvent(event_id="p1", user_id="u", ts=1.7e9, age=30),
        UserProfileEvent(event_id="p2", user_id="u", ts=1.7e9, age=31, gender="F"),
        ItemProfileEvent(event_id="p3", item_id="i", ts=1.7e9, year=1999),
        RatingEvent(event_id="r", rating=4, **KW),
    ]
    profiles = Profiles()
    for e in events[:3]:
        profiles.add(e)  # type: ignore[arg-type]
    assert profiles.users == {"u": {"age": 31, "gender": "F", "occupation": None}}
    data = TrainingData.from_events(events)
    assert (data.users, data.items) == (profiles.users, profiles.items)
    assert [e.event_id for e in data.events] == ["r"]


def test_reconciles_on_a_simulated_stream_with_bots_and_bad_messages() -> None:
    sim = Simulator(SimulatorConfig(seed=5, n_users=200, n_items=100, bot_share=0.3))
    raws = [encode_event(e) for e in [*sim.profiles(), *sim.events(6000)]]
    raws += [raws[400], raws[401], b"{", b'{"type": "rating", "event_id": "z"}']
    settings = Settings()
    adm = Admission.from_settings(settings)
    outcomes = [adm.admit_raw(r) for r in raws]
    c = adm.counts
    assert c.consumed == len(raws) and c.reconciles()
    assert c.duplicates == 2 and c.dead_lettered == 2 and c.filtered > 0
    assert c.filtered_by_reason == {"bot": c.filtered}
    assert sum(c.consumed_by_type.values()) == c.consumed
    assert sum(isinstance(o, Rejection) for o in outcomes) == c.dead_lettered
    # The learner and the retrainer's history reader go through the same gate.
    learner, history = FeedbackLearner(settings), HistoryCollector(settings)
    for r in raws:
        learner.process(r)
        history.process(r)
    assert learner.counts == history.counts == c
    assert (history.users, history.items) == (learner.users, learner.items)
    admitted = [o for o in outcomes if o is not None and not isinstance(o, Rejection)]
    interactions = [o for o in admitted if o.type not in ("user_profile", "item_profile")]
    assert history.events == interactions and len(interactions) > 3000


def _raw(**fields: Any) -> bytes:
    ids = {
        "user_profile": {"user_id": "u"},
        "item_profile": {"item_id": "i"},
    }.get(fields["type"], {"user_id": "u", "item_id": "i"})
    return orjson.dumps({"event_id": "x", **ids, "ts": 1.7e9, **fields})


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (_raw(type="rating", rating="4"), "rating"),
        (_raw(type="rating", rating=True), "rating"),
        (_raw(type="rating", rating=4, ts="1700000000"), "ts"),
        (_raw(type="rating", rating=4, ts=True), "ts"),
        (_raw(type="impression", position="2"), "position"),
        (_raw(type="impression", position=2.0), "position"),
        (_raw(type="dwell", seconds="12"), "seconds"),
        (_raw(type="click", context={"hour": "3"}), "context.hour"),
        (_raw(type="click", context={"weekday": False}), "context.weekday"),
        (_raw(type="user_profile", age="30"), "age"),
    ],
)
def test_lax_values_are_rejected(raw: bytes, where: str) -> None:
    out = gate().admit_raw(raw)
    assert isinstance(out, Rejection) and out.kind == "invalid_event"
    assert out.reason.startswith(where + ":")


def test_integers_stay_valid_for_float_fields() -> None:
    out = gate().admit_raw(_raw(type="rating", rating=4, ts=1_700_000_000))
    assert isinstance(out, RatingEvent) and (out.rating, out.ts) == (4.0, 1.7e9)


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        " ",
        "\t",
        "\u0000",
        "\u200b",
        "u\u200b",
        "\ufeffu",
        "u\u202e",
        " u",
        "u ",
        "u\n1",
        "\u00a0",
        "u\u3000v",
    ],
)
@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
def test_blank_and_invisible_ids_are_rejected(bad_id: str, field: str) -> None:
    out = gate().admit_raw(_raw(type="click", **{field: bad_id}))
    assert isinstance(out, Rejection) and out.kind == "invalid_event", out
    assert out.reason.startswith(field + ":")


def test_ordinary_ids_stay_valid() -> None:
    adm = gate(require_known_users=False, require_known_items=False)
    for i, good in enumerate(["u 1", "ユーザー", "é", "user-42", "a.b@c", "😀"]):
        out = adm.admit_raw(_raw(type="click", event_id=f"c{i}", user_id=good))
        assert not isinstance(out, Rejection) and out is not None, (good, out)


def test_whitespace_event_ids_no_longer_vanish_as_duplicates() -> None:
    adm = gate()
    for i, blank in enumerate([" ", "  ", "\t"]):
        assert isinstance(
            adm.admit_raw(_raw(type="click", event_id=blank, ts=1.7e9 + i)), Rejection
        )
    c = adm.counts
    assert (c.duplicates, c.dead_lettered, c.dead_letters_by_kind) == (0, 3, {"invalid_event": 3})


def test_same_event_id_with_other_content_is_dead_lettered_not_dropped() -> None:
    adm = gate()
    first = _raw(type="rating", event_id="r", rating=4)
    assert adm.admit_raw(first) is not None
    assert adm.admit_raw(first) is None  # the same bytes again: a duplicate
    out = adm.admit_raw(_raw(type="rating", event_id="r", rating=1))
    assert isinstance(out, Rejection) and out.kind == "conflicting_duplicate"
    assert "'r'" in out.reason and out.event_type == "rating"
    c = adm.counts
    assert (c.applied, c.duplicates, c.dead_lettered) == (3, 1, 1) and c.reconciles()
    assert c.dead_letters_by_kind == {"conflicting_duplicate": 1}


def test_oversized_and_huge_values_get_short_reasons() -> None:
    adm = gate()
    huge_type = orjson.dumps({"type": "t" * 600_000, "event_id": "x"})
    out = adm.admit_raw(huge_type)
    assert isinstance(out, Rejection) and out.kind == "unknown_type"
    assert len(out.reason) < 400 and "600000 chars" in out.reason
    big = b'{"type": "click", "pad": "' + b"x" * 2_000_000 + b'"}'
    out = adm.admit_raw(big)
    assert isinstance(out, Rejection) and out.kind == "oversized"
    assert str(len(big)) in out.reason
    many = orjson.dumps({"type": "click", **{f"k{i}" * 50: i for i in range(5000)}})
    out = adm.admit_raw(many)
    assert isinstance(out, Rejection) and len(out.reason) < 1100


def test_item_profiles_are_bounded() -> None:
    adm = gate()
    genres = [f"g{i}" for i in range(20_000)]
    out = adm.admit_raw(_raw(type="item_profile", item_id="j", genres=genres))
    assert isinstance(out, Rejection) and out.kind == "invalid_event"
    assert "20000 genres" in out.reason and len(out.reason) < 200
    out = adm.admit_raw(_raw(type="item_profile", item_id="j", genres=["x" * 65]))
    assert isinstance(out, Rejection) and out.kind == "invalid_event"
    assert "j" not in adm.profiles.items


def test_profile_vocabularies_are_capped_to_other() -> None:
    adm = Admission(Limits(max_vocabulary=3), dedup_window=100, bot_events_per_minute=5)
    for i in range(10):
        adm.admit_raw(
            _raw(type="item_profile", event_id=f"i{i}", item_id=f"i{i}", genres=[f"g{i}", "Drama"])
        )
        adm.admit_raw(
            _raw(
                type="user_profile",
                event_id=f"u{i}",
                user_id=f"u{i}",
                gender=f"x{i}",
                occupation=f"job{i}",
            )
        )
    assert adm.counts.applied == 20
    items, users = adm.profiles.items, adm.profiles.users
    assert items["i0"]["genres"] == ("g0", "Drama") and items["i1"]["genres"] == ("g1", "Drama")
    assert items["i9"]["genres"] == ("(other)", "Drama")
    assert {u["gender"] for u in users.values()} == {"x0", "x1", "x2", "(other)"}
    assert {u["occupation"] for u in users.values()} == {"job0", "job1", "job2", "(other)"}
    features = set()
    for u in users.values():
        for it in items.values():
            features.update(EngagementModel.features(u, it, None))
    assert len(features) <= 4 + 4 + 4 + 3 * 4 * 4  # bounded by the vocabularies
