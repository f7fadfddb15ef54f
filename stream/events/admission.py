"""Admission: what decides whether a message reaches the models, and counts every one.

:class:`Admission` is the one gate of the live learner and of the retrainer's history reader,
so both see exactly the same events in the same order. A message is, in this order:

1. decoded and validated (else dead-lettered: ``null_value`` for a message without a value,
   ``oversized`` above ``Limits.max_message_bytes``, ``malformed_json``, ``unknown_type``,
   ``invalid_event``, including an empty message), including, when the limits declare a
   ``rating_step``, that a rating sits on it (``invalid_event``, e.g. 3.7 on half stars);
2. dropped if its ``event_id`` was seen recently with the same content (a duplicate); the
   same id with other content is dead-lettered (``conflicting_duplicate``): the first one
   stays applied, the other is kept for inspection. Content is compared by a CRC-32 of the
   message bytes, kept with each id of the de-duplication window;
3. for an interaction: dead-lettered if its user or item has no profile yet
   (``unknown_user``, ``unknown_item``, when the limits require known ids), then dropped if
   its user looks like a bot (filtered, reason ``bot``);
4. admitted: a profile is stored (:class:`Profiles`, where genres, genders and occupations
   beyond ``Limits.max_vocabulary`` distinct values become ``"(other)"``), an interaction is
   returned for the models to learn.

Every message ends in exactly one bucket, so ``consumed == applied + dead_lettered +
filtered + duplicates``.

>>> from stream.config import Limits
>>> gate = Admission(Limits(), dedup_window=100, bot_events_per_minute=120)
>>> gate.admit_raw(b'{"type": "user_profile", "event_id": "p1", "user_id": "u1", "ts": 1.7e9}').type
'user_profile'
>>> gate.admit_raw(b'{"type":"click","event_id":"c1","user_id":"u1","item_id":"i1","ts":1.7e9}')
Rejection(kind='unknown_item', reason="unknown item 'i1'", event_type='click')
>>> gate.admit_raw(b'{"type": "user_profile", "event_id": "p1", "user_id": "u1", "ts": 1.7e9}')
>>> gate.admit_raw(b"").kind, gate.admit_raw(None).kind
('invalid_event', 'null_value')
>>> gate.admit_raw(b'{"type": "user_profile", "event_id": "p1", "user_id": "u2", "ts": 1.7e9}')[:2]
('conflicting_duplicate', "event id 'p1' was seen with other content")
>>> c = gate.counts
>>> (c.consumed, c.applied, c.dead_lettered, c.duplicates, c.reconciles())
(6, 1, 4, 1, True)
>>> gate.profiles.users
{'u1': {'age': None, 'gender': None, 'occupation': None}}
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, cast
from zlib import crc32

from stream.config import Limits, Settings
from stream.events.codec import InvalidEvent, decode_event, encode_event
from stream.events.forgotten import ForgottenUsers
from stream.events.schema import (
    DEFAULT_LIMITS,
    Event,
    InteractionEvent,
    ItemProfileEvent,
    RatingEvent,
    UserProfileEvent,
)
from stream.events.text import quote

__all__ = [
    "BOT_BLOCK_SECONDS",
    "OTHER",
    "Admission",
    "BotFilter",
    "Counts",
    "Profiles",
    "Rejection",
    "STEP_TOLERANCE",
    "SeenEvents",
    "Vocabulary",
    "off_step",
]

# How long (event time) a user who looked like a bot stays filtered.
BOT_BLOCK_SECONDS = 86400
_INTERACTIONS = frozenset({"impression", "click", "dwell", "rating"})
# How far (in steps) a rating may sit from the step grid: float noise, not a real value.
STEP_TOLERANCE = 1e-6
# What a profile value beyond its field's vocabulary is stored as (parenthesized: no clash
# with a real value such as MovieLens's occupation "other").
OTHER: Final = "(other)"


def off_step(rating: float, rating_min: float, step: float) -> bool:
    """Whether ``rating`` is not ``rating_min + k * step`` for an integer ``k``.

    >>> off_step(3.5, 0.5, 0.5), off_step(3.7, 0.5, 0.5), off_step(4.0, 1.0, 1.0)
    (False, True, False)
    """
    k = (rating - rating_min) / step
    return abs(k - round(k)) > STEP_TOLERANCE


class Rejection(NamedTuple):
    """Why a message goes to the dead-letter topic; ``kind`` is a bounded metric label."""

    kind: str
    reason: str
    event_type: str = "invalid"


@dataclass
class Counts:
    """Where every consumed message ended up."""

    consumed: int = 0
    applied: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    duplicates: int = 0
    consumed_by_type: dict[str, int] = field(default_factory=dict)
    dead_letters_by_kind: dict[str, int] = field(default_factory=dict)
    filtered_by_reason: dict[str, int] = field(default_factory=dict)

    def reconciles(self) -> bool:
        total = self.applied + self.dead_lettered + self.filtered + self.duplicates
        return self.consumed == total

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "applied": self.applied,
            "dead_lettered": self.dead_lettered,
            "filtered": self.filtered,
            "duplicates": self.duplicates,
            "consumed_by_type": dict(self.consumed_by_type),
            "dead_letters_by_kind": dict(self.dead_letters_by_kind),
            "filtered_by_reason": dict(self.filtered_by_reason),
        }


class SeenEvents:
    """A sliding window of the last ``size`` event ids, each with its content's fingerprint,
    for de-duplication.

    >>> seen = SeenEvents(2)
    >>> for event_id in ("a", "b", "c"):
    ...     seen.add(event_id, 7)
    >>> "a" in seen, "c" in seen, len(seen), seen.fingerprint("c"), seen.fingerprint("a")
    (False, True, 2, 7, None)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        # id -> fingerprint (a dict, not a set: one lookup answers both questions).
        self._ids: dict[str, int] = {}
        self._order: deque[str] = deque()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def fingerprint(self, event_id: str) -> int | None:
        """The fingerprint the id was seen with (None: not in the window)."""
        return self._ids.get(event_id)

    def add(self, event_id: str, fingerprint: int) -> None:
        if self.size == 0:
            return
        self._ids[event_id] = fingerprint
        self._order.append(event_id)
        if len(self._order) > self.size:
            self._ids.pop(self._order.popleft(), None)

    def __len__(self) -> int:
        return len(self._ids)

    def drop_containing(self, text: str) -> int:
        """Forget the event ids that contain ``text`` (a producer may build event ids from a
        user id, as the simulator's profile events do); how many. One pass over the window.

        >>> seen = SeenEvents(5)
        >>> for event_id in ("profile-u7", "c1", "u7-c2", "u70"):
        ...     seen.add(event_id, 0)
        >>> seen.drop_containing("u7"), "c1" in seen, len(seen)
        (3, True, 1)
        """
        kept = deque(e for e in self._order if text not in e)
        dropped = len(self._order) - len(kept)
        if dropped:
            self._order = kept
            self._ids = {e: self._ids[e] for e in kept}
        return dropped


