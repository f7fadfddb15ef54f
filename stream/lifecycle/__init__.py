"""The model lifecycle: retrain state, hold-out window, registry, search and training, swaps."""

from stream.lifecycle.holdout import NO_LOSS, HoldoutWindow
from stream.lifecycle.model_lifecycle import CONTROL_REJECT_REASONS, ModelLifecycle
from stream.lifecycle.records import AlarmRecord, RetrainAnswer, RetrainRecord, SwapRecord
from stream.lifecycle.registry import ModelRegistry, ModelVersion, RegistryError
from stream.lifecycle.retrain import RetrainOutcome, retrain, retrain_with
from stream.lifecycle.scoring import (
    HoldoutLosses,
    References,
    naive_references,
    prequential_losses,
    quality_loss,
)
from stream.lifecycle.search import (
    EPOCHS,
    FACTORS,
    LOG_RANGES,
    OLDER,
    WINDOW_SHARES,
    suggest_params,
)
from stream.lifecycle.state import InvalidTransition, RetrainState
from stream.lifecycle.training import TrainingData

__all__ = [
    "AlarmRecord",
    "InvalidTransition",
    "RetrainAnswer",
    "RetrainRecord",
    "RetrainState",
    "SwapRecord",
    "CONTROL_REJECT_REASONS",
    "EPOCHS",
    "FACTORS",
    "HoldoutLosses",
    "HoldoutWindow",
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
    "retrain_with",
    "suggest_params",
]
