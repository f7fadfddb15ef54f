"""The consumer's user logic: admit each event, score it, then learn it."""

from stream.learner.learner import Counts, FeedbackLearner, Rejection, SeenEvents

__all__ = [
    "Counts",
    "FeedbackLearner",
    "Rejection",
    "SeenEvents",
]