class Vocabulary:
    """The distinct values of one profile field, at most ``size``; later new ones are OTHER.

    >>> genres = Vocabulary(2)
    >>> [genres.admit(g) for g in ("Drama", "Comedy", "Noir", "Drama")]
    ['Drama', 'Comedy', '(other)', 'Drama']
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: set[str] = set()

    def admit(self, value: str) -> str:
        """``value`` if known or there is room for it (then remembered), else OTHER."""
        values = self.values
        if value in values:
            return value
        if len(values) >= self.size:
            return OTHER
        values.add(value)
        return value

    def admit_all(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """Each of ``values`` admitted, in order, without repeats."""
        return tuple(dict.fromkeys(self.admit(v) for v in values))


class Profiles:
    """The known users and items: the last profile of each, as the models read them.

    Which ids got a new or changed profile is also recorded until :meth:`drain_changed`
    takes it (the model-state exporter publishes those), cheap because profiles are rare.
    Genres, genders and occupations each have a :class:`Vocabulary` of ``vocabulary_size``
    values: what the models see of profiles is bounded, whatever producers send.

    >>> p = Profiles()
    >>> p.add(ItemProfileEvent(event_id="e", item_id="i", ts=1.7e9, genres=("Drama",)))
    >>> p.items
    {'i': {'genres': ('Drama',), 'year': None}}
    >>> p.drain_changed(), p.drain_changed()
    ((set(), {'i'}), (set(), set()))
    >>> p.add(ItemProfileEvent(event_id="f", item_id="i", ts=1.7e9, genres=("Drama",)))
    >>> p.drain_changed()  # the same profile again: nothing changed
    (set(), set())
    """

    # Item ids whose profile is new or changed, in order, while an item sync listens (None:
    # nobody does; a class default, so profiles pickled before it existed load without).
    item_log: list[str] | None = None

    def __init__(self, vocabulary_size: int = DEFAULT_LIMITS.max_vocabulary) -> None:
        self.genres = Vocabulary(vocabulary_size)
        self.genders = Vocabulary(vocabulary_size)
        self.occupations = Vocabulary(vocabulary_size)
        self.users: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        # Ids whose profile is new or changed since the last drain_changed().
        self.changed_users: set[str] = set()
        self.changed_items: set[str] = set()

    def add(self, e: UserProfileEvent | ItemProfileEvent) -> None:
        """Store a profile (the last one of an id wins)."""
        if isinstance(e, UserProfileEvent):
            gender, occupation = e.gender, e.occupation
            profile = {
                "age": e.age,
                "gender": None if gender is None else self.genders.admit(gender),
                "occupation": None if occupation is None else self.occupations.admit(occupation),
            }
            if self.users.get(e.user_id) != profile:
                self.changed_users.add(e.user_id)
            self.users[e.user_id] = profile
        else:
            item = {"genres": self.genres.admit_all(e.genres), "year": e.year}
            if self.items.get(e.item_id) != item:
                self.changed_items.add(e.item_id)
                if self.item_log is not None:
                    self.item_log.append(e.item_id)
            self.items[e.item_id] = item

    def drop_user(self, user_id: str) -> None:
        """Remove a user's profile (a forget)."""
        self.users.pop(user_id, None)
        self.changed_users.discard(user_id)

    def drain_changed(self) -> tuple[set[str], set[str]]:
        """The (user ids, item ids) whose profile changed since the last call; resets them."""
        users, items = self.changed_users, self.changed_items
        self.changed_users, self.changed_items = set(), set()
        return users, items


