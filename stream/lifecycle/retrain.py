"""Batch retrain: hyperparameter search, then a champion/challenger check on a hold-out window.

The retrainer gets the recent history of admitted interaction events and splits it in time::

    | ........ training ........ | validation | hold-out |

An Optuna study (seeded TPE, so the same data and seed give the same result) searches the
model hyperparameters plus three batch-only knobs (see
:func:`~stream.lifecycle.search.suggest_params`): ``window``, the share of the most recent
training history to learn ``epochs`` times, and ``older``, whether the history before the
window is dropped (after a drift, old data can hurt), only its sparse ratings kept, or all
of it learned once. The first trial is the base configuration learned as the live model
learns (everything once). A trial trains a fresh bundle, then scores the validation window
prequentially (predict, then learn, event by event, as the live learner does).

The best parameters are then trained on training + validation and scored prequentially on
the hold-out window: that is the *challenger*. The live model's own prequential losses on
the same hold-out window (:class:`~stream.lifecycle.scoring.HoldoutLosses`) make the
*champion*. Both are turned into one :func:`~stream.lifecycle.scoring.quality_loss` (lower
is better; 1.0 is no better than the naive predictors) with the same naive references, and
the challenger is accepted only if it is better. The hold-out events are learned too, so the
returned bundle is up to date with the end of ``data`` and the caller only has to apply what
arrived since.

>>> from producers.simulator import Simulator, SimulatorConfig
>>> from stream.config import Limits, ModelConfig, Settings
>>> sim = Simulator(SimulatorConfig(n_users=40, n_items=30, seed=3))
>>> data = TrainingData.from_events([*sim.profiles(), *sim.events(1500)])
>>> len(data.events), len(data.users), len(data.items)
(1500, 40, 30)
>>> out = retrain(data, base=ModelConfig(), limits=Limits(), holdout=300, validation=300,
...               n_trials=2, champion=None)
>>> out.trials, out.accepted, out.n_events, (out.first_index, out.last_index)
(2, True, 1500, (0, 1499))
>>> sorted(out.params)[3:6]
['bias_learning_rate', 'engagement_learning_rate', 'epochs']
>>> 0.0 < out.challenger_holdout < 2.0
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from stream.config import Limits, ModelConfig, Settings
from stream.lifecycle.scoring import (
    HoldoutLosses,
    References,
    improvement_confidence,
    naive_references,
    prequential_losses,
)
from stream.lifecycle.search import (
    ALS_START,
    BATCH_ONLY,
    LOG_RANGES,
    base_point,
    suggest_params,
)
from stream.lifecycle.training import TrainingData, refit_implicit, refit_ratings, train_window
from stream.models import ModelBundle

__all__ = ["RetrainOutcome", "retrain", "retrain_with"]


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
    confidence: float | None = None
    min_confidence: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "trials": self.trials,
            "best_validation": self.best_validation,
            "challenger_holdout": self.challenger_holdout,
            "champion_holdout": self.champion_holdout,
            "accepted": self.accepted,
            "min_improvement": self.min_improvement,
            "confidence": self.confidence,
            "min_confidence": self.min_confidence,
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
    min_confidence: float = 0.0,
) -> RetrainOutcome:
    """Search hyperparameters, train the challenger and compare it with the champion.

    ``base`` supplies every ModelConfig field the search does not touch (its ``seed`` seeds
    the models), ``limits`` the rating scale and dwell cap. ``champion`` holds the live
    model's prequential losses on the last ``holdout`` events (None: no champion, the
    challenger is accepted). The challenger is accepted when its hold-out quality is below
    ``champion * (1 - min_improvement)`` and the hold-out is at least ``min_confidence`` sure
    of it (:func:`~stream.lifecycle.scoring.improvement_confidence`; reported either way,
    and not required when the champion's losses carry no spread). ``on_trial(number, value,
    params)`` is called after each trial. The first trial is ``base`` learned as the live
    model learns (every event once; skipped when ``base`` lies outside the search space).
    ``timeout_seconds`` stops the search after the running trial (the result then depends
    on machine speed, so it is no longer deterministic).

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
    if not 0.0 <= min_confidence < 1.0:
        raise ValueError(f"min_confidence must be in [0, 1), got {min_confidence}")
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
        update = {k: v for k, v in params.items() if k not in BATCH_ONLY}
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
        _train(bundle, train, data, params)
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
    # The next refine it in batch (the rating model's least-squares refit, more passes),
    # which is where a batch model's edge over its online twin comes from (the search
    # explores from there).
    start_point = base_point(base)
    if start_point is not None:
        study.enqueue_trial(start_point)
        # The rating model's least-squares refit (measured on MovieLens-100K; the
        # implicit model's Newton refit stays a search option: written back, it put the
        # click model's stacked cf_logit off its calibration on the simulator).
        refit = {**start_point, **ALS_START}
        study.enqueue_trial(refit)
        study.enqueue_trial({**refit, "epochs": 2})
        # After a drift the live model is still adapting: the implicit model learning
        # twice as fast (measured: better on both validation and hold-out after an abrupt
        # taste shift), then the recent window learned twice with the older clicks left
        # out (their ratings kept: they are sparse), with and without the refit.
        high = LOG_RANGES["implicit_learning_rate"][1]
        faster = {
            **start_point,
            "implicit_learning_rate": min(2 * base.implicit_learning_rate, high),
        }
        study.enqueue_trial(faster)
        recent = {"epochs": 2, "older": "ratings", "window": 0.25}
        study.enqueue_trial({**faster, **recent})
        study.enqueue_trial({**start_point, **ALS_START, **recent})
    study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done or not math.isfinite(study.best_value):
        raise RuntimeError("every hyperparameter trial diverged; no challenger to propose")
    best = study.best_trial
    params = {k: best.params[k] for k in sorted(best.params)}

    bundle = fresh(params)
    start = _train(bundle, history, data, params)
    challenger = prequential_losses(bundle, hold, users, items)  # learns the hold-out too
    challenger_q = challenger.quality(hold_refs)
    champion_q = champion.quality(hold_refs) if champion is not None else None
    confidence = (
        improvement_confidence(challenger, champion, hold_refs) if champion is not None else None
    )
    accepted = champion_q is None or (
        challenger_q < champion_q * (1.0 - min_improvement)
        and (confidence is None or confidence >= min_confidence)
    )
    # The hold-out was learned online while it was scored; now that it is judged, the
    # batch refits take it in too, so the new model is batch-fit on all its history.
    learned = events[start:] if params["older"] == "skip" else events
    if params["als_iterations"]:
        refit_ratings(
            bundle,
            learned,
            params["als_iterations"],
            params["als_reg_factors"],
            params["als_reg_bias"],
        )
    if params["implicit_iterations"]:
        refit_implicit(bundle, learned, users, items, params["implicit_iterations"])

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
        confidence=confidence,
        min_confidence=min_confidence,
    )


