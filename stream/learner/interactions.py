"""Who interacted with what: the items each user has seen, and each item's popularity.

Serving needs both and the models do not keep them: a user's clicked or rated items are
excluded from their recommendations, and an item's count of positive interactions (clicks
and ratings) is its popularity, the fallback ranking for a cold start. The learner updates
one :class:`Interactions` per click and per rating (the hot path: a set add and a dict
increment) and it is checkpointed with the learner.

>>> seen = Interactions()
>>> seen.add("u1", "i1"); seen.add("u1", "i2"); seen.add("u2", "i1"); seen.add("u1", "i1")
>>> sorted(seen.seen["u1"]), seen.popularity["i1"], seen.popularity["i2"]
(['i1', 'i2'], 3, 1)
>>> seen.items_of("nobody")
()
>>> seen.items_of("u1")
('i1', 'i2')
"""

from __future__ import annotations

__all__ = ["Interactions"]


class Interactions:
    """Per user the set of items clicked or rated; per item the count of those events."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}
        self.popularity: dict[str, int] = {}

    def add(self, user_id: str, item_id: str) -> None:
        """Record one positive interaction (a click or a rating)."""
        items = self.seen.get(user_id)
        if items is None:
            self.seen[user_id] = {item_id}
        else:
            items.add(item_id)
        popularity = self.popularity
        popularity[item_id] = popularity.get(item_id, 0) + 1

    def drop(self, user_id: str) -> None:
        """Forget the user's seen items. Popularity stays: it counts events per item and
        names no user (like the item vectors, it keeps the user's share until a retrain)."""
        self.seen.pop(user_id, None)

    def items_of(self, user_id: str) -> tuple[str, ...]:
        """The user's seen items, sorted (a stable order for the published records)."""
        items = self.seen.get(user_id)
        return tuple(sorted(items)) if items else ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interactions):
            return NotImplemented
        return self.seen == other.seen and self.popularity == other.popularity

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by state
