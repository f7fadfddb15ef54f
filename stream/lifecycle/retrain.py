"""Batch retrain: hyperparameter search, then a champion/challenger check on a hold-out window.

The retrainer gets the recent history of admitted interaction events and splits it in time::

    | ........ training ........ | validation | hold-out |

An Optuna study (seeded TPE, so the same data and seed give the same result) searches the
model hyperparameters plus three batch-only knobs (see :func:`suggest_params`): ``window``,
the share of the most recent training history to learn ``epochs`` times, and ``older``,
whether the history before the window is dropped (after a drift, old data can hurt), only
its sparse ratings kept, or all of it learned once. The first trial is the base
configuration learned as the live model learns (everything once). A trial trains a fresh
bundle, then scores the validation window prequentially (predict, then learn, event by
event, as the live learner does).

The best parameters are then trained on training + validation and scored prequentially on
the hold-out window: that is the *challenger*. The live model's own prequential losses on the
same hold-out window (:class:`HoldoutLosses`) make the *champion*. Both are turned into one
:func:`quality_loss` with the same naive references, and the challenger is accepted only if
it is better. The hold-out events are learned too, so the returned bundle is up to date with
the end of ``data`` and the caller only has to apply what arrived since.

Quality is the mean of the available terms among ``logloss / naive_logloss`` (click
model, on clicks and impressions) and ``rmse / naive_rmse`` (rating model), the naive
predictors being the running click-through rate and the running mean rating, seeded with
everything before the window. Lower is better; 1.0 is no better than naive.

>>> from producers.simulator import Simulator, SimulatorConfig
>>> from stream.config import Limits, ModelConfig
>>> sim = Simulator(SimulatorConfig(n_users=40, n_items=30, seed=3))
>>> data = TrainingData.from_events([*sim.profiles(), *sim.events(1500)])
>>> len(data.events), len(data.users), len(data.items)
(1500, 40, 30)
>>> out = retrain(data, base=ModelConfig(), limits=Limits(), holdout=300, validation=300,
...               n_trials=2, champion=None)
>>> out.trials, out.accepted, out.n_events, (out.first_index, out.last_index)
(2, True, 1500, (0, 1499))
>>> sorted(out.params)[:3]
['bias_learning_rate', 'engagement_learning_rate', 'epochs']
>>> 0.0 < out.challenger_holdout < 2.0
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import optuna

from stream.config import Limits, ModelConfig
from stream.events import (
    ClickEvent,
    Event,
    ImpressionEvent,
    InteractionEvent,
    ItemProfileEvent,
    RatingEvent,
    UserProfileEvent,
)
from stream.models import EngagementModel, ModelBundle

__all__ = [
    "EPOCHS",
    "FACTORS",
    "LOG_RANGES",
    "OLDER",
    "WINDOW_SHARES",
    "HoldoutLosses",
    "References",
    "RetrainOutcome",
    "TrainingData",
    "naive_references",
    "prequential_losses",
    "quality_loss",
    "retrain",
    "suggest_params",
]

FACTORS: tuple[int, ...] = (8, 16, 32)
EPOCHS: tuple[int, ...] = (1, 2, 3)
WINDOW_SHARES: tuple[float, ...] = (0.25, 0.5, 1.0)
"""Shares of the most recent training history a trial learns ``epochs`` times."""
OLDER: tuple[str, ...] = ("skip", "ratings", "once")
"""What happens to the history before the window: left out, only its (sparse) ratings
learned once first, or all of it learned once first."""

# Probability clip of the log loss, as in stream.evaluation.prequential.BinaryScore.
_EPS = 1e-15


# -- inputs ------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """What a retrain learns from, in the learner's formats.

    ``events`` are admitted interaction events (impression, click, dwell, rating) in stream
    order, already de-duplicated and filtered; ``users`` and ``items`` are the profiles as
    :class:`stream.learner.learner.FeedbackLearner` keeps them; ``first_index`` is the learner's
    event index of ``events[0]`` (only used to report data ranges).
    """

    events: list[InteractionEvent]
    users: dict[str, dict[str, Any]]
    items: dict[str, dict[str, Any]]
    first_index: int = 0

    @classmethod
    def from_events(cls, events: Iterable[Event], first_index: int = 0) -> TrainingData:
        """Split a validated stream into profiles (last one wins) and interaction events.

        >>> from stream.events import RatingEvent, UserProfileEvent
        >>> d = TrainingData.from_events([
        ...     UserProfileEvent(event_id="p", user_id="u", ts=1.7e9, age=30),
        ...     RatingEvent(event_id="r", user_id="u", item_id="i", ts=1.7e9, rating=3),
        ... ])
        >>> d.users, len(d.events), d.items
        ({'u': {'age': 30, 'gender': None, 'occupation': None}}, 1, {})
        """
        users: dict[str, dict[str, Any]] = {}
        items: dict[str, dict[str, Any]] = {}
        interactions: list[InteractionEvent] = []
        for e in events:
            if isinstance(e, UserProfileEvent):
                users[e.user_id] = {"age": e.age, "gender": e.gender, "occupation": e.occupation}
            elif isinstance(e, ItemProfileEvent):
                items[e.item_id] = {"genres": e.genres, "year": e.year}
            else:
                interactions.append(e)
        return cls(interactions, users, items, first_index)


@dataclass(frozen=True)
class References:
    """Prequential scores of the naive predictors on a window (None: nothing to score)."""

    logloss: float | None
    rmse: float | None

    @property
    def usable(self) -> bool:
        """Whether at least one quality term can be computed against these references."""
        return bool(self.logloss) or bool(self.rmse)


@dataclass(frozen=True)
class HoldoutLosses:
    """Summed prequential losses of one model over a window.

    ``engagement_*`` covers click and impression events (log loss of the click
    probability), ``rating_*`` rating events (squared error of the predicted rating).
    """

    engagement_logloss_sum: float
    engagement_n: int
    rating_se_sum: float
    rating_n: int

    def quality(self, refs: References) -> float:
        """:func:`quality_loss` of these losses against ``refs``."""
        return quality_loss(
            self.engagement_logloss_sum,
            self.engagement_n,
            self.rating_se_sum,
            self.rating_n,
            refs,
        )


# -- scoring -------------------------------------------------------------------------------


def quality_loss(
    engagement_logloss_sum: float,
    engagement_n: int,
    rating_se_sum: float,
    rating_n: int,
    refs: References,
) -> float:
    """Mean of ``logloss / refs.logloss`` and ``rmse / refs.rmse`` over the available terms.

    A term is available when the model scored at least one such event and the reference is
    positive. Lower is better; about 1.0 means no better than the naive predictors.

    >>> refs = References(logloss=0.4, rmse=1.0)
    >>> round(quality_loss(30.0, 100, 64.0, 100, refs), 6)  # (0.3 / 0.4 + 0.8 / 1.0) / 2
    0.775
    >>> round(quality_loss(30.0, 100, 0.0, 0, refs), 6)  # no ratings: the click term only
    0.75
    >>> quality_loss(0.0, 0, 0.0, 0, refs)
    Traceback (most recent call last):
    ...
    ValueError: no quality term available: the window has no scored click/impression or rating
    """
    terms: list[float] = []
    if engagement_n > 0 and refs.logloss:
        terms.append(engagement_logloss_sum / engagement_n / refs.logloss)
    if rating_n > 0 and refs.rmse:
        terms.append(math.sqrt(rating_se_sum / rating_n) / refs.rmse)
    if not terms:
        raise ValueError(
            "no quality term available: the window has no scored click/impression or rating"
        )
    return sum(terms) / len(terms)


def naive_references(
    window: Sequence[InteractionEvent], history: Iterable[InteractionEvent] = ()
) -> References:
    """Prequential scores of the naive predictors over ``window``.

    The predictors are the running click-through rate ``(clicks + 0.5) / (shown + 1)`` and
    the running mean rating, both seeded with ``history`` (the events before the window) so
    that they are meaningful from the window's first event, then updated after every event
    as the learner's own baselines are. A rating seen before any other is not scored (there
    is no mean yet).

    >>> from stream.events import ClickEvent, ImpressionEvent, RatingEvent
    >>> kw = dict(user_id="u", item_id="i", ts=1.7e9)
    >>> history = [ClickEvent(event_id="c", **kw), RatingEvent(event_id="r", rating=4, **kw)]
    >>> window = [ImpressionEvent(event_id="m", **kw), RatingEvent(event_id="s", rating=2, **kw)]
    >>> refs = naive_references(window, history)
    >>> round(refs.logloss, 4), refs.rmse  # P(click) = 1.5 / 2; the mean rating is 4
    (1.3863, 2.0)
    """
    clicks = shown = 0
    rating_sum = 0.0
    ratings = 0
    for e in history:
        if isinstance(e, RatingEvent):
            rating_sum += e.rating
            ratings += 1
        elif isinstance(e, ClickEvent):
            clicks += 1
            shown += 1
        elif isinstance(e, ImpressionEvent):
            shown += 1
    logloss_sum = se_sum = 0.0
    n_engagement = n_rating = 0
    for e in window:
        if isinstance(e, RatingEvent):
            if ratings:
                err = e.rating - rating_sum / ratings
                se_sum += err * err
                n_rating += 1
            rating_sum += e.rating
            ratings += 1
        elif isinstance(e, ClickEvent | ImpressionEvent):
            p = (clicks + 0.5) / (shown + 1.0)
            shown += 1
            n_engagement += 1
            if isinstance(e, ClickEvent):
                clicks += 1
                logloss_sum -= math.log(p)
            else:
                logloss_sum -= math.log(1.0 - p)
    return References(
        logloss=logloss_sum / n_engagement if n_engagement else None,
        rmse=math.sqrt(se_sum / n_rating) if n_rating else None,
    )


_Learn = Callable[
    [InteractionEvent, dict[str, dict[str, Any]], dict[str, dict[str, Any]], bool], float | None
]


def _learner(bundle: ModelBundle) -> _Learn:
    """``bundle.learn`` typed for interaction events (the only ones retraining sees)."""
    return cast(_Learn, bundle.learn)


def prequential_losses(
    bundle: ModelBundle,
    events: Iterable[InteractionEvent],
    users: dict[str, dict[str, Any]],
    items: dict[str, dict[str, Any]],
) -> HoldoutLosses:
    """Score then learn every event with ``bundle`` (which it updates); sum the losses.

    This is what the live learner does per event, so the result of a bundle that has run
    the whole stream is directly comparable to a champion's :class:`HoldoutLosses`.
    """
    learn = _learner(bundle)
    logloss_sum = se_sum = 0.0
    n_engagement = n_rating = 0
    for e in events:
        pred = learn(e, users, items, True)
        if pred is None:
            continue
        if isinstance(e, RatingEvent):
            err = e.rating - pred
            se_sum += err * err
            n_rating += 1
        else:
            p = _EPS if pred < _EPS else (1.0 - _EPS if pred > 1.0 - _EPS else pred)
            logloss_sum -= math.log(p) if isinstance(e, ClickEvent) else math.log(1.0 - p)
            n_engagement += 1
    return HoldoutLosses(logloss_sum, n_engagement, se_sum, n_rating)


# -- search space --------------------------------------------------------------------------

# Searched on a log scale: ModelConfig field -> (low, high).
LOG_RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (0.005, 0.2),
    "regularization": (1e-4, 0.1),
    "bias_learning_rate": (0.005, 0.2),
    "implicit_learning_rate": (0.01, 0.5),
    "engagement_learning_rate": (0.005, 0.5),
}
_BATCH_ONLY = ("window", "epochs", "older")


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """One point of the search space: ModelConfig fields plus the batch-only knobs.

    ``window`` is the share of the most recent history learned ``epochs`` times; ``older``
    is what is learned once first from the history before it: nothing (``"skip"``, to
    forget what a drift made stale), its ratings only (``"ratings"``: they are sparse, and
    a rating model starved of them does worse than a stale one) or all of it (``"once"``,
    keeping what did not change, e.g. items). With ``window=1.0`` ``older`` has no effect.
    """
    return {
        "factors": trial.suggest_categorical("factors", FACTORS),
        **{
            name: trial.suggest_float(name, low, high, log=True)
            for name, (low, high) in LOG_RANGES.items()
        },
        "epochs": trial.suggest_categorical("epochs", EPOCHS),
        "window": trial.suggest_categorical("window", WINDOW_SHARES),
        "older": trial.suggest_categorical("older", OLDER),
    }


def _base_point(base: ModelConfig) -> dict[str, Any] | None:
    """``base`` as a point of the search space (None when it lies outside of it)."""
    if base.factors not in FACTORS:
        return None
    point: dict[str, Any] = {"factors": base.factors}
    for name, (low, high) in LOG_RANGES.items():
        value = getattr(base, name)
        if not low <= value <= high:
            return None
        point[name] = value
    point.update(epochs=1, window=1.0, older="once")
    return point


def _window_start(n: int, share: float) -> int:
    """Index of the first of the most recent ``share`` of ``n`` events (at least one)."""
    return n - max(1, min(n, math.ceil(share * n)))


class _FrozenEngagement:
    """Stands in for ``bundle.engagement`` during extra passes: it builds features and
    predicts like the real click model but does not learn."""

    def __init__(self, model: EngagementModel) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def learn(self, x: dict[str, float], clicked: bool) -> None:
        pass


def _train(
    bundle: ModelBundle,
    history: Sequence[InteractionEvent],
    users: dict[str, dict[str, Any]],
    items: dict[str, dict[str, Any]],
    window: float,
    epochs: int,
    older: str = "skip",
) -> int:
    """Learn the last ``window`` share of ``history`` ``epochs`` times; return its start.

    ``older`` says what to learn once first from the events before the window (see
    :func:`suggest_params`). The click model learns in the first pass only: it takes the
    implicit model's score as a feature, and after a pass that score has seen the event,
    so later passes would teach the click model to over-trust it (a stacking leak). The
    extra passes refine the rating and implicit factor models.
    """
    start = _window_start(len(history), window)
    part = history[start:]
    learn = _learner(bundle)
    if older == "once":
        for e in history[:start]:
            learn(e, users, items, False)
    elif older == "ratings":
        for e in history[:start]:
            if isinstance(e, RatingEvent):
                learn(e, users, items, False)
    for e in part:
        learn(e, users, items, False)
    if epochs > 1:
        engagement = bundle.engagement
        bundle.engagement = cast(EngagementModel, _FrozenEngagement(engagement))
        try:
            for _ in range(epochs - 1):
                for e in part:
                    learn(e, users, items, False)
        finally:
            bundle.engagement = engagement
    return start


# -- outcome -------------------------------------------------------------------------------


@dataclass
class RetrainOutcome:
    """Result of :func:`retrain`; :meth:`as_dict` is its JSON-ready summary (no bundle).

    ``bundle`` has learned the events before ``trained_from`` (the learner's index where
    the training window starts) as ``params["older"]`` says (not at all, their ratings only,
    or all once), then ``params["epochs"]`` passes over the window up to the end of
    validation (the click model in the first only), then the hold-out events once: it is
    current up to ``last_index``. ``trial_values`` are the validation quality losses of the
    completed trials in order, ``holdout_refs`` the naive references of the hold-out and
    ``challenger_losses`` the challenger's summed hold-out losses.
    """

    bundle: ModelBundle
    params: dict[str, Any]
    trials: int
    best_validation: float
    challenger_holdout: float
    champion_holdout: float | None
    accepted: bool
    seconds: float
    first_index: int
    last_index: int
    n_events: int
    trained_from: int
    splits: dict[str, tuple[int, int]]
    holdout_refs: References
    challenger_losses: HoldoutLosses
    min_improvement: float = 0.0
    trial_values: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "trials": self.trials,
            "best_validation": self.best_validation,
            "challenger_holdout": self.challenger_holdout,
            "champion_holdout": self.champion_holdout,
            "accepted": self.accepted,
            "min_improvement": self.min_improvement,
            "seconds": self.seconds,
            "first_index": self.first_index,
            "last_index": self.last_index,
            "n_events": self.n_events,
            "trained_from": self.trained_from,
            "splits": {k: list(v) for k, v in self.splits.items()},
            "holdout_refs": asdict(self.holdout_refs),
            "challenger_losses": asdict(self.challenger_losses),
            "trial_values": list(self.trial_values),
        }


# -- procedure -----------------------------------------------------------------------------


def retrain(
    data: TrainingData,
    *,
    base: ModelConfig,
    limits: Limits,
    holdout: int,
    validation: int,
    n_trials: int = 12,
    seed: int = 42,
    champion: HoldoutLosses | None,
    on_trial: Callable[[int, float, dict[str, Any]], None] | None = None,
    timeout_seconds: float | None = None,
    min_improvement: float = 0.0,
) -> RetrainOutcome:
    """Search hyperparameters, train the challenger and compare it with the champion.

    ``base`` supplies every ModelConfig field the search does not touch (its ``seed`` seeds
    the models), ``limits`` the rating scale and dwell cap. ``champion`` holds the live
    model's prequential losses on the last ``holdout`` events (None: no champion, the
    challenger is accepted). The challenger is accepted when its hold-out quality is below
    ``champion * (1 - min_improvement)``. ``on_trial(number, value, params)`` is called
    after each trial. The first trial is ``base`` learned as the live model learns (every
    event once; skipped when ``base`` lies outside the search space). ``timeout_seconds``
    stops the search after the running trial (the result then depends on machine speed, so
    it is no longer deterministic).

    Raises ValueError when the events cannot be split (training shorter than validation) or
    a window has nothing to score, RuntimeError when every trial diverged.
    """
    started = time.perf_counter()
    if holdout < 1 or validation < 1:
        raise ValueError(f"holdout and validation must be positive, got {holdout}, {validation}")
    if n_trials < 1:
        raise ValueError(f"n_trials must be positive, got {n_trials}")
    if not 0.0 <= min_improvement < 1.0:
        raise ValueError(f"min_improvement must be in [0, 1), got {min_improvement}")
    events, users, items = data.events, data.users, data.items
    n = len(events)
    n_train = n - holdout - validation
    if n_train < validation:
        raise ValueError(
            f"too few events to retrain: {n} events leave {max(n_train, 0)} for training "
            f"after validation={validation} and holdout={holdout}; training must be at least "
            f"as long as validation, i.e. at least {2 * validation + holdout} events"
        )
    train = events[:n_train]
    history = events[: n_train + validation]
    valid = events[n_train : n_train + validation]
    hold = events[n_train + validation :]
    valid_refs = naive_references(valid, train)
    hold_refs = naive_references(hold, history)
    for name, refs in (("validation", valid_refs), ("hold-out", hold_refs)):
        if not refs.usable:
            raise ValueError(
                f"the {name} window has nothing to score: it needs click/impression or "
                "rating events"
            )

    def fresh(params: dict[str, Any]) -> ModelBundle:
        update = {k: v for k, v in params.items() if k not in _BATCH_ONLY}
        cfg = base.model_copy(update=update)
        return ModelBundle.fresh(
            cfg,
            rating_min=limits.rating_min,
            rating_max=limits.rating_max,
            dwell_cap_seconds=limits.dwell_cap_seconds,
        )

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial)
        bundle = fresh(params)
        _train(bundle, train, users, items, params["window"], params["epochs"], params["older"])
        value = prequential_losses(bundle, valid, users, items).quality(valid_refs)
        if not math.isfinite(value):  # a diverged model: worst, but not a failed trial
            value = math.inf
        if on_trial is not None:
            on_trial(trial.number, value, params)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=seed, multivariate=True, n_startup_trials=min(10, max(3, n_trials // 3))
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    # Warm start: the first trial is the base configuration learned the way the live model
    # learns (everything once), so the search starts from the champion's own settings.
    # The second refines it with more passes, which is where most of a batch model's edge
    # over its online twin comes from (the search explores from there).
    start_point = _base_point(base)
    if start_point is not None:
        study.enqueue_trial(start_point)
        study.enqueue_trial({**start_point, "epochs": 2})
        # After a drift the old history misleads: try recent windows early too.
        for share in WINDOW_SHARES[:2]:
            study.enqueue_trial({**start_point, "epochs": 2, "window": share, "older": "ratings"})
    study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done or not math.isfinite(study.best_value):
        raise RuntimeError("every hyperparameter trial diverged; no challenger to propose")
    best = study.best_trial
    params = {k: best.params[k] for k in sorted(best.params)}

    bundle = fresh(params)
    start = _train(
        bundle, history, users, items, params["window"], params["epochs"], params["older"]
    )
    challenger = prequential_losses(bundle, hold, users, items)  # learns the hold-out too
    challenger_q = challenger.quality(hold_refs)
    champion_q = champion.quality(hold_refs) if champion is not None else None
    accepted = champion_q is None or challenger_q < champion_q * (1.0 - min_improvement)

    first = data.first_index
    return RetrainOutcome(
        bundle=bundle,
        params=params,
        trials=len(done),
        best_validation=float(study.best_value),
        challenger_holdout=challenger_q,
        champion_holdout=champion_q,
        accepted=accepted,
        seconds=time.perf_counter() - started,
        first_index=first,
        last_index=first + n - 1,
        n_events=n,
        trained_from=first + start,
        splits={
            "training": (first, first + n_train - 1),
            "validation": (first + n_train, first + n_train + validation - 1),
            "holdout": (first + n_train + validation, first + n - 1),
        },
        holdout_refs=hold_refs,
        challenger_losses=challenger,
        min_improvement=min_improvement,
        trial_values=[float(t.value) for t in done if t.value is not None],
    )
