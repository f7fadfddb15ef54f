"""Users who asked to be forgotten, kept as salted hashes so the set itself names nobody.

A forgotten user's later events (still in the events topic, or sent again) must be filtered,
so the consumer has to recognise the id; storing it would itself be a trace. So the set keeps
``blake2b(salt + user_id)`` digests, with a random salt of its own (part of the checkpointed
state, and sent with retrain requests so the history reader filters the same users). The
salt makes precomputed tables useless; it does not stop whoever holds a checkpoint from
testing a guessed id, which a per-deployment secret key would.

>>> forgotten = ForgottenUsers(salt=b"0" * 16)
>>> bool(forgotten), "u1" in forgotten
(False, False)
>>> forgotten.add("u1")
>>> bool(forgotten), "u1" in forgotten, "u2" in forgotten, len(forgotten)
(True, True, False, 1)
>>> "u1" in repr(forgotten.as_dict()) or b"u1" in forgotten.digests.pop()
False
>>> ForgottenUsers.from_dict({"salt": "30" * 16, "digests": []}).salt == forgotten.salt
True
"""

from __future__ import annotations

import os
from hashlib import blake2b
from typing import Any

__all__ = ["ForgottenUsers"]

DIGEST_SIZE = 16


class ForgottenUsers:
    """A set of user ids, stored as salted blake2b digests."""

    def __init__(self, salt: bytes | None = None, digests: set[bytes] | None = None) -> None:
        self.salt = os.urandom(16) if salt is None else salt
        self.digests: set[bytes] = set() if digests is None else digests

    def digest(self, user_id: str) -> bytes:
        return blake2b(user_id.encode(), digest_size=DIGEST_SIZE, salt=self.salt).digest()

    def add(self, user_id: str) -> None:
        self.digests.add(self.digest(user_id))

    def __contains__(self, user_id: str) -> bool:
        return self.digest(user_id) in self.digests

    def __len__(self) -> int:
        return len(self.digests)

    def __bool__(self) -> bool:
        return bool(self.digests)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for a retrain request): hex salt and sorted hex digests."""
        return {"salt": self.salt.hex(), "digests": sorted(d.hex() for d in self.digests)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForgottenUsers:
        return cls(bytes.fromhex(data["salt"]), {bytes.fromhex(d) for d in data["digests"]})
