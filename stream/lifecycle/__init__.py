"""The model lifecycle: retrain state, registry, search and training, swaps."""

from stream.lifecycle.model_lifecycle import NO_LOSS, ModelLifecycle
from stream.lifecycle.registry import ModelRegistry, ModelVersion, RegistryError
from stream.lifecycle.retrain import (
    EPOCHS,
    FACTORS,
    LOG_RANGES,
    OLDER,
    WINDOW_SHARES,
    HoldoutLosses,
    References,
    RetrainOutcome,
    TrainingData,
    naive_references,
    prequential_losses,
    quality_loss,
    retrain,
    suggest_params,
)

__all__ = [
    "EPOCHS",
    "FACTORS",
    "HoldoutLosses",
    "LOG_RANGES",
    "ModelLifecycle",
    "ModelRegistry",
    "ModelVersion",
    "NO_LOSS",
    "OLDER",
    "References",
    "RegistryError",
    "RetrainOutcome",
    "TrainingData",
    "WINDOW_SHARES",
    "naive_references",
    "prequential_losses",
    "quality_loss",
    "retrain",
    "suggest_params",
]
