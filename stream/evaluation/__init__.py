"""Prequential evaluation: scores of each event before it is learned, and naive baselines."""

from stream.evaluation.prequential import BinaryScore, HitRate, RegressionScore

__all__ = [
    "BinaryScore",
    "HitRate",
    "RegressionScore",
]
