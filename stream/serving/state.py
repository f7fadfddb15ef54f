"""A server's copy of the live models, built from the model-state records.

CONTRACT STUB (to be implemented): the signatures below are what the HTTP server and the
closed-loop simulation use.
"""

from __future__ import annotations

import threading

from stream.serving.records import EngagementState, ItemState, ModelMeta, StateRecord, UserState


class ServingState:
    """Users, items (rows of numpy arrays, plus the ANN index), the click model and the meta.

    Thread safety: one follower thread calls :meth:`apply_raw` / :meth:`apply`; request
    handlers read through :class:`stream.serving.recommender.Recommender`, which holds
    ``lock`` while it reads. ``version_changed`` style readers can poll ``meta``.
    """

    lock: threading.RLock
    meta: ModelMeta | None  # the last applied meta (None: nothing published yet)
    engagement: EngagementState
    records_applied: int
    records_invalid: int  # undecodable records (logged and skipped)

    def __init__(self, candidates: int = 100) -> None:
        raise NotImplementedError

    def apply_raw(self, key: bytes | None, value: bytes | None) -> None:
        """Decode and apply one message (an invalid one is counted, logged and skipped)."""
        raise NotImplementedError

    def apply(self, record: StateRecord) -> None:
        raise NotImplementedError

    def user(self, user_id: str) -> UserState | None:
        raise NotImplementedError

    def item(self, item_id: str) -> ItemState | None:
        raise NotImplementedError

    @property
    def n_users(self) -> int:
        raise NotImplementedError

    @property
    def n_items(self) -> int:
        raise NotImplementedError

    def item_ids(self) -> list[str]:
        raise NotImplementedError

    def age_seconds(self, now: float | None = None) -> float | None:
        """Seconds since the last applied meta was published (None: nothing yet)."""
        raise NotImplementedError
