"""Click probability from demographic, content and context features.

:class:`EngagementModel` wraps River's online logistic regression over sparse one-hot
features built by :meth:`EngagementModel.features`: who the user is (age band, gender,
occupation), what the item is (genres, decade), where and when it is shown (device, part of
day, weekend) and the user x genre crosses that carry most of the personalization.

>>> from stream.events import Context
>>> user = {"age": 24, "gender": "F", "occupation": "student"}
>>> item = {"genres": ("Comedy", "Romance"), "year": 1995}
>>> x = EngagementModel.features(user, item, Context(device="mobile", hour=20))
>>> sorted(k for k in x if "|" in k)[:2]
['age=20s|genre=Comedy', 'age=20s|genre=Romance']
>>> round(x["genre=Comedy"], 4), x["gender=F|genre=Romance"] == x["genre=Comedy"]
(0.7071, True)
>>> model = EngagementModel()
>>> model.predict_proba(x)
0.5
>>> for _ in range(20):
...     model.learn(x, True)
>>> model.predict_proba(x) > 0.9
True
"""

from __future__ import annotations

from collections.abc import Mapping
from math import exp, sqrt
from typing import Any

from river import linear_model, optim
from river.utils import VectorDict

from stream.config import ModelConfig
from stream.events import Context
from stream.models.cold_start import AGE_BANDS as _AGE_BANDS

__all__ = ["EngagementModel"]

# Lookup tables: a feature name costs one index, not a format, per event. The age bands are
# the ones cold start segments users by.
_PARTS_OF_DAY: tuple[str, ...] = (
    ("hour=night",) * 6 + ("hour=morning",) * 6 + ("hour=afternoon",) * 6 + ("hour=evening",) * 6
)


def _plain_sgd_log(model: linear_model.LogisticRegression) -> bool:
    """Whether ``model`` is the configuration :meth:`EngagementModel.predict_learn`
    reproduces: log loss with unit class weights, plain SGD at a constant rate, a constant
    intercept rate, no L1/L2 penalty, zero initial weights."""
    loss, opt = model.loss, model.optimizer
    return (
        type(loss) is optim.losses.Log
        and loss.weight_pos == 1.0
        and loss.weight_neg == 1.0
        and type(opt) is optim.SGD
        and type(opt.lr) is optim.schedulers.Constant
        and type(model.intercept_lr) is optim.schedulers.Constant
        and model.l1 == 0
        and model.l2 == 0
        and type(model.initializer) is optim.initializers.Zeros
    )


# Caches of EngagementModel.features, each at most this many entries: the user part by the
# user's values, the genre part (genres and user x genre crosses) by the user's feature
# names and the genres. Both domains are small (demographics, genre sets), so most events
# hit and build no string.
_CACHE_SIZE = 65_536
_USER_PARTS: dict[tuple[Any, ...], tuple[dict[str, float], str | None, str | None, str | None]] = {}
_GENRE_PARTS: dict[tuple[Any, ...], dict[str, float]] = {}
_NO_USER: tuple[dict[str, float], None, None, None] = ({}, None, None, None)
# The whole user and item part of the features (what _profile_part builds), by the values
# of both: one lookup and one copy per event.
_PARTS: dict[tuple[Any, ...], dict[str, float]] = {}


def _user_part(
    user: Mapping[str, Any],
) -> tuple[dict[str, float], str | None, str | None, str | None]:
    """The user's features and the names the crosses start with (age, gender, occupation)."""
    x: dict[str, float] = {}
    age_f = gender_f = occ_f = None
    age = user.get("age")
    if age is not None and 0 <= age <= 120:
        age_f = "age=" + _AGE_BANDS[age]
        x[age_f] = 1.0
    gender = user.get("gender")
    if gender:
        gender_f = "gender=" + gender
        x[gender_f] = 1.0
    occupation = user.get("occupation")
    if occupation:
        occ_f = "occ=" + occupation
        x[occ_f] = 1.0
    return x, age_f, gender_f, occ_f


def _genre_part(
    genres: Any, age_f: str | None, gender_f: str | None, occ_f: str | None
) -> dict[str, float]:
    """Each genre and its crosses with the user's features, weighing 1/sqrt(n_genres)."""
    x: dict[str, float] = {}
    w = 1.0 / sqrt(len(genres))
    for genre in genres:
        genre_f = "genre=" + genre
        x[genre_f] = w
        if age_f:
            x[age_f + "|" + genre_f] = w
        if gender_f:
            x[gender_f + "|" + genre_f] = w
        if occ_f:
            x[occ_f + "|" + genre_f] = w
    return x


def _profile_part(
    user: Mapping[str, Any] | None, item: Mapping[str, Any] | None
) -> dict[str, float]:
    """The features of the user and the item, in the order EngagementModel.features puts
    them: the user's, each genre and its crosses, the decade."""
    if user:
        age = user.get("age")
        ukey = (age, type(age), user.get("gender"), user.get("occupation"))
        ux, age_f, gender_f, occ_f = _cached(_USER_PARTS, ukey, _user_part, user)
    else:
        ux, age_f, gender_f, occ_f = _NO_USER
    x = ux.copy()
    if item:
        genres = item.get("genres")
        if genres:
            gkey = (age_f, gender_f, occ_f, genres)
            x.update(_cached(_GENRE_PARTS, gkey, _genre_part, genres, age_f, gender_f, occ_f))
        year = item.get("year")
        if year is not None:
            x[f"decade={year // 10 * 10}s"] = 1.0
    return x