class BotFilter:
    """Flags users who act at an inhuman rate: more than ``limit`` distinct event times in
    one minute of event time (i.e. over two separate actions a second, for a minute, at the
    default 120). A flagged user stays filtered for a day of event time, so a bot's next
    bursts are filtered from their first event.

    Events at the same event time as the user's previous one count once: a person saves a
    page of ratings at once (MovieLens has users with 10 ratings in one second), an app
    logs a slate's impressions together. So the rule never fires on data whose timestamps
    have one-second resolution (60 distinct times a minute at most), whatever the bulk,
    and fires on the simulator's bots (about 10 clicks a second, each at its own time).

    >>> bots = BotFilter(limit=2)
    >>> [bots.is_bot("u", 60.0 + s) for s in range(4)]
    [False, False, True, True]
    >>> bots.is_bot("u", 62.0 + 86399), bots.is_bot("u", 62.0 + 86400)  # flagged at 62 s
    (True, False)
    >>> [bots.is_bot("bulk", 120.0) for _ in range(500)].count(True)  # one save of 500
    0
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # user -> [minute bucket of event time, distinct event times in it, flagged until,
        # event time of the user's previous event]
        self._activity: dict[str, list[Any]] = {}

    def is_bot(self, user_id: str, ts: float) -> bool:
        """Account one event of ``user_id`` at ``ts``; whether it is to be filtered."""
        act = self._activity.get(user_id)
        if act is None:
            self._activity[user_id] = [int(ts // 60), 1, 0, ts]
            return False
        if ts < act[2]:  # flagged
            return True
        if ts == act[3]:  # the same action as the previous event
            return False
        act[3] = ts
        bucket = int(ts // 60)
        if act[0] != bucket:
            act[0], act[1] = bucket, 1
            return False
        act[1] += 1
        if act[1] > self.limit:
            act[2] = int(ts) + BOT_BLOCK_SECONDS
            return True
        return False

    def drop(self, user_id: str) -> None:
        """Forget a user's activity (a forgotten or evicted user starts over)."""
        self._activity.pop(user_id, None)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A checkpoint pickled before the previous event time was kept has 3-field entries:
        # give them one that matches no event time, so is_bot needs no check per event.
        for act in state["_activity"].values():
            if len(act) == 3:
                act.append(float("nan"))
        self.__dict__.update(state)


