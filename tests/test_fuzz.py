"""Fuzz: thousands of malformed messages of every kind mixed into a good stream, on a real broker.

Every malformed message must end on the dead-letter topic exactly once, with a reason (and
its size when cut), the consumer must read to the end, and the good events must leave the
learner exactly as a run over the good stream alone does.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from consumers.loop import FeedbackConsumer
from producers.simulator import Simulator, SimulatorConfig
from stream.config import Settings
from stream.events import encode_event
from stream.learner import FeedbackLearner
from tests.helpers import publish_raw, read_topic

pytestmark = pytest.mark.integration

SEED = 20261124
GOOD_EVENTS = 8_000
BAD_MESSAGES = 3_000
INVISIBLE_IDS = ["", " ", "  ", "\t", "\n", "\u0000", "\u200b", "u\u200b", "\ufeff", "\u202e1",
                 " u00001", "u00001 ", "\u00a0", "\u3000", "\u2060", "\x7f"]  # fmt: skip


def _dumps(value: Any) -> bytes:
    """JSON with what orjson refuses: ints beyond 64 bits, lone surrogates (escaped)."""
    return json.dumps(value, separators=(",", ":")).encode()


class Fuzzer:
    """Malformed messages of many kinds, drawn from a seeded generator and good events."""

    def __init__(self, rng: random.Random, good: list[dict[str, Any]]) -> None:
        self.rng = rng
        self.good = good
        self.interactions = [e for e in good if "user_id" in e and "item_id" in e]
        self.kinds: list[Callable[[], bytes | None]] = [
            self.truncated, self.wrong_type, self.lax_value, self.invisible_id,
            self.huge_string, self.unknown_type, self.null, self.garbage, self.deep,
            self.out_of_range, self.non_finite, self.huge_profile, self.not_an_object,
            self.missing_or_extra, self.unknown_ids,
        ]  # fmt: skip

    def message(self) -> bytes | None:
        return self.rng.choice(self.kinds)()

    def _event(self) -> dict[str, Any]:
        """A good interaction with an id of its own: were a malformed message accepted, it
        would count as applied, not hide as a duplicate."""
        return {**self.rng.choice(self.interactions), "event_id": f"fz-{self.rng.random()}"}

    def truncated(self) -> bytes:
        raw = _dumps(self._event())
        return raw[: self.rng.randrange(1, len(raw) - 1)]

    def wrong_type(self) -> bytes:
        e = self._event()
        field = self.rng.choice(["event_id", "user_id", "item_id", "ts"])
        e[field] = self.rng.choice([[1], {"a": 1}, None, True, 7 if field != "ts" else "x"])
        return _dumps(e)

    def lax_value(self) -> bytes:
        e = self._event()
        choice = self.rng.randrange(6)
        if choice == 0:
            e.update(type="rating", rating=self.rng.choice(["4", "3.5", True, False]))
        elif choice == 1:
            e["ts"] = self.rng.choice([str(e["ts"]), True])
        elif choice == 2:
            e.update(type="dwell", seconds=self.rng.choice(["30", True]))
        elif choice == 3:
            e.update(type="impression", position=self.rng.choice(["1", 1.0, True]))
        elif choice == 4:
            e["context"] = {"hour": self.rng.choice(["3", 3.0, True])}
        else:
            e["user_id"] = self.rng.choice([1, 1.5, True])
        return _dumps(e)

    def invisible_id(self) -> bytes:
        e = self._event()
        e[self.rng.choice(["event_id", "user_id", "item_id"])] = self.rng.choice(INVISIBLE_IDS)
        return _dumps(e)

    def huge_string(self) -> bytes:
        e = self._event()
        size = self.rng.choice([257, 5000, 300_000])
        field = self.rng.choice(["event_id", "user_id", "item_id", "policy", "session_id"])
        if field == "session_id":
            e["context"] = {"session_id": "s" * size}
        else:
            e[field] = "x" * size
        return _dumps(e)

    def multi_mb(self) -> bytes:
        e = self._event()
        e[self.rng.choice(["user_id", "note"])] = "m" * self.rng.randrange(1_500_000, 3_000_000)
        return _dumps(e)

    def unknown_type(self) -> bytes:
        e = self._event()
        e["type"] = self.rng.choice(["teleport", "RATING", "", "t" * 100_000, 5, None])
        return _dumps(e)

    def null(self) -> bytes | None:
        if self.rng.random() < 0.5:
            return None  # a message without a value
        e = self._event()
        e[self.rng.choice(["event_id", "user_id", "ts"])] = None
        return self.rng.choice([b"null", b"", _dumps(e)])

    def garbage(self) -> bytes:
        raw = self.rng.randbytes(self.rng.randrange(1, 400))
        return raw if raw[:1] not in (b"{", b"[") else b"\xff" + raw

    def deep(self) -> bytes:
        depth = self.rng.choice([300, 5000, 50_000])
        if self.rng.random() < 0.5:
            return b"[" * depth + b"]" * depth
        e = self._event()
        nested = b'{"a":' * depth + b"1" + b"}" * depth
        return _dumps(e)[:-1] + b',"context":' + nested + b"}"

    def out_of_range(self) -> bytes:
        e = self._event()
        choice = self.rng.randrange(6)
        if choice == 0:
            e.update(type="rating", rating=self.rng.choice([11, 0, -1, 1e308, 4.5e300]))
        elif choice == 1:
            e["ts"] = self.rng.choice([-1, 0, 1e18, 10**30])
        elif choice == 2:
            e.update(type="dwell", seconds=self.rng.choice([-1, 1e9]))
        elif choice == 3:
            e["context"] = {"hour": self.rng.choice([24, -1, 10**30])}
        elif choice == 4:
            e.update(type="click", propensity=self.rng.choice([0, 2, -0.5]))
        else:
            return _dumps(e)[:-1] + b',"position":' + b"9" * 400 + b"}"
        return _dumps(e)

    def non_finite(self) -> bytes:
        e = self._event()
        e.update(type="rating", rating=4)
        raw = _dumps(e)
        field = self.rng.choice([b'"rating":4', b'"ts":' + _dumps(e["ts"])])
        literal = self.rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
        name = field.split(b":")[0]
        return raw.replace(field, name + b":" + literal)

    def huge_profile(self) -> bytes:
        item = self.rng.choice([e for e in self.good if e["type"] == "item_profile"])
        n = self.rng.choice([33, 1000, 20_000])
        genres = [f"genre-{i}" for i in range(n)]
        if self.rng.random() < 0.3:
            genres = ["g" * self.rng.choice([65, 10_000])]
        return _dumps({**item, "event_id": f"fz{self.rng.random()}", "genres": genres})

    def not_an_object(self) -> bytes:
        return self.rng.choice([b"[]", b"1", b'"rating"', b"true", b"{}", b"[{}]", b"  "])

    def missing_or_extra(self) -> bytes:
        e = self._event()
        if self.rng.random() < 0.5:
            del e[self.rng.choice(["event_id", "user_id", "item_id", "ts"])]
        else:
            e[self.rng.choice(["extra", "k" * 10_000, "\ud800"])] = 1
        return _dumps(e)

    def unknown_ids(self) -> bytes:
        e = self._event()
        e[self.rng.choice(["user_id", "item_id"])] = f"nobody-{self.rng.randrange(10**6)}"
        e["event_id"] = f"fz-unknown-{self.rng.random()}"
        return _dumps(e)

    def conflicting_duplicate(self, original: dict[str, Any]) -> bytes:
        """``original``'s event id with other content (published after it)."""
        return _dumps({**original, "ts": original["ts"] + 1.0})