def retrain_with(
    settings: Settings,
    data: TrainingData,
    champion: HoldoutLosses | None,
    **options: Any,
) -> RetrainOutcome:
    """:func:`retrain` with the model, limits, split, search size, seed and acceptance rule
    of ``settings`` (the one place they map onto it); ``options``: ``on_trial``,
    ``timeout_seconds``."""
    cfg = settings.retrain
    return retrain(
        data,
        base=settings.model,
        limits=settings.limits,
        holdout=cfg.holdout_events,
        validation=cfg.validation_events,
        n_trials=cfg.trials,
        seed=settings.model.seed,
        champion=champion,
        min_improvement=cfg.min_improvement,
        min_confidence=cfg.min_confidence,
        **options,
    )


def _train(
    bundle: ModelBundle, history: list[Any], data: TrainingData, params: dict[str, Any]
) -> int:
    """Learn ``history`` (with the profiles of ``data``) the way the search point ``params``
    says; return the window start."""
    return train_window(
        bundle,
        history,
        data.users,
        data.items,
        params["window"],
        params["epochs"],
        params["older"],
        als_iterations=params["als_iterations"],
        als_reg_factors=params["als_reg_factors"],
        als_reg_bias=params["als_reg_bias"],
        implicit_iterations=params["implicit_iterations"],
    )
