"""Hybrid cold start in the factor models: new users start from the warm users of their
demographic segments, new items from the warm items of their genres.

Every stream here goes through the learner as wire bytes (admission stores the profiles and
the learner passes them to the models); each claim compares two real runs that differ only
in ``ModelConfig.cold_start``.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from stream.config import ModelConfig, Settings
from stream.events import (
    ClickEvent,
    ImpressionEvent,
    ItemProfileEvent,
    RatingEvent,
    UserProfileEvent,
    encode_event,
)
from stream.learner import FeedbackLearner
from stream.models import OnlineMF

T0 = 1.7e9
# Two segments that differ in age band, gender and occupation.
FANS: dict[str, Any] = {"age": 25, "gender": "F", "occupation": "writer"}
GRUMPS: dict[str, Any] = {"age": 65, "gender": "M", "occupation": "retired"}
GENRES = ("Comedy", "Drama")


def learner(cold_start: bool) -> FeedbackLearner:
    return FeedbackLearner(Settings(model=ModelConfig(cold_start=cold_start)))


def feed(target: FeedbackLearner, raws: list[bytes]) -> None:
    for raw in raws:
        assert target.process(raw) is None


class Clock:
    """Event times ten seconds apart: far from the bot filter's rate."""

    def __init__(self) -> None:
        self.ts = T0

    def __call__(self) -> float:
        self.ts += 10.0
        return self.ts


def warm_ratings(seed: int = 3, n_users: int = 30, per_user: int = 12) -> list[bytes]:
    """Profiles of 30 items and of users in two segments, then a shuffled stream of ratings
    where the fans rate around 4.6 and the grumps around 1.6 (integers on the 1..5 scale)."""
    rng = np.random.default_rng(seed)
    ts = Clock()
    out = [
        encode_event(
            ItemProfileEvent(event_id=f"ip{i}", item_id=f"i{i}", ts=ts(), genres=(GENRES[i % 2],))
        )
        for i in range(30)
    ]
    plan: list[tuple[str, float]] = []
    for segment, profile, centre in (("fan", FANS, 4.6), ("grump", GRUMPS, 1.6)):
        for k in range(n_users):
            user = f"{segment}{k}"
            out.append(
                encode_event(
                    UserProfileEvent(event_id=f"up-{user}", user_id=user, ts=ts(), **profile)
                )
            )
            plan += [(user, centre)] * per_user
    order = rng.permutation(len(plan))
    for n, k in enumerate(order.tolist()):
        user, centre = plan[k]
        rating = float(np.clip(np.rint(centre + rng.normal(0, 0.5)), 1, 5))
        item = f"i{int(rng.integers(0, 30))}"
        out.append(
            encode_event(
                RatingEvent(event_id=f"r{n}", user_id=user, item_id=item, ts=ts(), rating=rating)
            )
        )
    return out


def first_predictions(
    target: FeedbackLearner, user: str, profile: dict[str, Any], items: list[str]
) -> list[float]:
    """Announce a new user, then learn their first ratings (all 3 stars) through the
    learner; return the rating the model predicted before learning each one."""
    ts = Clock()
    ts.ts = T0 + 1e6
    feed(
        target,
        [encode_event(UserProfileEvent(event_id=f"up-{user}", user_id=user, ts=ts(), **profile))],
    )
    predicted = []
    for n, item in enumerate(items):
        rating = target.models.rating
        predicted.append(
            rating.predict(
                user, item, user_profile=target.users.get(user), item_profile=target.items.get(item)
            )
        )
        feed(
            target,
            [
                encode_event(
                    RatingEvent(
                        event_id=f"new-{user}-{n}", user_id=user, item_id=item, ts=ts(), rating=3.0
                    )
                )
            ],
        )
    return predicted


def test_new_users_start_from_their_segment() -> None:
    stream = warm_ratings()
    runs = {flag: learner(flag) for flag in (False, True)}
    for run in runs.values():
        feed(run, stream)
    items = ["i0", "i1", "i2", "i3"]
    for segment, profile in (("fan", FANS), ("grump", GRUMPS)):
        off = first_predictions(runs[False], f"new-{segment}", profile, items)
        on = first_predictions(runs[True], f"new-{segment}", profile, items)
        # The fans' warm users rate high, so a new fan's first ratings are predicted
        # higher than from a blank start; a new grump's lower.
        for a, b in zip(on, off, strict=True):
            assert (a > b) if segment == "fan" else (a < b), (segment, on, off)
    # With the flag off nothing was kept for cold start.
    assert not runs[False].models.rating.cold_start
    assert runs[True].models.rating.cold_start


