"""The wire format of events: compact JSON in, validated typed events out.

Validation off the wire is strict: a JSON string or boolean is not a number, a float is not
an integer (an integer is a valid float: ``"rating": 4``). Reasons quote at most a bounded
part of any offending value (:mod:`stream.events.text`), so a reason stays short whatever
the message.

>>> from stream.events.schema import RatingEvent
>>> e = RatingEvent(event_id="e1", user_id="u1", item_id="i1", ts=1.7e9, rating=4)
>>> raw = encode_event(e)
>>> decode_event(raw) == e
True
>>> decode_event(b'{"type": "rating", "event_id": "e2"}')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream.events.codec.InvalidEvent: ...user_id: Field required...
>>> decode_event(b'{"type":"rating","event_id":"e3","user_id":"u1","item_id":"i1",'
...              b'"ts":1.7e9,"rating":"4"}')
Traceback (most recent call last):
...
stream.events.codec.InvalidEvent: rating: Input should be a valid number
>>> decode_event(b'{"type":"click","event_id":" ","user_id":"u1","item_id":"i1","ts":1.7e9}')
Traceback (most recent call last):
...
stream.events.codec.InvalidEvent: event_id: must be printable text without control, ...
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from stream.config import Limits
from stream.events.schema import DEFAULT_LIMITS, EVENT_TYPES, ID_RULE, BaseEvent, Event
from stream.events.text import clip, quote

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
# The hot path calls pydantic-core's validator itself: TypeAdapter.validate_json only adds a
# Python frame that passes the same arguments on (its other options left at their defaults).
_VALIDATE_JSON = _ADAPTER.validator.validate_json


class InvalidEvent(ValueError):
    """A message that is not a valid event.

    ``reason`` is a one-line explanation, ``kind`` a bounded label for metrics
    (``malformed_json``, ``unknown_type``, ``invalid_event``) and ``event_type`` the declared
    type when it is a known one, else ``invalid``.
    """

    def __init__(self, reason: str, event_type: str = "invalid", kind: str = "invalid_event"):
        super().__init__(reason)
        self.reason = reason
        self.event_type = event_type
        self.kind = kind


# Errors a reason lists (a message with thousands of bad fields has thousands of errors).
_REASON_ERRORS = 5


def _reason(err: ValidationError) -> str:
    errors = err.errors(include_url=False, include_input=False)
    parts = []
    for e in errors[:_REASON_ERRORS]:
        # A location names the message's own keys, which may be anything: bound each.
        loc = ".".join(
            str(p) if isinstance(p, int) or len(p) <= 64 else quote(p, 64)
            for p in (e["loc"][1:] or e["loc"])
        )
        msg = ID_RULE if e["type"] == "string_pattern_mismatch" else e["msg"]
        parts.append(f"{loc}: {msg}" if loc else msg)
    if len(errors) > _REASON_ERRORS:
        parts.append(f"and {len(errors) - _REASON_ERRORS} more errors")
    return clip("; ".join(parts))


def decode_event(raw: bytes, limits: Limits | None = None) -> Event:
    """Parse and validate one message; raise :class:`InvalidEvent` with a clear reason."""
    try:
        return _VALIDATE_JSON(raw, strict=True, context=limits or DEFAULT_LIMITS)  # type: ignore[no-any-return]
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            raise InvalidEvent(f"malformed JSON: {first['msg']}", kind="malformed_json") from None
        if first["type"] == "union_tag_invalid":
            tag = first.get("ctx", {}).get("tag", "?")
            raise InvalidEvent(
                f"unknown event type {quote(tag)}; expected one of {', '.join(EVENT_TYPES)}",
                kind="unknown_type",
            ) from None
        if first["type"] == "union_tag_not_found":
            raise InvalidEvent("missing event type field 'type'", kind="unknown_type") from None
        raise InvalidEvent(_reason(err), _type_of(raw)) from None


def _type_of(raw: bytes) -> str:
    """Best-effort type label for a message that failed validation (bounded values only)."""
    try:
        t = orjson.loads(raw).get("type")
        return t if t in EVENT_TYPES else "invalid"
    except Exception:  # not JSON, not an object, an unhashable type
        return "invalid"


def encode_event(event: BaseEvent) -> bytes:
    """The wire bytes of an event (compact JSON, ``None`` fields left out)."""
    return event.model_dump_json(exclude_none=True, exclude_defaults=False).encode()


def event_from_dict(data: dict[str, Any], limits: Limits | None = None) -> Event:
    """Validate a Python dict as an event (used by file readers)."""
    try:
        return _ADAPTER.validate_python(data, context=limits or DEFAULT_LIMITS)
    except ValidationError as err:
        t = data.get("type")
        raise InvalidEvent(_reason(err), t if t in EVENT_TYPES else "invalid") from None
