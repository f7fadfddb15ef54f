"""Oversized, empty and valueless messages on a real broker: dead-lettered, the stream goes on."""

from __future__ import annotations

import orjson
import pytest

from consumers.loop import FeedbackConsumer
from producers.simulator import Simulator, SimulatorConfig
from stream.config import Settings
from stream.events import encode_event
from tests.helpers import publish_raw, read_topic

pytestmark = pytest.mark.integration


def test_oversized_and_null_messages_are_dead_lettered_and_the_stream_goes_on(
    settings: Settings,
) -> None:
    sim = Simulator(SimulatorConfig(n_users=100, n_items=80, seed=11, bot_share=0.0))
    good = [encode_event(e) for e in [*sim.profiles(), *sim.events(3000)]]
    huge_type = orjson.dumps({"type": "t" * 600_000, "event_id": "x1"})  # fits whole
    near_limit = orjson.dumps({"type": "n" * 950_000, "event_id": "x2"})  # cut to fit
    five_mb = orjson.dumps(
        {"type": "rating", "event_id": "x3", "user_id": "u00001", "item_id": "i00001",
         "ts": 1.7e9, "rating": 4, "note": "z" * 5_000_000}
    )  # fmt: skip
    bad: list[bytes | None] = [huge_type, near_limit, five_mb, None, b""]
    stream: list[bytes | None] = list(good)
    for i, message in enumerate(bad):
        stream.insert(300 + i * 500, message)
    offsets = publish_raw(settings, stream)
    bad_at = {offsets[i]: m for i, m in enumerate(stream) if m in bad or m is None}
    assert len(bad_at) == len(bad)

    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    consumer.stop_at({0: offsets[-1] + 1})
    result = consumer.run()
    c = result.learner.counts
    assert c.consumed == len(stream) and c.reconciles()
    assert c.dead_letters_by_kind == {
        "unknown_type": 2,
        "oversized": 1,
        "null_value": 1,
        "invalid_event": 1,
    }
    # Nothing but the bad messages was rejected: the good stream was applied to its end.
    assert c.applied + c.duplicates + c.filtered == len(good)

    letters = read_topic(settings, settings.topics.dead_letters)
    assert len(letters) == len(bad)
    by_offset = {int(dict(m.headers())["source.offset"]): m for m in letters}
    assert by_offset.keys() == bad_at.keys()
    for offset, letter in by_offset.items():
        source = bad_at[offset]
        headers = dict(letter.headers())
        reason = headers["error.reason"].decode()
        assert reason and len(reason) <= 1100
        assert headers["source.topic"].decode() == settings.topics.events
        assert headers["source.partition"] == b"0"
        if source is None:
            assert letter.value() is None and headers["source.value"] == b"null"
            continue
        assert "source.value" not in headers
        if len(source) <= settings.consumer.dead_letter_max_bytes - 2000:
            assert letter.value() == source and "source.truncated" not in headers
        else:
            value = letter.value() or b""
            assert headers["source.truncated"] == b"true"
            assert int(headers["source.value.bytes"]) == len(source)
            assert 0 < len(value) <= settings.consumer.dead_letter_max_bytes
            assert source.startswith(value)
    reasons = {dict(m.headers())["error.kind"]: dict(m.headers())["error.reason"] for m in letters}
    assert (
        b"600000 chars" in reasons[b"unknown_type"] or b"950000 chars" in reasons[b"unknown_type"]
    )
    assert str(len(five_mb)).encode() in reasons[b"oversized"]
