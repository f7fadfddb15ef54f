"""One typed configuration object for every process of the pipeline.

Values come from (highest first) explicit keyword arguments / CLI flags, environment
variables prefixed ``FEEDBACK_LOOP_`` (nested fields with ``__``, e.g.
``FEEDBACK_LOOP_MODEL__FACTORS=32``), and the defaults below. ``KAFKA_BOOTSTRAP_SERVERS`` is
read without prefix: when it is unset the project starts its embedded broker.

Settings are frozen: a process derives the variant it needs instead of changing a shared one.

>>> cfg = Settings(limits=Limits(rating_max=5))
>>> cfg.topics.events
'feedback.events'
>>> cfg.limits.rating_max
5.0
>>> cfg.consumer.group_id = "other"
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for ConsumerConfig
...
>>> other = cfg.model_copy(update={"consumer": cfg.consumer.model_copy(update={"group_id": "b"})})
>>> other.consumer.group_id, cfg.consumer.group_id
('b', 'feedback-loop')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Topics(_Frozen):
    """Kafka topic names."""

    events: str = "feedback.events"
    dead_letters: str = "feedback.dead-letters"
    control: str = "feedback.control"
    # What serving needs of the live models (stream/serving/records.py), keyed by entity;
    # compacted where the broker supports it. One partition: a total order of updates.
    model_state: str = "feedback.model-state"
    # Item-model deltas exchanged by the partitions' learners (consumers/item_exchange.py):
    # one partition, a total order; kept for ever (a new learner sums them from the start).
    item_updates: str = "feedback.item-updates"
    # One partition keeps a total order of events, which is what makes a replay give the
    # same models bit for bit. More partitions scale out but interleave item updates.
    events_partitions: int = Field(default=1, ge=1)

    @classmethod
    def prefixed(cls, prefix: str) -> Topics:
        """Topics of their own (a bench run, a test), named ``<prefix>.events`` and so on.

        >>> Topics.prefixed("t1").dead_letters
        't1.dead-letters'
        """
        return cls(
            events=f"{prefix}.events",
            dead_letters=f"{prefix}.dead-letters",
            control=f"{prefix}.control",
            model_state=f"{prefix}.model-state",
            item_updates=f"{prefix}.item-updates",
        )


class Limits(_Frozen):
    """Validation limits applied to every incoming event."""

    rating_min: float = 1.0
    rating_max: float = 5.0
    # Ratings must be rating_min + k * step (0.5: half stars); None accepts any value between.
    rating_step: float | None = Field(default=None, gt=0)
    dwell_cap_seconds: float = Field(default=1800.0, gt=0)
    # Events older than this (epoch seconds) are rejected; MovieLens-100K starts in 1997.
    ts_min: float = 631152000.0  # 1990-01-01
    # How far in the future (seconds) an event may claim to be, for clock skew.
    ts_max_skew_seconds: float = 86400.0
    # Events for users/items never announced by a profile event are dead-lettered.
    require_known_users: bool = True
    require_known_items: bool = True
    # A message larger than this (bytes) is dead-lettered unparsed, kind ``oversized``
    # (1 MiB: Kafka's default message size limit; real events are a few hundred bytes).
    max_message_bytes: int = Field(default=1_048_576, ge=1)
    # Item profiles: at most this many genres, each at most max_label_length characters
    # (a longer list or label dead-letters the profile, kind ``invalid_event``).
    max_genres_per_item: int = Field(default=32, ge=1)
    max_label_length: int = Field(default=64, ge=1)
    # Distinct values remembered per profile field (genres, genders, occupations): a new
    # value beyond this many is stored as "(other)", so the click model's features and the
    # cold-start keys stay bounded whatever the producers send.
    max_vocabulary: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _scale_is_ordered(self) -> Limits:
        if self.rating_min >= self.rating_max:
            raise ValueError(
                f"rating_min ({self.rating_min}) must be below rating_max ({self.rating_max})"
            )
        return self


class ModelConfig(_Frozen):
    """Hyperparameters of the online models."""

    factors: int = Field(default=16, ge=1, le=512)
    learning_rate: float = Field(default=0.05, gt=0)
    regularization: float = Field(default=0.02, ge=0)
    bias_learning_rate: float = Field(default=0.06, gt=0)
    init_scale: float = Field(default=0.1, ge=0)
    implicit_factors: int = Field(default=16, ge=1, le=512)
    implicit_learning_rate: float = Field(default=0.15, gt=0)
    implicit_regularization: float = Field(default=0.01, ge=0)
    # Confidence of a dwell event is 1 + dwell_alpha * min(dwell, cap) / cap.
    dwell_alpha: float = Field(default=2.0, ge=0)
    # Weight of an impression (shown, not clicked) as an implicit negative.
    negative_weight: float = Field(default=0.3, ge=0)
    engagement_learning_rate: float = Field(default=0.02, gt=0)
    seed: int = 42
    # Hybrid cold start (stream/models/cold_start.py): a new user's (item's) bias and
    # vector start from the mean of warm users of their segments (items of their genres).
    cold_start: bool = True
    # Updates a user or item needs to count as warm in those means.
    cold_start_min_updates: int = Field(default=3, ge=1)
    # Updates between recomputations of the means (also at least the number of rows).
    cold_start_refresh_every: int = Field(default=200, ge=1)
    # Pseudo-count of the global warm mean in each segment's or genre's mean.
    cold_start_shrinkage: float = Field(default=20.0, ge=0)


class ConsumerConfig(_Frozen):
    """Behaviour of the long-running consumer."""

    group_id: str = "feedback-loop"
    batch_size: int = Field(default=5000, ge=1)
    poll_timeout_seconds: float = Field(default=0.5, gt=0)
    state_dir: Path = Path("state")
    checkpoint_every_events: int = Field(default=200_000, ge=1)
    checkpoint_every_seconds: float = Field(default=10.0, gt=0)
    # event_ids remembered for de-duplication (a sliding window, checkpointed).
    dedup_window: int = Field(default=1_000_000, ge=0)
    # A user with more events than this in one minute of event time is treated as a bot;
    # events at the same event time count once (a page of ratings saved at once), so data
    # with one-second timestamps can never exceed 60 (see stream/events/admission.py).
    bot_events_per_minute: int = Field(default=120, ge=1)
    session_timeout_ms: int = Field(default=6000, ge=1000)
    # Bounded memory: at most this many users with learned state (None: unbounded); past it
    # (+5%) the least recently active are evicted and come back as cold starts.
    max_users: int | None = Field(default=None, ge=1)
    # Largest dead letter produced (value + key + headers, bytes): a larger rejected message
    # is cut to fit, with headers giving its original size. Below the 1 MB default message
    # limit of librdkafka and of Kafka topics; raise it only with the topic's
    # max.message.bytes.
    dead_letter_max_bytes: int = Field(default=900_000, ge=16_384)
    # The events log went backwards (a broker that lost its data): "fail" stops with an error
    # and keeps the checkpoint (replay from an archive is the remedy); "restart-from-beginning"
    # keeps the learned state and consumes the new log from its start (see consumers/loop.py).
    on_log_truncation: Literal["fail", "restart-from-beginning"] = "fail"
    # With no broker reachable for this long, the consumer stops with an error (no checkpoint).
    broker_lost_timeout_seconds: float = Field(default=60.0, gt=0)
    # With several partitions, their learners share one item model by exchanging deltas
    # every this many messages a consumer applies (0: never; each partition learns alone).
    share_items_every: int = Field(default=200, ge=0)


class DriftConfig(_Frozen):
    """Drift detection and the policy that turns its signals into retrain decisions."""

    enabled: bool = True
    # Concept detectors see block means of per-event losses (cheap and less noisy).
    block_size: int = Field(default=500, ge=1)
    rating_block_size: int = Field(default=100, ge=1)
    # Data detectors compare tumbling windows of this many observations to a reference.
    window: int = Field(default=2500, ge=100)
    # No retrain before this many events (the models are still warming up) ...
    warmup_events: int = Field(default=30_000, ge=0)
    # ... nor within this many events of the previous retrain request.
    cooldown_events: int = Field(default=30_000, ge=0)
    # Decide on `confirmations` distinct detectors alarming within `confirm_within` events,
    # or on `data_confirmations` data-drift alarms (see stream/drift/policy.py); other
    # signals are logged and counted, not acted on.
    confirm_within: int = Field(default=60_000, ge=0)
    confirmations: int = Field(default=2, ge=1)
    data_confirmations: int = Field(default=2, ge=1)
    # An alarm of one of these decides alone: no false alarm on 10 x 1M-event stationary
    # simulator runs with bots (BENCHMARKS.md, drift section); the event-type mix is left
    # out, bot bursts move it.
    deciding_detectors: tuple[str, ...] = (
        "engagement_logloss_cusum",
        "click_genre_mix_psi",
        "dwell_psi",
        "new_user_share_psi",
    )
    # The calibrated CUSUM on the click model's detrended regret (stream/drift/cusum.py):
    # losses per block and the alarm level in block-noise sigmas.
    cusum_block_size: int = Field(default=250, ge=1)
    cusum_threshold: float = Field(default=12.0, gt=0)


class RetrainConfig(_Frozen):
    """Batch retrain: history split, hyperparameter search, registry."""

    @property
    def drift_wait(self) -> int:
        """Events a drift decision's request waits for (see ``after_drift_events``)."""
        if self.after_drift_events is not None:
            return self.after_drift_events
        return self.validation_events + self.holdout_events

    registry_dir: Path = Path("registry")
    holdout_events: int = Field(default=10_000, ge=100)
    validation_events: int = Field(default=10_000, ge=100)
    trials: int = Field(default=10, ge=1)
    timeout_seconds: float = Field(default=300.0, gt=0)
    # A consumer gives up on a request unanswered after timeout_seconds plus this margin
    # (reading the history and storing the version take time beyond the search).
    answer_margin_seconds: float = Field(default=300.0, gt=0)
    # The challenger must beat the champion's hold-out quality loss by this share.
    min_improvement: float = Field(default=0.0, ge=0, lt=1)
    # ... and the hold-out must be at least this sure of it (0: reported, not required).
    min_confidence: float = Field(default=0.0, ge=0, lt=1)
    # A drift decision's request waits this many more events, so that the validation and
    # hold-out windows lie in the new regime (a model is then chosen and judged on how it
    # does after the change); None: validation_events + holdout_events.
    after_drift_events: int | None = Field(default=None, ge=0)
    group_id: str = "feedback-loop-retrainer"


