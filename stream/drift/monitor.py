"""The learner's drift monitor: named concept and data detectors, and the alarms they raised.

:class:`DriftMonitor` owns a named set of :class:`~stream.drift.concept.LossDriftDetector`,
:class:`~stream.drift.cusum.CusumDriftDetector` and
:class:`~stream.drift.data.DistributionDriftDetector` and is what the learner calls; every
alarm is a :class:`~stream.drift.signals.Signal`, collected until :meth:`DriftMonitor.drain`.

>>> import random
>>> rng = random.Random(1)
>>> monitor = DriftMonitor.default()
>>> for i in range(60_000):  # log losses whose mean goes from ~0.40 to ~0.60 at event 40,000
...     y = rng.random() < (0.137 if i < 40_000 else 0.252)
...     monitor.observe_engagement_loss(1.897 if y else 0.1625, i)
>>> signals = monitor.drain()
>>> sorted({s.detector for s in signals})  # doctest: +NORMALIZE_WHITESPACE
['engagement_logloss_adwin', 'engagement_logloss_cusum', 'engagement_logloss_kswin',
 'engagement_logloss_page_hinkley']
>>> all(40_000 < s.event_index < 60_000 for s in signals), monitor.drain()
(True, [])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stream.config import DriftConfig
from stream.drift.concept import ConceptMethod, LossDriftDetector
from stream.drift.cusum import CusumDriftDetector
from stream.drift.data import DataMethod, DistributionDriftDetector
from stream.drift.signals import Signal
from stream.drift.stats import DWELL_BUCKETS, CategoryCodes
from stream.events import EVENT_TYPES

__all__ = ["Detector", "DriftMonitor"]

Detector = LossDriftDetector | CusumDriftDetector | DistributionDriftDetector


class DriftMonitor:
    """The learner's drift detectors, by stream, plus the alarms they raised.

    Each ``observe_*`` method forwards one observation to the detectors of its stream and
    keeps any :class:`Signal` until :meth:`drain`. The loss streams are summed into blocks
    once for all their detectors (which must therefore share one ``block_size``), so
    :meth:`observe_engagement_loss` costs one addition per event whatever the detector count
    (two with calibrated CUSUMs, which keep blocks of their own size).

    >>> from stream.drift.stats import EVENT_TYPE_CODES
    >>> m = DriftMonitor.default(window=1000)
    >>> for i in range(3000):
    ...     m.observe_event_type(EVENT_TYPE_CODES["click" if i < 2000 else "rating"], i)
    >>> [(s.detector, s.event_index) for s in m.drain()]
    [('event_type_mix_js', 2999)]
    >>> row = m.snapshot()[6]
    >>> row["name"], row["kind"], row["method"], row["in_drift"], row["n_alarms"]
    ('event_type_mix_js', 'data', 'js', True, 1)
    >>> m.reset("data"); m.detectors["event_type_mix_js"].in_drift
    False
    """

    def __init__(
        self,
        engagement: Iterable[LossDriftDetector] = (),
        rating: Iterable[LossDriftDetector] = (),
        event_type: Iterable[DistributionDriftDetector] = (),
        click_genre: Iterable[DistributionDriftDetector] = (),
        dwell: Iterable[DistributionDriftDetector] = (),
        new_user: Iterable[DistributionDriftDetector] = (),
        genre_codes: CategoryCodes | None = None,
        engagement_cusum: Iterable[CusumDriftDetector] = (),
    ) -> None:
        self._engagement = tuple(engagement)
        self._engagement_cusum = tuple(engagement_cusum)
        self._rating = tuple(rating)
        self._event_type = tuple(event_type)
        self._click_genre = tuple(click_genre)
        self._dwell = tuple(dwell)
        self._new_user = tuple(new_user)
        self.detectors: dict[str, Detector] = {}
        for group in (
            self._engagement,
            self._engagement_cusum,
            self._rating,
            self._event_type,
            self._click_genre,
            self._dwell,
            self._new_user,
        ):
            for d in group:
                if d.name in self.detectors:
                    raise ValueError(f"duplicate detector name {d.name!r}")
                self.detectors[d.name] = d
        self._engagement_block = _block_size(self._engagement, "engagement")
        self._cusum_block = _block_size(self._engagement_cusum, "engagement CUSUM")
        self._rating_block = _block_size(self._rating, "rating")
        sizes = [d.n_categories for d in self._click_genre]
        #: Maps genre names to the codes :meth:`observe_click_genre` expects.
        self.genre_codes = genre_codes or CategoryCodes(min(sizes) if sizes else 32)
        self._signals: list[Signal] = []
        self._reset_blocks()

    @classmethod
    def default(
        cls,
        seed: int = 42,
        block_size: int = 200,
        window: int = 5000,
        rating_block_size: int = 50,
        genre_categories: int = 32,
        psi_threshold: float | None = None,
        js_threshold: float | None = None,
        cusum_block_size: int = 250,
        cusum_threshold: float = 12.0,
    ) -> DriftMonitor:
        """The standard set: 6 concept detectors and 4 data detectors.

        Concept: ``engagement_logloss_{adwin,page_hinkley,kswin}`` (blocks of ``block_size``),
        the calibrated ``engagement_logloss_cusum`` (:class:`CusumDriftDetector`, blocks of
        ``cusum_block_size``, alarm level ``cusum_threshold``) and
        ``rating_se_{adwin,page_hinkley}`` (blocks of ``rating_block_size``). Data:
        ``event_type_mix_js``, ``click_genre_mix_psi`` (``genre_categories`` codes),
        ``dwell_psi`` (:data:`DWELL_BUCKETS`), ``new_user_share_psi`` (alarms only when the
        share of new users goes up), all over windows of ``window``.
        """

        def loss(name: str, method: ConceptMethod, block: int) -> LossDriftDetector:
            return LossDriftDetector(name, method, block_size=block, seed=seed)

        def mix(
            name: str, n: int, method: DataMethod, rising: int | None = None
        ) -> DistributionDriftDetector:
            threshold = psi_threshold if method == "psi" else js_threshold
            return DistributionDriftDetector(
                name, n, method=method, window=window, threshold=threshold, rising=rising
            )

        return cls(
            engagement=[
                loss("engagement_logloss_adwin", "adwin", block_size),
                loss("engagement_logloss_page_hinkley", "page_hinkley", block_size),
                loss("engagement_logloss_kswin", "kswin", block_size),
            ],
            engagement_cusum=[
                CusumDriftDetector(
                    "engagement_logloss_cusum", cusum_block_size, threshold=cusum_threshold
                )
            ],
            rating=[
                loss("rating_se_adwin", "adwin", rating_block_size),
                loss("rating_se_page_hinkley", "page_hinkley", rating_block_size),
            ],
            event_type=[mix("event_type_mix_js", len(EVENT_TYPES), "js")],
            click_genre=[mix("click_genre_mix_psi", genre_categories, "psi")],
            dwell=[mix("dwell_psi", DWELL_BUCKETS, "psi")],
            new_user=[mix("new_user_share_psi", 2, "psi", rising=1)],
        )

    @classmethod
    def from_config(cls, config: DriftConfig, seed: int = 42) -> DriftMonitor:
        """:meth:`default` with the sizes and thresholds of a :class:`DriftConfig`.

        >>> cusum = DriftMonitor.from_config(DriftConfig(cusum_threshold=9.0)).detectors[
        ...     "engagement_logloss_cusum"]
        >>> cusum.block_size, cusum.threshold
        (250, 9.0)
        """
        return cls.default(
            seed=seed,
            block_size=config.block_size,
            window=config.window,
            rating_block_size=config.rating_block_size,
            cusum_block_size=config.cusum_block_size,
            cusum_threshold=config.cusum_threshold,
        )

    def _reset_blocks(self) -> None:
        self._engagement_sum = 0.0
        self._engagement_n = 0
        self._cusum_sum = 0.0
        self._cusum_n = 0
        self._rating_sum = 0.0
        self._rating_n = 0

    # -- observations (hot path) ------------------------------------------------------------
    def observe_engagement_loss(self, loss: float, event_index: int) -> None:
        """Log loss of the click model on one click or impression, scored before learning."""
        self._engagement_sum += loss
        self._engagement_n += 1
        if self._engagement_n == self._engagement_block:
            mean = self._engagement_sum / self._engagement_n
            self._engagement_sum = 0.0
            self._engagement_n = 0
            self._feed_blocks(self._engagement, mean, event_index)
        self._cusum_sum += loss
        self._cusum_n += 1
        if self._cusum_n == self._cusum_block:
            mean = self._cusum_sum / self._cusum_n
            self._cusum_sum = 0.0
            self._cusum_n = 0
            self._feed_blocks(self._engagement_cusum, mean, event_index)

    def observe_rating_error(self, sq_err: float, event_index: int) -> None:
        """Squared error of the rating model on one rating, scored before learning."""
        self._rating_sum += sq_err
        self._rating_n += 1
        if self._rating_n == self._rating_block:
            mean = self._rating_sum / self._rating_n
            self._rating_sum = 0.0
            self._rating_n = 0
            self._feed_blocks(self._rating, mean, event_index)

    def observe_event_type(self, code: int, event_index: int) -> None:
        """Type of one applied event, as :data:`EVENT_TYPE_CODES` ``[event.type]``."""
        for d in self._event_type:
            s = d.update(code, event_index)
            if s is not None:
                self._signals.append(s)

    def observe_arrival(self, code: int, is_new: bool, event_index: int) -> None:
        """:meth:`observe_event_type` then :meth:`observe_new_user` (one call per event)."""
        signals = self._signals
        for d in self._event_type:
            s = d.update(code, event_index)
            if s is not None:
                signals.append(s)
        new = 1 if is_new else 0
        for d in self._new_user:
            s = d.update(new, event_index)
            if s is not None:
                signals.append(s)

    def observe_click_genre(self, code: int, event_index: int) -> None:
        """First genre of a clicked item, as ``self.genre_codes.code(genre)``."""
        for d in self._click_genre:
            s = d.update(code, event_index)
            if s is not None:
                self._signals.append(s)

    def observe_dwell(self, seconds: float, event_index: int) -> None:
        """Seconds of one dwell event (bucketed by :func:`dwell_bucket`)."""
        b = int(seconds).bit_length() if seconds > 0 else 0
        for d in self._dwell:
            s = d.update(b if b < d.n_categories else d.n_categories - 1, event_index)
            if s is not None:
                self._signals.append(s)

    def observe_new_user(self, is_new: bool, event_index: int) -> None:
        """Whether the user of one interaction is new (category 1) or not (0)."""
        for d in self._new_user:
            s = d.update(1 if is_new else 0, event_index)
            if s is not None:
                self._signals.append(s)

    def _feed_blocks(
        self,
        group: tuple[LossDriftDetector, ...] | tuple[CusumDriftDetector, ...],
        mean: float,
        event_index: int,
    ) -> None:
        for d in group:
            s = d.update_block(mean, event_index)
            if s is not None:
                self._signals.append(s)

    # -- control and reporting ----------------------------------------------------------------
    def drain(self) -> list[Signal]:
        """The signals raised since the last call (oldest first); clears them."""
        if not self._signals:
            return []
        out, self._signals = self._signals, []
        return out

    def reset(self, kind: str | None = None) -> None:
        """Reset all detectors, or only the ``"concept"`` or ``"data"`` ones."""
        if kind not in (None, "concept", "data"):
            raise ValueError(f"kind must be None, 'concept' or 'data', got {kind!r}")
        for d in self.detectors.values():
            if kind is None or d.kind == kind:
                d.reset()
        if kind in (None, "concept"):
            self._reset_blocks()

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per detector: name, kind, method, statistic, threshold, in_drift, n_alarms."""
        return [
            {
                "name": d.name,
                "kind": d.kind,
                "method": d.method,
                "statistic": float(d.statistic),
                "threshold": float(d.threshold),
                "in_drift": d.in_drift,
                "n_alarms": d.n_alarms,
            }
            for d in self.detectors.values()
        ]

    def __repr__(self) -> str:
        return f"DriftMonitor({', '.join(self.detectors)})"


def _block_size(
    group: Sequence[LossDriftDetector] | Sequence[CusumDriftDetector], stream: str
) -> int:
    sizes = {d.block_size for d in group}
    if len(sizes) > 1:
        raise ValueError(f"the {stream} detectors must share one block_size, got {sorted(sizes)}")
    return sizes.pop() if sizes else 1