class Admission:
    """Validation, counting, de-duplication, known ids and the bot filter, in one gate."""

    def __init__(self, limits: Limits, dedup_window: int, bot_events_per_minute: int) -> None:
        self.limits = limits
        self.counts = Counts()
        self.seen = SeenEvents(dedup_window)
        self.profiles = Profiles(limits.max_vocabulary)
        self.bots = BotFilter(bot_events_per_minute)
        # Users who asked to be forgotten: their events are filtered (``forgotten_user``).
        self.forgotten = ForgottenUsers()
        self._max_bytes = limits.max_message_bytes
        # Read once: the step check must cost nothing per event when no step is declared.
        self._rating_step = limits.rating_step

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        c = settings.consumer
        return cls(settings.limits, c.dedup_window, c.bot_events_per_minute)

    def admit_raw(self, raw: bytes | None) -> Event | Rejection | None:
        """Decode one message and :meth:`admit` it (a message that fails is dead-lettered)."""
        try:
            if raw is None:
                # A tombstone, or a producer that sent no value: not the same as b"".
                raise InvalidEvent("null message value (no bytes at all)", kind="null_value")
            if not raw:
                raise InvalidEvent("empty message")
            if len(raw) > self._max_bytes:
                raise InvalidEvent(
                    f"message of {len(raw)} bytes exceeds the limit of {self._max_bytes}",
                    kind="oversized",
                )
            event = decode_event(raw, self.limits)
        except InvalidEvent as err:
            c = self.counts
            c.consumed += 1
            c.consumed_by_type[err.event_type] = c.consumed_by_type.get(err.event_type, 0) + 1
            return self._reject(Rejection(err.kind, err.reason, err.event_type))
        return self.admit(event, crc32(raw))

    def admit(self, event: Event, fingerprint: int | None = None) -> Event | Rejection | None:
        """Count one validated event and decide its fate.

        Returns the event when it is admitted (counted as applied: a profile is stored
        already, an interaction is the caller's to learn), a :class:`Rejection` for the
        dead letters, or None when it is dropped (a duplicate, or filtered).
        ``fingerprint`` is the CRC-32 of the message bytes (default: of the event encoded).
        """
        if fingerprint is None:
            fingerprint = crc32(encode_event(event))
        c = self.counts
        c.consumed += 1
        etype = event.type
        c.consumed_by_type[etype] = c.consumed_by_type.get(etype, 0) + 1
        if self._rating_step is not None and etype == "rating":
            rating = cast(RatingEvent, event).rating
            if off_step(rating, self.limits.rating_min, self._rating_step):
                lim = self.limits
                return self._reject(
                    Rejection(
                        "invalid_event",
                        f"rating {rating} is not on the scale [{lim.rating_min}, "
                        f"{lim.rating_max}] in steps of {self._rating_step}",
                        etype,
                    )
                )
        if self.forgotten.digests and self._forgotten(event):
            # Not added to the de-duplication window: it keeps no event of the user.
            c.filtered += 1
            c.filtered_by_reason["forgotten_user"] = (
                c.filtered_by_reason.get("forgotten_user", 0) + 1
            )
            return None
        event_id = event.event_id
        seen = self.seen
        first = seen._ids.get(event_id)  # SeenEvents.fingerprint, inlined (once per event)
        if first is not None:
            if first == fingerprint:
                c.duplicates += 1
                return None
            return self._reject(
                Rejection(
                    "conflicting_duplicate",
                    f"event id {quote(event_id)} was seen with other content",
                    etype,
                )
            )
        if etype in _INTERACTIONS:  # a string test: isinstance on pydantic models costs more
            ie = cast(InteractionEvent, event)
            limits, profiles = self.limits, self.profiles
            user_id = ie.user_id
            if limits.require_known_users and user_id not in profiles.users:
                return self._reject(
                    Rejection("unknown_user", f"unknown user {quote(user_id)}", etype)
                )
            if limits.require_known_items and ie.item_id not in profiles.items:
                return self._reject(
                    Rejection("unknown_item", f"unknown item {quote(ie.item_id)}", etype)
                )
            if self.bots.is_bot(user_id, ie.ts):
                # Seen, so a redelivery of it counts as a duplicate, not filtered again.
                seen.add(event_id, fingerprint)
                c.filtered += 1
                c.filtered_by_reason["bot"] = c.filtered_by_reason.get("bot", 0) + 1
                return None
        else:
            self.profiles.add(cast(UserProfileEvent | ItemProfileEvent, event))
        # SeenEvents.add, inlined (once per event).
        if seen.size:
            seen._ids[event_id] = fingerprint
            order = seen._order
            order.append(event_id)
            if len(order) > seen.size:
                seen._ids.pop(order.popleft(), None)
        c.applied += 1
        return event

    def _forgotten(self, event: Event) -> bool:
        """Whether the event names a forgotten user. A user with a profile or bot-filter
        state is not forgotten (a forget removes both and they never come back), so only
        events of users unknown here pay for a hash."""
        user_id: str | None = getattr(event, "user_id", None)
        if user_id is None or user_id in self.profiles.users or user_id in self.bots._activity:
            return False
        return user_id in self.forgotten

    def forget(self, user_id: str) -> None:
        """Filter the user's events from now on and drop what admission keeps of them:
        the profile, bot-filter state and the event ids that contain the id."""
        self.forgotten.add(user_id)
        self.profiles.drop_user(user_id)
        self.bots.drop(user_id)
        self.seen.drop_containing(user_id)

    def _reject(self, rejection: Rejection) -> Rejection:
        c = self.counts
        c.dead_lettered += 1
        c.dead_letters_by_kind[rejection.kind] = c.dead_letters_by_kind.get(rejection.kind, 0) + 1
        return rejection
