"""The consumer's side of a deletion request: erase the user, leave no id in the logs.

``feedback-loop forget USER_ID`` publishes a :class:`~stream.events.ForgetUser` on the control
topic; :class:`~consumers.model_control.ModelControl` reads it between two batches, calls
:func:`forget_user` and has the consumer checkpoint at once (the checkpoint keeps the control
offset: after a crash from an older checkpoint the request is read and applied again). The
checkpoint's model-state snapshot that follows publishes a tombstone for the user, so
``serve`` drops them too.
"""

from __future__ import annotations

import logging

from stream.events import ForgetUser
from stream.learner import FeedbackLearner

log = logging.getLogger(__name__)

__all__ = ["forget_user"]


def forget_user(learner: FeedbackLearner, message: ForgetUser) -> None:
    """Erase ``message.user_id`` from the learner (logged without the id: a log is a trace)."""
    learner.forget(message.user_id)
    log.warning(
        "forgot a user at event %d (%d forgotten so far)",
        learner.counts.consumed,
        learner.users_forgotten,
    )
