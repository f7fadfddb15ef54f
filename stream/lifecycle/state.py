"""The retrain state machine of one learner: idle -> requested -> swapping -> idle.

One retrain at a time. The transitions, each a method named after its event::

    idle       --request-->   requested   (a retrain request was published)
    requested  --accept-->    swapping    (the retrainer's version will be swapped in)
    requested  --reject-->    idle        (the challenger lost on the hold-out)
    requested  --fail-->      idle        (the retrainer reported an error)
    requested  --time_out-->  idle        (no answer in time; a late one is ignored)
    swapping   --abandon-->   idle        (the accepted version could not be loaded)
    any        --swapped-->   idle        (new models are live)

A swap is allowed from every phase: besides the accepted version, a rollback or another
consumer's version can land at any time, and new models end whatever retrain was under way
(its answer is still recorded when it comes). Any other event raises
:class:`InvalidTransition`, so a lifecycle that loses track of its retrain fails loudly
instead of waiting forever. Answers name their request: one for another request (another
consumer's, or one from before a restore) is not a transition of this machine.

>>> from stream.events import RetrainRequest
>>> state = RetrainState()
>>> state.request(RetrainRequest(request_id="r1", event_index=9, offsets={0: 9}, reason="x"))
>>> state.phase, state.busy, state.awaits("r1"), state.awaits("r2")
('requested', True, True, False)
>>> state.accept("r1", version=3); state.phase, state.version
('swapping', 3)
>>> state.swapped(); state.phase, state.outstanding
('idle', None)
>>> state.reject("r1")
Traceback (most recent call last):
...
stream.lifecycle.state.InvalidTransition: cannot reject retrain r1 while idle
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from stream.events import RetrainRequest

__all__ = ["InvalidTransition", "Phase", "RetrainState"]

Phase = Literal["idle", "requested", "swapping"]


class InvalidTransition(RuntimeError):
    """An event the retrain state machine does not accept in its current phase."""


@dataclass
class RetrainState:
    """Where the learner's one retrain stands, and the request it is about."""

    phase: Phase = "idle"
    #: The request in flight (requested or swapping), None when idle.
    outstanding: RetrainRequest | None = None
    #: The accepted version awaiting its swap (swapping only).
    version: int | None = None
    #: Wall-clock time of the request (requested and swapping), for the answer's timeout.
    requested_at: float | None = None

    @property
    def busy(self) -> bool:
        """A retrain is in progress: no other may start."""
        return self.phase != "idle"

    def awaits(self, request_id: str) -> bool:
        """Whether the retrainer's answer to ``request_id`` is what this machine waits for."""
        return (
            self.phase == "requested"
            and self.outstanding is not None
            and self.outstanding.request_id == request_id
        )

    # -- transitions --------------------------------------------------------------------------
    def request(self, request: RetrainRequest) -> None:
        """idle -> requested."""
        if self.phase != "idle":
            raise InvalidTransition(
                f"cannot request retrain {request.request_id} while {self.phase} ({self._about()})"
            )
        self.phase, self.outstanding, self.version = "requested", request, None
        self.requested_at = time.time()

    def accept(self, request_id: str, version: int) -> None:
        """requested -> swapping: ``version`` is to be swapped in."""
        self._answer("accept", request_id)
        self.phase, self.version = "swapping", version

    def reject(self, request_id: str) -> None:
        """requested -> idle: the challenger was not better than the live models."""
        self._answer("reject", request_id)
        self._idle()

    def fail(self, request_id: str) -> None:
        """requested -> idle: the retrain failed."""
        self._answer("fail", request_id)
        self._idle()

    def time_out(self, request_id: str) -> None:
        """requested -> idle: no answer came in time."""
        self._answer("time out", request_id)
        self._idle()

    def overdue(self, now: float, limit_seconds: float) -> bool:
        """Whether the outstanding request has waited for its answer over ``limit_seconds``."""
        return (
            self.phase == "requested"
            and self.requested_at is not None
            and now - self.requested_at > limit_seconds
        )

    def abandon(self, version: int) -> None:
        """swapping -> idle: ``version`` was accepted but cannot be swapped in."""
        if self.phase != "swapping" or self.version != version:
            raise InvalidTransition(
                f"cannot abandon the swap of version {version} while {self.phase}"
                + (f" to version {self.version}" if self.version is not None else "")
            )
        self._idle()

    def swapped(self) -> None:
        """any -> idle: new models are live (the accepted version or any other)."""
        self._idle()

    # -- helpers ------------------------------------------------------------------------------
    def _answer(self, verb: str, request_id: str) -> None:
        if self.phase != "requested":
            raise InvalidTransition(f"cannot {verb} retrain {request_id} while {self.phase}")
        if not self.awaits(request_id):
            raise InvalidTransition(
                f"cannot {verb} retrain {request_id}: the outstanding one is {self._about()}"
            )

    def _about(self) -> str:
        return self.outstanding.request_id if self.outstanding is not None else "none"

    def _idle(self) -> None:
        self.phase, self.outstanding, self.version = "idle", None, None
        self.requested_at = None
