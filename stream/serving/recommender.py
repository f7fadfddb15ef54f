"""Recommendations and point predictions from a :class:`~stream.serving.state.ServingState`.

CONTRACT STUB (to be implemented): the signatures below are what the HTTP server and the
closed-loop simulation use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream.config import ServingConfig
from stream.events import Context
from stream.serving.state import ServingState

Policy = Literal["model", "explore", "popular", "random"]
POLICIES: tuple[str, ...] = ("model", "explore", "popular", "random")
Reason = Literal["personalized", "cold_start", "exploration", "popular", "random"]
UserKind = Literal["warm", "cold_start", "unknown"]


class UnknownItem(KeyError):
    """The item is not in the served state."""


class NotReady(RuntimeError):
    """No model state has been applied yet (no meta)."""


@dataclass(frozen=True)
class Recommended:
    item_id: str
    score: float  # the implicit model's preference in (0, 1) (popularity for cold items)
    reason: Reason
    position: int  # 0-based slot
    propensity: float  # probability that this policy put this item at this position


@dataclass(frozen=True)
class Recommendations:
    user_id: str
    user_kind: UserKind  # warm: has vectors; cold_start: profile only; unknown: neither
    policy: Policy
    items: list[Recommended]
    model_version: int
    state_age_seconds: float
    request_id: str  # unique per answer; events about this slate may quote it


@dataclass(frozen=True)
class Prediction:
    user_id: str
    item_id: str
    rating: float  # on the rating scale (clipped)
    click_probability: float
    model_version: int
    state_age_seconds: float


class Recommender:
    """Policies over one serving state.

    ``model``: top-K by the implicit model (ANN candidates, exact re-rank); ``explore``: the
    same with each slot replaced, with probability ``exploration``, by a uniformly random
    eligible item; ``popular``: most positive interactions; ``random``: uniform. A user with
    a profile but no vectors gets a vector predicted from similar users' (cold start); an
    unknown user the mean user. Items the user clicked or rated are excluded by default.
    Draws come from a generator seeded by ``config.seed``.
    """

    def __init__(self, state: ServingState, config: ServingConfig) -> None:
        raise NotImplementedError

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        policy: Policy = "explore",
        exclude_seen: bool = True,
        exploration: float | None = None,  # None: config.exploration
        context: Context | None = None,
    ) -> Recommendations:
        """Raise :class:`NotReady` before any state, ValueError on bad k/policy."""
        raise NotImplementedError

    def predict(self, user_id: str, item_id: str, context: Context | None = None) -> Prediction:
        """Raise :class:`UnknownItem` for an item not in the state, :class:`NotReady`."""
        raise NotImplementedError

    def exact_top_k(self, user_id: str, k: int, exclude_seen: bool = True) -> list[str]:
        """Top-K by brute force over every item (to measure the ANN's recall)."""
        raise NotImplementedError
