"""The model-state topic's records: what serving needs of the live models, keyed by entity.

The consumer publishes (see :mod:`stream.serving.export`) and every ``serve`` process
follows (see :mod:`stream.serving.state`) one partition of records whose key names the
entity, so a compacted topic keeps the latest record of each:

============== =============================================================================
key            value
============== =============================================================================
``u:<id>``     :class:`UserState`: rating bias and vector, implicit vector, profile, seen items;
               no value (a tombstone, :class:`UserDeleted`): the user is gone (forgotten)
``i:<id>``     :class:`ItemState`: rating and implicit biases and vectors, content, popularity
``engagement`` :class:`EngagementState`: the click model's weights and intercept
``meta``       :class:`ModelMeta`: model version, global mean, sequence; published last
============== =============================================================================

One publication is a run of entity records followed by one ``meta``; a reader that has
applied a ``meta`` has applied everything published before it. A ``meta`` with
``snapshot=True`` closes a full snapshot (every entity of the publisher's partitions),
published at each checkpoint and swap. Every consumer of a group publishes its partitions'
users to the same topic (items, click model and meta from its lowest partition's learner): a
snapshot adds to what readers hold and never replaces it, a user leaves only by a tombstone,
and the last ``meta`` wins whoever published it. Values are JSON (``orjson``): floats keep
their 64 bits, so the served score equals the consumer's.

>>> u = UserState("u1", rating_bias=0.5, rating_vector=(0.1, -0.2), implicit_vector=(0.3, 0.0),
...               profile={"age": 30, "gender": "F", "occupation": None}, seen=("i1",))
>>> key, value = encode_record(u)
>>> key
b'u:u1'
>>> decode_record(key, value) == u
True
>>> encode_record(UserDeleted("u1")), decode_record(b"u:u1", None)
((b'u:u1', None), UserDeleted(user_id='u1'))
>>> decode_record(b"x:1", b"{}")
Traceback (most recent call last):
...
stream.serving.records.StateRecordError: unknown model-state key b'x:1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "ENGAGEMENT_KEY",
    "META_KEY",
    "EngagementState",
    "ItemState",
    "ModelMeta",
    "StateRecord",
    "StateRecordError",
    "UserDeleted",
    "UserState",
    "decode_record",
    "encode_record",
]

ENGAGEMENT_KEY = b"engagement"
META_KEY = b"meta"
_USER, _ITEM = b"u:", b"i:"


class StateRecordError(ValueError):
    """A model-state message that cannot be decoded (the reader logs and skips it)."""


@dataclass(frozen=True)
class UserState:
    """What serving knows of a user. Vectors are ``None`` until the model has the user
    (a user with only a profile is a cold start)."""

    user_id: str
    rating_bias: float | None = None
    rating_vector: tuple[float, ...] | None = None
    implicit_vector: tuple[float, ...] | None = None
    # age / gender / occupation, as the user_profile event gave them (None: no profile).
    profile: dict[str, Any] | None = None
    # Items the user clicked or rated, excluded from recommendations by default.
    seen: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserDeleted:
    """A user with no state left (forgotten): published as a tombstone, a key without a
    value, so a compacted topic drops every record of the user."""

    user_id: str


@dataclass(frozen=True)
class ItemState:
    """What serving knows of an item (vectors ``None``: known by its content only)."""

    item_id: str
    rating_bias: float | None = None
    rating_vector: tuple[float, ...] | None = None
    implicit_bias: float | None = None
    implicit_vector: tuple[float, ...] | None = None
    # genres / year (and title when known), as the item_profile event gave them.
    profile: dict[str, Any] | None = None
    # Positive interactions (clicks and ratings) so far: the popularity of the item.
    interactions: int = 0


@dataclass(frozen=True)
class EngagementState:
    """The click model: ``p = sigmoid(intercept + sum(weights[f] * x[f]))`` over the
    features of :meth:`stream.models.click.EngagementModel.features` plus ``cf_logit``."""

    weights: dict[str, float] = field(default_factory=dict)
    intercept: float = 0.0


@dataclass(frozen=True)
class ModelMeta:
    """Closes one publication: which model, how far the consumer got, when."""

    version: int  # the registry version the models descend from (0: never swapped)
    sequence: int  # publications so far by this consumer process, 1, 2, ...
    snapshot: bool  # True when this publication holds every entity of the process's partitions
    published_at: float  # wall clock (epoch seconds) when it was published
    consumed: int  # messages the consumer process had consumed (all its partitions)
    global_mean: float  # the rating model's global mean
    rating_min: float
    rating_max: float
    last_event_ts: float | None = None  # event time of the newest applied event


StateRecord = UserState | UserDeleted | ItemState | EngagementState | ModelMeta


def _tuple(v: Any) -> tuple[float, ...] | None:
    return None if v is None else tuple(float(x) for x in v)


def encode_record(record: StateRecord) -> tuple[bytes, bytes | None]:
    """The (key, value) of a record (no value: a tombstone).

    orjson serializes the dataclass itself (``asdict`` would first deep-copy every vector,
    50 times slower; the consumer encodes every changed entity every second).
    """
    kind = type(record)
    if kind is UserDeleted:
        return _USER + record.user_id.encode(), None  # type: ignore[union-attr]
    if kind is UserState:
        key = _USER + record.user_id.encode()  # type: ignore[union-attr]
    elif kind is ItemState:
        key = _ITEM + record.item_id.encode()  # type: ignore[union-attr]
    elif kind is EngagementState:
        key = ENGAGEMENT_KEY
    elif kind is ModelMeta:
        key = META_KEY
    else:
        raise TypeError(f"not a model-state record: {record!r}")
    return key, orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_record(key: bytes | None, value: bytes | None) -> StateRecord:
    """The record of a (key, value) pair; :class:`StateRecordError` if it is not one."""
    if not key:
        raise StateRecordError("model-state message without a key")
    if value is None:
        if key.startswith(_USER):
            return UserDeleted(key[len(_USER) :].decode())
        raise StateRecordError(f"model-state message {key!r} without a value")
    try:
        data = orjson.loads(value)
        if key.startswith(_USER):
            data["rating_vector"] = _tuple(data.get("rating_vector"))
            data["implicit_vector"] = _tuple(data.get("implicit_vector"))
            data["seen"] = tuple(data.get("seen", ()))
            return UserState(**data)
        if key.startswith(_ITEM):
            data["rating_vector"] = _tuple(data.get("rating_vector"))
            data["implicit_vector"] = _tuple(data.get("implicit_vector"))
            return ItemState(**data)
        if key == ENGAGEMENT_KEY:
            return EngagementState(**data)
        if key == META_KEY:
            return ModelMeta(**data)
    except (orjson.JSONDecodeError, TypeError, AttributeError) as err:
        raise StateRecordError(f"invalid model-state record {key!r}: {err}") from None
    raise StateRecordError(f"unknown model-state key {key!r}")