class ServingConfig(_Frozen):
    """Model state for serving (published by the consumer) and the ``serve`` process."""

    # The consumer publishes changed model state at most this often ...
    publish_state: bool = True
    publish_every_seconds: float = Field(default=1.0, gt=0)
    # ... or after this many applied events, whichever comes first; plus a full snapshot
    # at every checkpoint and swap.
    publish_every_events: int = Field(default=50_000, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Share of slate positions filled by exploration (epsilon-greedy) under the default
    # policy; 0 disables it.
    exploration: float = Field(default=0.1, ge=0, le=1)
    # Candidates the ANN index returns for the exact re-rank (at least k + seen items).
    candidates: int = Field(default=100, ge=1)
    # Seed of exploration draws (a replay of the same requests gives the same slates).
    seed: int = 42
    # Catalogues smaller than this are ranked by an exact scan (bench/ann.py: at 20k items a
    # scan costs what an HNSW query does, and it is exact with nothing to build or update).
    ann_min_items: int = Field(default=20_000, ge=0)
    # hnswlib's graph degree and build beam (see BENCHMARKS.md, section ann).
    ann_m: int = Field(default=16, ge=2)
    ann_ef_construction: int = Field(default=100, ge=8)
    # An item vector that moved less than this (relative) is not re-linked in the graph.
    ann_tolerance: float = Field(default=0.0, ge=0)


class ArchiveConfig(_Frozen):
    """The Parquet archive of admitted events (stream/kafka/archive.py): the history that
    outlives the broker's memory and the topic's retention."""

    enabled: bool = True
    # None: `archive/` in the consumer's state dir.
    directory: Path | None = None


# librdkafka settings the project decides itself (stream/kafka/clients.py): what makes the
# checkpoints exact and the producers idempotent is not the deployment's to change.
OWNED_KAFKA_PROPERTIES = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "group.instance.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "enable.partition.eof",
        "enable.idempotence",
        "transactional.id",
        "isolation.level",
        "error_cb",
        "logger",
        "log_level",
    }
)