def _cached(cache: dict[Any, Any], key: tuple[Any, ...], build: Any, *args: Any) -> Any:
    """``cache[key]``, built by ``build(*args)`` on a miss; an unhashable key (a list among
    the values) is built and not kept. The cache is emptied when full."""
    try:
        value = cache.get(key)
    except TypeError:
        return build(*args)
    if value is None:
        value = build(*args)
        if len(cache) >= _CACHE_SIZE:
            cache.clear()  # bounded; refilled by the profiles still active
        cache[key] = value
    return value


class EngagementModel:
    """Online logistic regression (River) predicting whether a shown item is clicked.

    Parameters
    ----------
    learning_rate
        SGD step size of the weights and of the intercept.

    >>> m = EngagementModel(learning_rate=0.1)
    >>> x = {"device=tv": 1.0}
    >>> for clicked in (False, False, True, False):
    ...     m.learn(x, clicked)
    >>> m.predict_proba(x) < 0.5
    True
    """

    # Whether predict_learn may take its fast path (see _plain_sgd_log); None: not checked.
    _fast: bool | None = None

    def __init__(self, learning_rate: float = 0.05) -> None:
        self.learning_rate = learning_rate
        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), intercept_lr=learning_rate
        )
        self.n_learned = 0

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> EngagementModel:
        return cls(learning_rate=cfg.engagement_learning_rate)

    @staticmethod
    def features(
        user: Mapping[str, Any] | None,
        item: Mapping[str, Any] | None,
        context: Context | None,
    ) -> dict[str, float]:
        """Sparse features of showing ``item`` to ``user`` in ``context`` (any may be None).

        ``user`` has keys ``age``, ``gender``, ``occupation``; ``item`` has ``genres`` and
        ``year``. Genres (and their crosses) weigh ``1/sqrt(n_genres)`` so multi-genre items
        do not get a larger norm. A fresh dict each call (the caller may add to it).
        """
        # Types are part of the user key: an age of 33 and 33.0 are equal keys, but only
        # one is a valid index of the age bands (and a year of 1995.0 names another decade).
        if user:
            age = user.get("age")
            ukey: tuple[Any, ...] | None = (
                age,
                type(age),
                user.get("gender"),
                user.get("occupation"),
            )
        else:
            ukey = None
        if item:
            genres, year = item.get("genres"), item.get("year")
            key: tuple[Any, ...] = (ukey, genres, year, type(year))
        else:
            key = (ukey, None, None, None)
        # The user and item part, built once per (user values, item values) and copied.
        x: dict[str, float] = _cached(_PARTS, key, _profile_part, user, item).copy()
        if context is not None:
            if context.device is not None:
                x["device=" + context.device] = 1.0
            if context.hour is not None:
                x[_PARTS_OF_DAY[context.hour]] = 1.0
            if context.weekday is not None:
                x["day=weekend" if context.weekday >= 5 else "day=weekday"] = 1.0
        return x

    def predict_proba(self, x: dict[str, float]) -> float:
        """Probability of a click."""
        return float(self.model.predict_proba_one(x)[True])

    def learn(self, x: dict[str, float], clicked: bool) -> None:
        """One SGD step on the log loss."""
        self.model.learn_one(x, clicked)
        self.n_learned += 1

    def predict_learn(self, x: dict[str, float], clicked: bool, score: bool = True) -> float | None:
        """:meth:`predict_proba` (if ``score``) then :meth:`learn`, with the same results.

        The hot path of the consumer: River's ``predict_proba_one`` and ``learn_one`` each
        compute ``w . x``; this computes it once and takes River's own SGD step on River's
        weights (the same Rust vector operations in the same order), so the weights are
        bit-identical to ``learn_one``'s. Configurations it does not reproduce (another
        loss, optimizer, schedule or penalty) go through River's methods.
        """
        model = self.model
        fast = self._fast
        if fast is None:  # checked once (and once after unpickling an older model)
            fast = self._fast = _plain_sgd_log(model)
        p: float | None
        if not fast:
            p = self.predict_proba(x) if score else None
            self.learn(x, clicked)
            return p
        weights = model._weights
        raw = weights.dot(x) + model.intercept
        if not score:
            p = None
        elif raw < -30:  # river.utils.math.sigmoid, inlined (the same operations)
            p = 0.0
        elif raw > 30:
            p = 1.0
        else:
            p = 1 / (1 + exp(-raw))
        # optim.losses.Log.gradient with unit class weights, y in {-1, 1}
        y = 1 if clicked else -1
        z = raw * y
        if z > 18.0:
            g = 1.0 * exp(-z) * -y
        elif z < -18.0:
            g = 1.0 * -y
        else:
            g = 1.0 * -y / (exp(z) + 1.0)
        g = float(max(-model.clip_gradient, min(g * 1.0, model.clip_gradient)))
        optimizer = model.optimizer
        # Both schedules are Constant (_plain_sgd_log): Constant.get(t) is its learning_rate,
        # read here without the property and method frames.
        model.intercept -= model.intercept_lr.learning_rate * g
        weights.isub_scaled(VectorDict.from_scaled(x, g), optimizer.lr.learning_rate)
        optimizer.n_iterations += 1
        self.n_learned += 1
        return p

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.model.weights)

    @property
    def intercept(self) -> float:
        return float(self.model.intercept)

    def state_equal(self, other: object) -> bool:
        """Same learning rate, bit-identical weights and intercept."""
        if not isinstance(other, EngagementModel):
            return False
        return (
            self.learning_rate == other.learning_rate
            and self.n_learned == other.n_learned
            and self.model.intercept == other.model.intercept
            and self.model.weights == other.model.weights
        )

    def __eq__(self, other: object) -> bool:
        return self.state_equal(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by state

    def __repr__(self) -> str:
        return (
            f"EngagementModel(learning_rate={self.learning_rate}, "
            f"n_features={len(self.model.weights)}, n_learned={self.n_learned})"
        )
