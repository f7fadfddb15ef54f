"""Typed feedback events and their wire format.

Every event is one JSON object with a ``type`` discriminator and a ``schema_version``.
Validation limits (rating scale, dwell cap, sane timestamps) come from
:class:`stream.config.Limits`, passed as the validation context.

>>> e = RatingEvent(event_id="e1", user_id="u1", item_id="i1", ts=1.7e9, rating=4)
>>> raw = encode_event(e)
>>> decode_event(raw) == e
True
>>> decode_event(b'{"type": "rating", "event_id": "e2"}')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream.events.InvalidEvent: ...user_id: Field required...
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo
from pydantic import field_validator as _field_validator

from stream.config import Limits

SCHEMA_VERSION: Final = 1
_DEFAULT_LIMITS = Limits()

Id = Annotated[str, Field(min_length=1, max_length=256)]


def _limits(info: ValidationInfo) -> Limits:
    ctx = info.context
    return ctx if isinstance(ctx, Limits) else _DEFAULT_LIMITS


class Context(BaseModel):
    """Where and when an event happened (all optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["mobile", "desktop", "tablet", "tv"] | None = None
    hour: int | None = Field(default=None, ge=0, le=23)
    weekday: int | None = Field(default=None, ge=0, le=6)
    session_id: str | None = Field(default=None, max_length=256)


class BaseEvent(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    ts: float
    context: Context | None = None

    @_field_validator("ts")
    @classmethod
    def _ts_is_sane(cls, ts: float, info: ValidationInfo) -> float:
        limits = _limits(info)
        if ts < limits.ts_min:
            raise ValueError(f"ts {ts} is before the earliest accepted time {limits.ts_min}")
        if ts > time.time() + limits.ts_max_skew_seconds:
            raise ValueError(f"ts {ts} is in the future")
        return ts


class InteractionEvent(BaseEvent):
    """An event between one user and one item."""

    user_id: Id
    item_id: Id


class ImpressionEvent(InteractionEvent):
    """An item was shown to a user and not clicked (an implicit negative)."""

    type: Literal["impression"] = "impression"
    position: int | None = Field(default=None, ge=0)


class ClickEvent(InteractionEvent):
    """A user clicked an item that was shown (implies the impression)."""

    type: Literal["click"] = "click"
    position: int | None = Field(default=None, ge=0)


class DwellEvent(InteractionEvent):
    """Seconds a user spent on an item after opening it."""

    type: Literal["dwell"] = "dwell"
    seconds: float = Field(ge=0)

    @_field_validator("seconds")
    @classmethod
    def _capped(cls, seconds: float, info: ValidationInfo) -> float:
        cap = _limits(info).dwell_cap_seconds
        if seconds > cap:
            raise ValueError(f"dwell {seconds}s exceeds the cap of {cap}s")
        return seconds


class RatingEvent(InteractionEvent):
    """An explicit rating on the configured scale."""

    type: Literal["rating"] = "rating"
    rating: float

    @_field_validator("rating")
    @classmethod
    def _on_scale(cls, rating: float, info: ValidationInfo) -> float:
        limits = _limits(info)
        if not limits.rating_min <= rating <= limits.rating_max:
            raise ValueError(
                f"rating {rating} is outside the scale [{limits.rating_min}, {limits.rating_max}]"
            )
        return rating


class UserProfileEvent(BaseEvent):
    """Demographics of a user; announces the user to the consumers."""

    type: Literal["user_profile"] = "user_profile"
    user_id: Id
    age: int | None = Field(default=None, ge=1, le=120)
    gender: str | None = Field(default=None, max_length=32)
    occupation: str | None = Field(default=None, max_length=64)


class ItemProfileEvent(BaseEvent):
    """Content of an item; announces the item to the consumers."""

    type: Literal["item_profile"] = "item_profile"
    item_id: Id
    title: str | None = Field(default=None, max_length=512)
    genres: tuple[str, ...] = ()
    year: int | None = Field(default=None, ge=1800, le=2100)


Event = Annotated[
    ImpressionEvent
    | ClickEvent
    | DwellEvent
    | RatingEvent
    | UserProfileEvent
    | ItemProfileEvent,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = (
    "impression",
    "click",
    "dwell",
    "rating",
    "user_profile",
    "item_profile",
)

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
        return _ADAPTER.validate_json(raw, context=limits or _DEFAULT_LIMITS)
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
        return _ADAPTER.validate_python(data, context=limits or _DEFAULT_LIMITS)
    except ValidationError as err:
        raise InvalidEvent(_reason(err), str(data.get("type", "invalid"))) from None
