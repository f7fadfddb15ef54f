"""Drift: statistics, concept and data detectors, the monitor, and the retrain policy.

One concept per module, as in ``river.drift``: :mod:`~stream.drift.stats` (divergences and
category codes), :mod:`~stream.drift.signals` (the alarm), :mod:`~stream.drift.concept` (loss
increases), :mod:`~stream.drift.cusum` (the calibrated loss-increase detector),
:mod:`~stream.drift.data` (input mix shifts), :mod:`~stream.drift.monitor` (the
learner's named set of detectors) and :mod:`~stream.drift.policy` (alarms -> retrain
decisions).
"""

from stream.drift.concept import ConceptMethod, LossDriftDetector
from stream.drift.cusum import CusumDriftDetector
from stream.drift.data import DataMethod, DistributionDriftDetector
from stream.drift.monitor import DriftMonitor
from stream.drift.observer import DriftObserver
from stream.drift.policy import Decision, RetrainPolicy
from stream.drift.signals import Signal
from stream.drift.stats import (
    DWELL_BUCKETS,
    EVENT_TYPE_CODES,
    CategoryCodes,
    dwell_bucket,
    js_divergence,
    psi,
)

__all__ = [
    "ConceptMethod",
    "DataMethod",
    "CategoryCodes",
    "CusumDriftDetector",
    "DWELL_BUCKETS",
    "Decision",
    "DistributionDriftDetector",
    "DriftMonitor",
    "DriftObserver",
    "EVENT_TYPE_CODES",
    "LossDriftDetector",
    "RetrainPolicy",
    "Signal",
    "dwell_bucket",
    "js_divergence",
    "psi",
]
