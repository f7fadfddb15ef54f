"""Typed feedback events: one pydantic model per event type.

Every event is one JSON object with a ``type`` discriminator and a ``schema_version``.
Validation limits (rating scale, dwell cap, sane timestamps, profile sizes) come from
:class:`stream.config.Limits`, passed as the validation context. Messages off the wire are
validated strictly (:mod:`stream.events.codec`): ``"4"`` or ``true`` is not a rating.

Ids are printable text: not empty, no control, format (zero-width, bidi) or non-ASCII space
characters, no space at either end, so two ids that look the same are the same.

"""

from __future__ import annotations

from time import time as _now
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo
from pydantic import field_validator as _field_validator

from stream.config import Limits

SCHEMA_VERSION: Final = 1
DEFAULT_LIMITS = Limits()

# One printable non-space character, then more, with single ASCII spaces allowed inside:
# \p{C} is control, format, private-use, surrogate and unassigned, \p{Z} every space.
# Checked by pydantic-core's Rust regex, so it costs next to nothing per id.
ID_PATTERN: Final = r"^[^\p{C}\p{Z}](?:[ ]*[^\p{C}\p{Z}])*$"
ID_RULE: Final = (
    "must be printable text without control, invisible or non-ASCII space characters, "
    "and without a space at either end"
)
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=ID_PATTERN)]


def _limits(info: ValidationInfo) -> Limits:
    ctx = info.context
    return ctx if isinstance(ctx, Limits) else DEFAULT_LIMITS


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
        # Once per message: _limits inlined, the clock bound at import.
        limits = info.context
        if not isinstance(limits, Limits):
            limits = DEFAULT_LIMITS
        if ts < limits.ts_min:
            raise ValueError(f"ts {ts} is before the earliest accepted time {limits.ts_min}")
        if ts > _now() + limits.ts_max_skew_seconds:
            raise ValueError(f"ts {ts} is in the future")
        return ts


class InteractionEvent(BaseEvent):
    """An event between one user and one item."""

    user_id: Id
    item_id: Id


class ShownEvent(InteractionEvent):
    """An item shown to a user: where, by which policy and with what probability.

    ``policy`` names what chose the item (``model``, ``explore``, ``popular``, ``random``,
    or any label of the caller's) and ``propensity`` the probability that this policy put
    this item at this position, so learning can correct for position and selection bias.
    """

    position: int | None = Field(default=None, ge=0, le=1_000_000)
    policy: str | None = Field(default=None, min_length=1, max_length=32)
    propensity: float | None = Field(default=None, gt=0, le=1)


class ImpressionEvent(ShownEvent):
    """An item was shown to a user and not clicked (an implicit negative)."""

    type: Literal["impression"] = "impression"


class ClickEvent(ShownEvent):
    """A user clicked an item that was shown (implies the impression)."""

    type: Literal["click"] = "click"


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

    @_field_validator("genres")
    @classmethod
    def _bounded(cls, genres: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        limits = _limits(info)
        if len(genres) > limits.max_genres_per_item:
            raise ValueError(
                f"{len(genres)} genres; at most {limits.max_genres_per_item} are accepted"
            )
        for genre in genres:
            if not genre or len(genre) > limits.max_label_length:
                raise ValueError(
                    f"genre of {len(genre)} chars; 1 to {limits.max_label_length} are accepted"
                )
        return genres


Event = Annotated[
    ImpressionEvent | ClickEvent | DwellEvent | RatingEvent | UserProfileEvent | ItemProfileEvent,
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
