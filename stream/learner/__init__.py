"""The consumer's user logic: admit each event, score it, then learn it."""

# Counts, Rejection and SeenEvents live in stream.events (admission); re-exported here for
# the code that knows them as the learner's.
from stream.events import Counts, Rejection, SeenEvents
from stream.learner.item_sync import ItemDelta, ItemSync
from stream.learner.learner import FeedbackLearner

__all__ = [
    "Counts",
    "FeedbackLearner",
    "ItemDelta",
    "ItemSync",
    "Rejection",
    "SeenEvents",
]
