"""Messages on the control topic: retrain requests, published models, activations.

The consumer publishes :class:`RetrainRequest` when its policy decides; the retrainer answers
with :class:`ModelPublished` (or :class:`RetrainFailed`); ``feedback-loop retrain`` publishes a
:class:`RetrainTrigger`, ``feedback-loop rollback`` a :class:`ModelActivated` and
``feedback-loop forget`` a :class:`ForgetUser`.

>>> raw = encode_control(RetrainTrigger(reason="manual"))
>>> decode_control(raw).type
'retrain_trigger'
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class ControlMessageBase(BaseModel):
    """Fields of every control message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ts: float = Field(default_factory=time.time)


class RetrainTrigger(ControlMessageBase):
    """Ask the consumers to request a retrain now (manual trigger)."""

    type: Literal["retrain_trigger"] = "retrain_trigger"
    reason: str = "manual"


class RetrainRequest(ControlMessageBase):
    """A consumer's decision: rebuild the models from the events before ``offsets``."""

    type: Literal["retrain_request"] = "retrain_request"
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    event_index: int
    offsets: dict[int, int]  # events partition -> next offset covered by the history
    reason: str
    signals: tuple[str, ...] = ()
    champion: dict[str, float] | None = None  # HoldoutLosses of the live models
    # The consumer's forgotten users (ForgottenUsers.as_dict: salt and digests), left out
    # of the history the retrainer trains on.
    forgotten: dict[str, Any] | None = None


class ModelPublished(ControlMessageBase):
    """The retrainer's answer: a new registry version, accepted or not."""

    type: Literal["model_published"] = "model_published"
    request_id: str
    version: int
    accepted: bool
    offsets: dict[int, int]
    event_index: int
    outcome: dict[str, Any]


class RetrainFailed(ControlMessageBase):
    type: Literal["retrain_failed"] = "retrain_failed"
    request_id: str
    error: str


class ModelActivated(ControlMessageBase):
    """Make consumers load this registry version (e.g. a rollback)."""

    type: Literal["model_activated"] = "model_activated"
    version: int
    reason: str = "rollback"


class ForgetUser(ControlMessageBase):
    """Erase a user (a deletion request): consumers purge the user's state and filter the
    user's events from then on."""

    type: Literal["forget_user"] = "forget_user"
    user_id: str = Field(min_length=1)


ControlMessage = Annotated[
    RetrainTrigger | RetrainRequest | ModelPublished | RetrainFailed | ModelActivated | ForgetUser,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)


def encode_control(message: ControlMessageBase) -> bytes:
    return message.model_dump_json().encode()


def decode_control(raw: bytes) -> ControlMessage:
    return _ADAPTER.validate_json(raw)