def test_fuzzed_stream_is_dead_lettered_exactly_and_good_events_all_applied(
    settings: Settings,
) -> None:
    rng = random.Random(SEED)
    sim = Simulator(SimulatorConfig(n_users=200, n_items=150, seed=SEED % 1000, bot_share=0.05))
    good_events = [*sim.profiles(), *sim.events(GOOD_EVENTS)]
    good = [encode_event(e) for e in good_events]
    dicts = [orjson.loads(raw) for raw in good]
    fuzz = Fuzzer(rng, dicts)

    # Bad messages at random places after the profiles; every 10th re-uses an earlier good
    # event's id with other content, every 500th is several MB.
    n_profiles = sum(1 for d in dicts if d["type"].endswith("_profile"))
    stream: list[bytes | None] = list(good)
    bad_positions = sorted(rng.sample(range(n_profiles, len(good)), BAD_MESSAGES))
    for shift, position in enumerate(bad_positions):
        if shift % 10 == 0:
            original = dicts[rng.randrange(n_profiles, position)]
            message = fuzz.conflicting_duplicate(original)
        elif shift % 500 == 1:
            message = fuzz.multi_mb()
        else:
            message = fuzz.message()
        stream.insert(position + shift, message)
    bad_at = {position + shift for shift, position in enumerate(bad_positions)}

    offsets = publish_raw(settings, stream)
    assert offsets == list(range(len(stream)))  # a fresh topic, one partition, in order
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    consumer.stop_at({0: len(stream)})
    result = consumer.run()  # the consumer did not crash: it returned
    c = result.learner.counts
    assert result.messages == c.consumed == len(stream)
    assert c.reconciles()

    # Every malformed message was rejected; every good one met the fate it meets alone.
    reference = FeedbackLearner(settings)
    for raw in good:
        assert reference.process(raw) is None
    ref = reference.counts
    assert ref.dead_lettered == 0
    assert c.dead_lettered == BAD_MESSAGES
    assert (c.applied, c.filtered, c.duplicates) == (ref.applied, ref.filtered, ref.duplicates)
    assert c.dead_letters_by_kind["conflicting_duplicate"] == BAD_MESSAGES // 10
    learner = result.learner
    assert learner.models.state_equal(reference.models)
    assert learner.interactions == reference.interactions
    assert learner.scores() == reference.scores()
    assert learner.users == reference.users and learner.items == reference.items

    # On the dead-letter topic: each malformed message exactly once, with why, and its size
    # when it was cut.
    letters = read_topic(settings, settings.topics.dead_letters)
    sources = Counter(int(dict(m.headers())["source.offset"]) for m in letters)
    assert set(sources) == bad_at and set(sources.values()) == {1}
    max_bytes = settings.consumer.dead_letter_max_bytes
    truncated = 0
    for letter in letters:
        headers = dict(letter.headers())
        source = stream[int(headers["source.offset"])]
        assert headers["error.kind"] and headers["error.reason"]
        assert len(headers["error.reason"]) <= 1100
        if source is None:
            assert letter.value() is None and headers["source.value"] == b"null"
        elif "source.truncated" in headers:
            truncated += 1
            assert int(headers["source.value.bytes"]) == len(source) > max_bytes // 2
            assert source.startswith(letter.value() or b"")
        else:
            assert letter.value() == source
    assert truncated >= BAD_MESSAGES // 500  # the multi-MB ones
    kinds = Counter(dict(m.headers())["error.kind"].decode() for m in letters)
    assert kinds == Counter(c.dead_letters_by_kind)