def test_new_items_start_from_their_genre_in_the_implicit_model() -> None:
    """Warm comedies are clicked, warm dramas only shown: a new comedy scores higher than
    from a blank start, a new drama lower."""
    rng = np.random.default_rng(5)
    ts = Clock()
    raws = [
        encode_event(UserProfileEvent(event_id=f"up{u}", user_id=f"u{u}", ts=ts(), **FANS))
        for u in range(40)
    ]
    raws += [
        encode_event(
            ItemProfileEvent(event_id=f"ip{i}", item_id=f"i{i}", ts=ts(), genres=(GENRES[i % 2],))
        )
        for i in range(22)
    ]
    for n in range(3000):
        user, item = f"u{int(rng.integers(0, 40))}", int(rng.integers(0, 20))  # i20, i21 new
        kind = ClickEvent if item % 2 == 0 and rng.random() < 0.8 else ImpressionEvent
        raws.append(encode_event(kind(event_id=f"e{n}", user_id=user, item_id=f"i{item}", ts=ts())))
    runs = {flag: learner(flag) for flag in (False, True)}
    scores = {}
    for flag, run in runs.items():
        feed(run, raws)
        implicit = run.models.implicit
        n_items = implicit.n_items
        scores[flag] = [
            implicit.score("u0", item, item_profile=run.items[item]) for item in ("i20", "i21")
        ]
        assert implicit.n_items == n_items == 20  # scoring added no item
    (comedy_on, drama_on), (comedy_off, drama_off) = scores[True], scores[False]
    assert comedy_on > comedy_off
    assert drama_on < drama_off


def test_predict_adds_no_state_and_update_returns_what_predict_said() -> None:
    target = learner(True)
    feed(target, warm_ratings(n_users=10))
    rating = target.models.rating
    priors = rating._user_priors
    assert priors is not None and priors.global_vector is not None
    before = pickle.dumps(rating)
    profile = dict(FANS)
    item_profile = {"genres": ("Comedy",)}
    with_profiles = rating.predict(
        "stranger", "unseen", user_profile=profile, item_profile=item_profile
    )
    blank = rating.predict("stranger", "unseen")
    # Nothing was added: no rows, no keys, the same bytes.
    assert pickle.dumps(rating) == before
    assert not rating.has_user("stranger") and not rating.has_item("unseen")
    # Without profiles an unknown id counts as zero (what serving computes); with them the
    # priors enter the prediction.
    assert blank == rating.predict("nobody", "unseen") == rating.global_mean
    assert with_profiles != blank
    # The update's pre-learning prediction is the same float predict gave.
    learned = rating.update(
        "stranger", "unseen", 5.0, user_profile=profile, item_profile=item_profile
    )
    assert learned == with_profiles
    assert rating.has_user("stranger") and rating.has_item("unseen")


def test_replay_rebuilds_the_same_models_and_priors_survive_pickle() -> None:
    stream = warm_ratings(n_users=20)
    head, tail = stream[: len(stream) // 2], stream[len(stream) // 2 :]
    a, b, off = learner(True), learner(True), learner(False)
    for run in (a, b, off):
        feed(run, stream)
    assert a.state_equal(b)
    assert not a.state_equal(off)  # the comparison can fail: cold start changed the models
    # A model restored from a checkpoint in the middle goes on exactly as the original.
    c = learner(True)
    feed(c, head)
    c.models = pickle.loads(pickle.dumps(c.models))
    feed(c, tail)
    assert c.models.state_equal(a.models)


def test_model_without_cold_start_matches_the_flag_off() -> None:
    """With the flag off the models ignore profiles entirely."""
    cfg = ModelConfig(cold_start=False)
    given, blind = OnlineMF.from_config(cfg), OnlineMF.from_config(cfg)
    for n in range(50):
        u, i, r = f"u{n % 7}", f"i{n % 5}", 1.0 + n % 5
        assert given.update(u, i, r, user_profile=FANS, item_profile={"genres": ("Drama",)}) == (
            blind.update(u, i, r)
        )
    assert given.state_equal(blind)
