"""Rating scales: the one each dataset format declares, and whether a file fits a configured one.

A format that fixes its scale declares it (:data:`FORMAT_SCALES`): MovieLens-100K rates
1..5 in whole stars, MovieLens CSV (``ml-latest``, ``ml-25m``) 0.5..5 in half stars.
Commands that consume in their own process apply it (:meth:`RatingScale.applied_to`);
when the consumer is another process, its scale is what the settings declare, and
:func:`check_fits` says before anything is published which ratings of the file it would
dead-letter, instead of letting them vanish into the dead letters.

>>> from stream.config import Limits
>>> half = FORMAT_SCALES["movielens-csv"]
>>> limits = half.applied_to(Limits())
>>> limits.rating_min, limits.rating_max, limits.rating_step
(0.5, 5.0, 0.5)
>>> half.fits(Limits()), FORMAT_SCALES["movielens-100k"].fits(limits)
(False, True)
>>> half.env()
'FEEDBACK_LOOP_LIMITS__RATING_MIN=0.5 FEEDBACK_LOOP_LIMITS__RATING_MAX=5.0 \
FEEDBACK_LOOP_LIMITS__RATING_STEP=0.5'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from producers.replay.columns import Ratings
from producers.replay.files import ReplayError
from stream.config import Limits
from stream.events.admission import STEP_TOLERANCE, off_step

__all__ = ["FORMAT_SCALES", "SCALE_FIELDS", "RatingScale", "RatingScaleError", "check_fits"]

# The Limits fields that make up a rating scale (declared together, or not at all).
SCALE_FIELDS = frozenset({"rating_min", "rating_max", "rating_step"})


class RatingScaleError(ReplayError):
    """A file holds ratings the configured scale would dead-letter."""


@dataclass(frozen=True)
class RatingScale:
    """Ratings from ``min`` to ``max``; on ``min + k * step`` when ``step`` is set."""

    min: float
    max: float
    step: float | None = None

    def applied_to(self, limits: Limits) -> Limits:
        """``limits`` with this scale (validated: a copy goes through the model again)."""
        scale = {"rating_min": self.min, "rating_max": self.max, "rating_step": self.step}
        return Limits.model_validate({**limits.model_dump(), **scale})

    def fits(self, limits: Limits) -> bool:
        """Whether every rating of this scale passes ``limits``."""
        if self.min < limits.rating_min or self.max > limits.rating_max:
            return False
        if limits.rating_step is None:
            return True
        if self.step is None:
            return False
        # Every value of ours is on their grid when our min is and our step is a multiple.
        return not off_step(self.min, limits.rating_min, limits.rating_step) and not off_step(
            self.step, 0.0, limits.rating_step
        )

    def env(self) -> str:
        """The environment variables that declare this scale to every process."""
        out = [
            f"FEEDBACK_LOOP_LIMITS__RATING_MIN={self.min}",
            f"FEEDBACK_LOOP_LIMITS__RATING_MAX={self.max}",
        ]
        if self.step is not None:
            out.append(f"FEEDBACK_LOOP_LIMITS__RATING_STEP={self.step}")
        return " ".join(out)

    def describe(self) -> str:
        steps = f" in steps of {self.step}" if self.step is not None else ""
        return f"[{self.min}, {self.max}]{steps}"

    @classmethod
    def of(cls, limits: Limits) -> RatingScale:
        return cls(limits.rating_min, limits.rating_max, limits.rating_step)


# The scale each dataset format fixes. RecBole's atomic files carry many datasets (each
# with its own scale) and our own events carry ratings on whatever scale their producer
# used: neither declares one, so the configured scale stands for them.
FORMAT_SCALES: dict[str, RatingScale] = {
    "movielens-100k": RatingScale(1.0, 5.0, 1.0),
    "movielens-csv": RatingScale(0.5, 5.0, 0.5),
}


def check_fits(path: Path, ratings: Ratings, limits: Limits, declared: RatingScale | None) -> None:
    """Raise :class:`RatingScaleError` when a rating of the file does not fit ``limits``
    (the consumer would dead-letter it), naming the first such line, how many there are and
    the variables that declare a scale that fits (``declared``, the format's, when known).

    >>> import pyarrow as pa
    >>> r = Ratings(pa.chunked_array([["1", "2"]]), pa.chunked_array([["9", "9"]]),
    ...             np.array([4.0, 0.5]), np.array([1e9, 1e9]), np.array([2, 3]))
    >>> check_fits(Path("ratings.csv"), r, Limits(rating_min=0.5), None)
    >>> check_fits(Path("ratings.csv"), r, Limits(), FORMAT_SCALES["movielens-csv"])
    Traceback (most recent call last):
    ...
    producers.replay.scale.RatingScaleError: ratings.csv:3: rating 0.5 does not fit the \
configured scale [1.0, 5.0]: the consumer would dead-letter 1 of the file's 2 ratings. \
Declare the scale of the data once, for every process (the consumer, the retrainer, this \
command): FEEDBACK_LOOP_LIMITS__RATING_MIN=0.5 FEEDBACK_LOOP_LIMITS__RATING_MAX=5.0 \
FEEDBACK_LOOP_LIMITS__RATING_STEP=0.5
    """
    values = ratings.ratings
    bad = (values < limits.rating_min) | (values > limits.rating_max)
    step = limits.rating_step
    if step is not None:
        k = (values - limits.rating_min) / step
        bad |= np.abs(k - np.round(k)) > STEP_TOLERANCE
    if not bad.any():
        return
    first = int(np.flatnonzero(bad)[0])
    if declared is None:  # the span of the file itself: its step is anyone's guess
        declared = RatingScale(float(values.min()), float(values.max()))
    raise RatingScaleError(
        f"{path}:{ratings.lines[first]}: rating {values[first]} does not fit the configured "
        f"scale {RatingScale.of(limits).describe()}: the consumer would dead-letter "
        f"{int(bad.sum()):,} of the file's {len(values):,} ratings. Declare the scale of the "
        "data once, for every process (the consumer, the retrainer, this command): "
        f"{declared.env()}"
    )
