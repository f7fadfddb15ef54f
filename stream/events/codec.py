"""The wire format of events: compact JSON in, validated typed events out.

>>> from stream.events.schema import RatingEvent
>>> e = RatingEvent(event_id="e1", user_id="u1", item_id="i1", ts=1.7e9, rating=4)
>>> raw = encode_event(e)
>>> decode_event(raw) == e
True
>>> decode_event(b'{"type": "rating", "event_id": "e2"}')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream.events.codec.InvalidEvent: ...user_id: Field required...
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from stream.config import Limits
from stream.events.schema import DEFAULT_LIMITS, EVENT_TYPES, BaseEvent, Event

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


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


def _reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in e["loc"][1:] or e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def decode_event(raw: bytes, limits: Limits | None = None) -> Event:
    """Parse and validate one message; raise :class:`InvalidEvent` with a clear reason."""
    try:
        return _ADAPTER.validate_json(raw, context=limits or DEFAULT_LIMITS)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            raise InvalidEvent(f"malformed JSON: {first['msg']}", kind="malformed_json") from None
        if first["type"] == "union_tag_invalid":
            tag = first.get("ctx", {}).get("tag", "?")
            raise InvalidEvent(
                f"unknown event type {tag!r}; expected one of {', '.join(EVENT_TYPES)}",
                kind="unknown_type",
            ) from None
        if first["type"] == "union_tag_not_found":
            raise InvalidEvent("missing event type field 'type'", kind="unknown_type") from None
        raise InvalidEvent(_reason(err), _type_of(raw)) from None


def _type_of(raw: bytes) -> str:
    """Best-effort type label for a message that failed validation (bounded values only)."""
    try:
        t = orjson.loads(raw).get("type")
    except Exception:
        return "invalid"
    return t if t in EVENT_TYPES else "invalid"


def encode_event(event: BaseEvent) -> bytes:
    """The wire bytes of an event (compact JSON, ``None`` fields left out)."""
    return event.model_dump_json(exclude_none=True, exclude_defaults=False).encode()


def event_from_dict(data: dict[str, Any], limits: Limits | None = None) -> Event:
    """Validate a Python dict as an event (used by file readers)."""
    try:
        return _ADAPTER.validate_python(data, context=limits or DEFAULT_LIMITS)
    except ValidationError as err:
        raise InvalidEvent(_reason(err), str(data.get("type", "invalid"))) from None
