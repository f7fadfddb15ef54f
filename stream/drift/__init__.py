"""Drift: statistics, concept and data detectors, the monitor, and the retrain policy."""

from stream.drift.detectors import (
    DWELL_BUCKETS,
    EVENT_TYPE_CODES,
    CategoryCodes,
    ConceptMethod,
    DataMethod,
    DistributionDriftDetector,
    DriftMonitor,
    LossDriftDetector,
    Signal,
    dwell_bucket,
    js_divergence,
    psi,
)
from stream.drift.policy import Decision, RetrainPolicy

__all__ = [
    "ConceptMethod",
    "DataMethod",
    "CategoryCodes",
    "DWELL_BUCKETS",
    "Decision",
    "DistributionDriftDetector",
    "DriftMonitor",
    "EVENT_TYPE_CODES",
    "LossDriftDetector",
    "RetrainPolicy",
    "Signal",
    "dwell_bucket",
    "js_divergence",
    "psi",
]
