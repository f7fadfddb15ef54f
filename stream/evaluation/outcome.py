"""What the learner reports about each event it learns, and the protocol of its observers.

The learner scores an interaction event, learns it, then hands one typed outcome to each
observer (the drift monitor's feed, the hold-out window), so none of them reaches into the
learner and the learner writes into none of them. Outcomes are NamedTuples: one small
allocation per event. Every outcome starts with the event's ``event_index`` (the learner's
count of messages consumed up to and including it) and ``new_user`` (whether the models had
not seen its user before it).

>>> class Printer:
...     def engagement(self, o: Engagement) -> None: pass
...     def rating(self, o: Rated) -> None: print(o.squared_error, o.new_user)
...     def dwell(self, o: Dwelled) -> None: pass
>>> observer: OutcomeObserver = Printer()
>>> observer.rating(Rated(event_index=8, new_user=True, squared_error=0.25))
0.25 True
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

__all__ = ["Dwelled", "Engagement", "OutcomeObserver", "Rated"]


class Engagement(NamedTuple):
    """A click or impression, scored by the click model and the naive click rate."""

    event_index: int
    new_user: bool
    clicked: bool
    loss: float  # the click model's log loss, predicted before learning
    naive_loss: float  # the running click-through rate's log loss
    genre: str | None  # first genre of a clicked item (None: impression, or no genres)


class Rated(NamedTuple):
    """A rating, scored by the rating model before learning."""

    event_index: int
    new_user: bool
    squared_error: float


class Dwelled(NamedTuple):
    """A dwell event (learned by the implicit model, nothing to score)."""

    event_index: int
    new_user: bool
    seconds: float


class OutcomeObserver(Protocol):
    """Receives the outcome of every interaction event the learner learns, in order."""

    # Positional-only: an observer names (or ignores, as ``_``) the outcome as it likes.
    def engagement(self, o: Engagement, /) -> None: ...

    def rating(self, o: Rated, /) -> None: ...

    def dwell(self, o: Dwelled, /) -> None: ...