KafkaValue = str | int | float | bool


class KafkaConfig(_Frozen):
    """How every Kafka client connects: TLS, SASL and any other librdkafka property.

    ``extra`` takes librdkafka properties by their own names (``client.id``,
    ``ssl.endpoint.identification.algorithm`` ...). One the project sets itself is refused
    here; one librdkafka does not know, by ``stream.kafka.clients.check_kafka_config`` when a
    process starts:

    >>> KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
    ...             sasl_username="u", sasl_password="p").properties()["sasl.password"]
    'p'
    >>> KafkaConfig(extra={"enable.auto.commit": True})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for KafkaConfig
    ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    extra: dict[str, KafkaValue] = {}

    @field_validator("extra")
    @classmethod
    def _not_owned(cls, extra: dict[str, KafkaValue]) -> dict[str, KafkaValue]:
        owned = sorted(OWNED_KAFKA_PROPERTIES & extra.keys())
        if owned:
            raise ValueError(
                f"kafka.extra sets {owned}: the project sets these itself "
                "(see stream/kafka/clients.py)"
            )
        typed = sorted(k for k in extra if k.replace(".", "_") in cls.model_fields)
        if typed:
            raise ValueError(f"kafka.extra sets {typed}: use the typed kafka fields instead")
        return extra

    def field_values(self) -> dict[str, object]:
        """The fields that are set, secrets revealed (for a child process's environment)."""
        values: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or value == {}:
                continue
            values[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return values

    def properties(self) -> dict[str, KafkaValue]:
        """The librdkafka properties these settings add to every client (secrets revealed)."""
        values = self.field_values()
        extra: dict[str, KafkaValue] = values.pop("extra", {})  # type: ignore[assignment]
        props = {name.replace("_", "."): value for name, value in values.items()}
        return {**props, **extra}  # type: ignore[dict-item]


class MetricsConfig(_Frozen):
    """Where the /metrics endpoints listen (their ports are each command's --metrics-port)."""

    host: str = "127.0.0.1"


class Settings(BaseSettings):
    """Everything a feedback-loop process needs to know."""

    model_config = SettingsConfigDict(
        env_prefix="FEEDBACK_LOOP_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
    )
    topics: Topics = Topics()
    kafka: KafkaConfig = KafkaConfig()
    limits: Limits = Limits()
    model: ModelConfig = ModelConfig()
    consumer: ConsumerConfig = ConsumerConfig()
    metrics: MetricsConfig = MetricsConfig()
    drift: DriftConfig = DriftConfig()
    retrain: RetrainConfig = RetrainConfig()
    serving: ServingConfig = ServingConfig()
    archive: ArchiveConfig = ArchiveConfig()


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that give a child process these exact settings.

    >>> env = settings_env(Settings(model=ModelConfig(seed=7)))
    >>> ModelConfig.model_validate_json(env["FEEDBACK_LOOP_MODEL"]).seed
    7
    """
    env = {
        # Secrets too: the child connects as this process does.
        "FEEDBACK_LOOP_KAFKA": json.dumps(settings.kafka.field_values()),
    }
    env |= {
        f"FEEDBACK_LOOP_{name.upper()}": getattr(settings, name).model_dump_json()
        for name in (
            "topics",
            "limits",
            "model",
            "consumer",
            "metrics",
            "drift",
            "retrain",
            "serving",
            "archive",
        )
    }
    if settings.bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    return env
