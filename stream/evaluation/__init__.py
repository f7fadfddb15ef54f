"""Prequential evaluation: scores of each event before it is learned, naive baselines, and
the typed outcomes the learner hands to its observers."""

from stream.evaluation.baselines import NaiveBaselines
from stream.evaluation.outcome import Dwelled, Engagement, OutcomeObserver, Rated
from stream.evaluation.prequential import BinaryScore, HitRate, RegressionScore

__all__ = [
    "BinaryScore",
    "Dwelled",
    "Engagement",
    "HitRate",
    "NaiveBaselines",
    "OutcomeObserver",
    "Rated",
    "RegressionScore",
]
