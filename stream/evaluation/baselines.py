"""The naive predictors every model must beat, scored prequentially like the models.

The predictors are the running click-through rate ``(clicks + 0.5) / (shown + 1)`` and the
running mean rating. The live learner scores them on every event (its ``baseline`` report)
and the retrainer on its validation and hold-out windows (the references of the quality
loss), both through :class:`NaiveBaselines`.

>>> b = NaiveBaselines()
>>> b.observe_rating(4.0)  # history: learned, not scored
>>> b.score_rating(2.0); b.rating_score.rmse  # predicted 4.0
2.0
>>> round(b.score_engagement(True), 4)  # nothing shown yet: P(click) = 0.5
0.6931
>>> b.clicks, b.shown, b.ratings
(1, 1, 2)
"""

from __future__ import annotations

from stream.evaluation.prequential import BinaryScore, RegressionScore

__all__ = ["NaiveBaselines"]


class NaiveBaselines:
    """Running click-through rate and mean rating, with their prequential scores.

    ``first_rating`` is the prediction for a rating seen before any other: ``None`` leaves
    that rating unscored (the retrainer's references), a number scores it (the learner has
    always scored it against 0.0; kept so its ``baseline`` report does not change).
    """

    __slots__ = (
        "clicks",
        "shown",
        "rating_sum",
        "ratings",
        "click_score",
        "rating_score",
        "first_rating",
    )

    def __init__(self, first_rating: float | None = None) -> None:
        self.clicks = 0
        self.shown = 0
        self.rating_sum = 0.0
        self.ratings = 0
        self.first_rating = first_rating
        self.click_score = BinaryScore()
        self.rating_score = RegressionScore()

    def score_engagement(self, clicked: bool) -> float:
        """Score the naive click probability on one click or impression, then learn it;
        return the event's naive log loss."""
        loss = self.click_score.update(clicked, (self.clicks + 0.5) / (self.shown + 1.0))
        self.shown += 1  # observe_engagement, inlined: once per click or impression
        self.clicks += clicked
        return loss

    def score_rating(self, rating: float) -> None:
        """Score the running mean on one rating, then learn it."""
        n = self.ratings
        if n:
            self.rating_score.update(rating, self.rating_sum / n)
        elif self.first_rating is not None:
            self.rating_score.update(rating, self.first_rating)
        self.observe_rating(rating)

    def observe_engagement(self, clicked: bool) -> None:
        """Learn one click or impression without scoring it (history before a window)."""
        self.shown += 1
        self.clicks += clicked

    def observe_rating(self, rating: float) -> None:
        """Learn one rating without scoring it (history before a window)."""
        self.rating_sum += rating
        self.ratings += 1
