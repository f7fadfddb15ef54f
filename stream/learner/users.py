"""When the learner evicts users: a cap plus a slack, so eviction runs in batches.

>>> eviction_trigger(None) > 10**18, eviction_trigger(1000), eviction_trigger(10)
(True, 1050, 11)
"""

from __future__ import annotations

import sys

__all__ = ["EVICTION_SLACK", "eviction_trigger"]

# Share over the cap the user count may reach before a batch of evictions brings it back
# down to the cap: one pass over the tables per 5% of the cap in new users.
EVICTION_SLACK = 0.05


def eviction_trigger(max_users: int | None) -> int:
    """The user count above which the learner evicts (never, without a cap)."""
    if max_users is None:
        return sys.maxsize
    return max_users + max(1, int(max_users * EVICTION_SLACK))
