"""The hyperparameter search space of a retrain (sampled by a seeded Optuna TPE study).

Besides the :class:`~stream.config.ModelConfig` fields (which the model keeps using online
after a swap), batch-only knobs: ``window``, the share of the most recent training history
learned ``epochs`` times by SGD, ``older``, what is learned once first from the history
before that window, and the rating model's batch refit (``als_iterations`` rounds of
alternating least squares with penalties ``als_reg_factors`` and ``als_reg_bias``, see
:func:`stream.models.rating_batch.fit_biased_als`; 0 rounds: SGD only) and the implicit
model's (``implicit_iterations`` Newton sweeps, see
:func:`stream.models.implicit_batch.fit_implicit`).
"""

from __future__ import annotations

from typing import Any

import optuna

from stream.config import ModelConfig

__all__ = [
    "ALS_ITERATIONS",
    "ALS_RANGES",
    "ALS_START",
    "BATCH_ONLY",
    "EPOCHS",
    "FACTORS",
    "IMPLICIT_ITERATIONS",
    "IMPLICIT_START",
    "LOG_RANGES",
    "OLDER",
    "WINDOW_SHARES",
    "base_point",
    "suggest_params",
]

FACTORS: tuple[int, ...] = (8, 16, 32)
EPOCHS: tuple[int, ...] = (1, 2, 3)
WINDOW_SHARES: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
"""Shares of the most recent training history a trial learns ``epochs`` times."""
OLDER: tuple[str, ...] = ("skip", "ratings", "once")
"""What happens to the history before the window: left out, only its (sparse) ratings
learned once first, or all of it learned once first."""

# Searched on a log scale: ModelConfig field -> (low, high).
LOG_RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (0.005, 0.2),
    "regularization": (1e-4, 0.1),
    "bias_learning_rate": (0.005, 0.2),
    "implicit_learning_rate": (0.01, 0.5),
    "engagement_learning_rate": (0.005, 0.5),
}
ALS_ITERATIONS: tuple[int, ...] = (0, 4, 8)
"""Rounds of the rating model's batch refit (0: none, SGD passes only)."""
ALS_RANGES: dict[str, tuple[float, float]] = {
    "als_reg_factors": (1.0, 50.0),
    "als_reg_bias": (0.3, 20.0),
}
# The refit a search starts from (measured on MovieLens-100K in timestamp order).
ALS_START: dict[str, Any] = {"als_iterations": 4, "als_reg_factors": 10.0, "als_reg_bias": 2.0}
# The implicit refit a search starts from (measured on the simulator, bench/implicit_batch.py).
IMPLICIT_START: dict[str, Any] = {"implicit_iterations": 8}
# Penalties of a point without refit (ignored there, but every point names every knob).
ALS_RANGES_LOW: dict[str, float] = {name: low for name, (low, _) in ALS_RANGES.items()}
IMPLICIT_ITERATIONS: tuple[int, ...] = (0, 8)
"""Sweeps of the implicit model's batch refit (0: none)."""
BATCH_ONLY = ("window", "epochs", "older", "als_iterations", *ALS_RANGES, "implicit_iterations")


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
        "als_iterations": trial.suggest_categorical("als_iterations", ALS_ITERATIONS),
        "implicit_iterations": trial.suggest_categorical(
            "implicit_iterations", IMPLICIT_ITERATIONS
        ),
        **{
            name: trial.suggest_float(name, low, high, log=True)
            for name, (low, high) in ALS_RANGES.items()
        },
    }


def base_point(base: ModelConfig) -> dict[str, Any] | None:
    """``base`` as a point of the search space (None when it lies outside of it)."""
    if base.factors not in FACTORS:
        return None
    point: dict[str, Any] = {"factors": base.factors}
    for name, (low, high) in LOG_RANGES.items():
        value = getattr(base, name)
        if not low <= value <= high:
            return None
        point[name] = value
    point.update(
        epochs=1,
        window=1.0,
        older="once",
        als_iterations=0,
        implicit_iterations=0,
        **ALS_RANGES_LOW,
    )
    return point
