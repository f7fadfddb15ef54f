"""Real data in, nothing lost: each format's rating scale, and a bot filter that leaves
people alone, on MovieLens-100K and on an ml-latest-layout CSV built from it."""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from cli.sources import fit_scale
from consumers.evaluate import evaluate_records
from producers.replay import (
    FORMAT_SCALES,
    ML100K_GENRES,
    RatingScale,
    RatingScaleError,
    open_source,
)
from producers.simulator import Simulator, SimulatorConfig
from stream.config import ConsumerConfig, Limits, Settings
from stream.events import (
    Admission,
    BotFilter,
    ItemProfileEvent,
    RatingEvent,
    Rejection,
    UserProfileEvent,
)

# Share of the ratings moved half a star down (5 -> 4.5, ..., 1 -> 0.5) in the derived CSV.
HALF_STAR_SHARE = 0.25
SCALE_ENV = ("RATING_MIN", "RATING_MAX", "RATING_STEP")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k != "KAFKA_BOOTSTRAP_SERVERS" and not k.startswith("FEEDBACK_LOOP_")
    }
    return subprocess.run(
        [sys.executable, "-m", "cli.app", *args],
        env={**base, **(env or {})}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def write_ml_latest(folder: Path, u_data: Path, seed: int = 9) -> np.ndarray:
    """``ratings.csv`` and ``movies.csv`` in the ml-latest layout from MovieLens-100K: every
    rating, a seeded share of them half a star lower; returns the ratings written."""
    folder.mkdir(parents=True, exist_ok=True)
    data = np.loadtxt(u_data, dtype=np.int64)  # user, item, rating, ts
    ratings = data[:, 2].astype(np.float64)
    ratings[np.random.default_rng(seed).random(len(ratings)) < HALF_STAR_SHARE] -= 0.5
    with (folder / "ratings.csv").open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["userId", "movieId", "rating", "timestamp"])
        for (user, item, _, ts), rating in zip(data.tolist(), ratings.tolist(), strict=True):
            out.writerow([user, item, f"{rating:.1f}", ts])
    with (folder / "movies.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")  # quotes titles with commas, as ml-latest
        out.writerow(["movieId", "title", "genres"])
        for line in (u_data.parent / "u.item").read_text("latin-1").splitlines():
            fields = line.split("|")
            flags = fields[-len(ML100K_GENRES) :]
            genres = [g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1"]
            genres = [g for g in genres if g != "unknown"] or ["(no genres listed)"]
            out.writerow([fields[0], fields[1], "|".join(genres)])
    return ratings


@pytest.fixture(scope="module")
def ml_latest(ml100k_real: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("ml-latest")
    ratings = write_ml_latest(folder, ml100k_real)
    return folder / "ratings.csv", ratings


def small_ml_latest(folder: Path, ratings: list[float]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"1,{k + 1},{r},{964982703 + k}" for k, r in enumerate(ratings)]
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines))
    movies = [f"{k + 1},Movie {k + 1} (1999),Drama" for k in range(len(ratings))]
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(movies) + "\n")
    return folder / "ratings.csv"


# --- the scale comes from the format, or is declared once ---------------------------------


@pytest.mark.slow
def test_ml_latest_csv_applies_every_rating_half_stars_included(
    ml_latest: tuple[Path, np.ndarray],
) -> None:
    path, ratings = ml_latest
    assert (ratings == 0.5).sum() > 1000 and (ratings % 1 == 0.5).mean() > 0.2
    cfg, source = fit_scale(Settings(), open_source(path), consume_here=True)
    assert source.format == "movielens-csv"
    assert (cfg.limits.rating_min, cfg.limits.rating_max, cfg.limits.rating_step) == (0.5, 5, 0.5)
    learner, _ = evaluate_records(cfg, source.records())
    c = learner.counts
    assert (c.dead_lettered, c.filtered, c.duplicates) == (0, 0, 0)
    # every rating, plus a bare profile per user and movies.csv's items
    assert c.consumed == c.applied == 100_000 + 943 + 1682
    rating_model = learner.models.rating
    assert rating_model.n_ratings == 100_000
    # The model learned the half stars: its running mean is the file's mean, which is
    # HALF_STAR_SHARE / 2 of a star below MovieLens-100K's own.
    assert rating_model.global_mean == pytest.approx(ratings.mean(), rel=1e-9)
    assert ratings.mean() < np.ceil(ratings).mean() - 0.1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["movielens-100k", "movielens-csv"])
def test_evaluate_command_loses_nothing_of_a_clean_public_file(
    fmt: str, ml100k_real: Path, ml_latest: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path = ml100k_real if fmt == "movielens-100k" else ml_latest[0]
    report_path = tmp_path / "r.json"
    proc = run_cli("evaluate", str(path), "--format", fmt, "--report", str(report_path))
    assert proc.returncode == 0, proc.stderr
    r = orjson.loads(report_path.read_bytes())
    assert (r["dead_lettered"], r["filtered"], r["duplicates"]) == (0, 0, 0)
    assert r["applied"] == r["consumed"] == 100_000 + 943 + 1682
    scale = FORMAT_SCALES[fmt]
    limits = r["config"]["limits"]
    assert (limits["rating_min"], limits["rating_max"], limits["rating_step"]) == (
        scale.min, scale.max, scale.step,
    )  # fmt: skip


def test_a_file_off_the_configured_scale_is_refused_before_anything_is_read(
    ml_latest: tuple[Path, np.ndarray],
) -> None:
    path, ratings = ml_latest
    half = int((ratings == 0.5).sum())
    source = open_source(path, limits=Limits())  # the default 1..5 of another process
    with pytest.raises(RatingScaleError) as err:
        source.records()
    message = str(err.value)
    assert f"would dead-letter {half:,} of the file's 100,000 ratings" in message
    assert FORMAT_SCALES["movielens-csv"].env() in message
    first = next(n for n, r in enumerate(ratings) if r == 0.5) + 2  # header is line 1
    assert message.startswith(f"{path}:{first}: rating 0.5 does not fit")
    # Publishing to another consumer checks against the configured scale the same way.
    _, to_publish = fit_scale(Settings(), open_source(path), consume_here=False)
    with pytest.raises(RatingScaleError):
        to_publish.records()


def test_a_declared_scale_stands_for_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = small_ml_latest(tmp_path / "ml", [4.0, 0.5, 3.5])
    monkeypatch.setenv("FEEDBACK_LOOP_LIMITS__RATING_MIN", "1")
    declared = Settings()
    cfg, source = fit_scale(declared, open_source(path), consume_here=True)
    assert cfg.limits == declared.limits  # not replaced by the format's half stars
    with pytest.raises(RatingScaleError, match=r"ratings.csv:3: rating 0.5 .* 1 of the file's 3"):
        source.records()
    for name, value in zip(SCALE_ENV, ("0.5", "5", "0.5"), strict=True):
        monkeypatch.setenv(f"FEEDBACK_LOOP_LIMITS__{name}", value)
    cfg, source = fit_scale(Settings(), open_source(path), consume_here=False)
    assert cfg.limits.rating_step == 0.5
    learner, _ = evaluate_records(cfg, source.records())
    assert learner.counts.applied == learner.counts.consumed == 3 + 1 + 3


def test_replay_command_names_the_scale_to_declare_instead_of_dead_lettering(
    tmp_path: Path,
) -> None:
    path = small_ml_latest(tmp_path / "ml", [4.0, 0.5, 3.5])
    proc = run_cli("replay", str(path), "--no-consume")
    assert proc.returncode == 2
    err = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "rating 0.5 does not fit the configured scale [1.0, 5.0]" in err
    assert "FEEDBACK_LOOP_LIMITS__RATING_MIN=0.5" in err


def test_format_scales_fit_what_they_should() -> None:
    default = Limits()
    assert FORMAT_SCALES["movielens-100k"].fits(default)
    assert not FORMAT_SCALES["movielens-csv"].fits(default)
    half = FORMAT_SCALES["movielens-csv"].applied_to(default)
    assert FORMAT_SCALES["movielens-100k"].fits(half)  # whole stars sit on the half grid
    assert not RatingScale(0.5, 5.0, 0.25).fits(half)  # quarter stars do not
    assert not RatingScale(1.0, 5.0).fits(half)  # any value between: cannot promise
    with pytest.raises(ValueError, match="rating_min"):
        RatingScale(5.0, 1.0).applied_to(default)


# --- ratings off the declared scale are dead-lettered with a clear reason ------------------


def gate(**limits: Any) -> Admission:
    adm = Admission(Limits(**limits), dedup_window=100, bot_events_per_minute=120)
    adm.admit(UserProfileEvent(event_id="pu", user_id="u", ts=1.7e9))
    adm.admit(ItemProfileEvent(event_id="pi", item_id="i", ts=1.7e9, genres=("Drama",)))
    return adm


def rating(value: float, n: int = 0) -> bytes:
    event = {"type": "rating", "event_id": f"r{n}", "user_id": "u", "item_id": "i",
             "ts": 1.7e9 + n, "rating": value}  # fmt: skip
    return orjson.dumps(event)


def test_a_rating_outside_the_scale_is_dead_lettered_with_its_reason() -> None:
    adm = gate()
    rejection = adm.admit_raw(rating(0.5))
    assert isinstance(rejection, Rejection)
    assert rejection.kind == "invalid_event" and rejection.event_type == "rating"
    assert "rating 0.5 is outside the scale [1.0, 5.0]" in rejection.reason
    half = gate(rating_min=0.5, rating_step=0.5)
    assert isinstance(half.admit_raw(rating(0.5)), RatingEvent)
    assert adm.counts.dead_letters_by_kind == {"invalid_event": 1}


def test_a_rating_off_the_step_is_dead_lettered_with_its_reason() -> None:
    adm = gate(rating_min=0.5, rating_step=0.5)
    outcomes = [adm.admit_raw(rating(v, n)) for n, v in enumerate([3.5, 3.7, 5.0, 4.25])]
    assert [isinstance(o, RatingEvent) for o in outcomes] == [True, False, True, False]
    reasons = [o.reason for o in outcomes if isinstance(o, Rejection)]
    assert reasons == [
        "rating 3.7 is not on the scale [0.5, 5.0] in steps of 0.5",
        "rating 4.25 is not on the scale [0.5, 5.0] in steps of 0.5",
    ]
    c = adm.counts
    assert (c.applied, c.dead_lettered) == (2 + 2, 2) and c.reconciles()
    # No step declared: any value on the span is a rating (our own events' producers).
    assert isinstance(gate().admit_raw(rating(3.7)), RatingEvent)


# --- bot filtering is for inhuman rates ----------------------------------------------------


def test_an_inhuman_burst_is_filtered() -> None:
    bots = BotFilter(limit=ConsumerConfig().bot_events_per_minute)
    # Ten separate clicks a second, the simulator's bots' pace.
    burst = [bots.is_bot("bot", 1.7e9 + k * 0.1) for k in range(300)]
    assert burst.index(True) == 121 - 1  # the 121st distinct time in a minute
    assert all(burst[120:])
    assert bots.is_bot("bot", 1.7e9 + 3600)  # still flagged an hour later


def test_a_bulk_rating_session_is_not_filtered() -> None:
    bots = BotFilter(limit=ConsumerConfig().bot_events_per_minute)
    # A person saving pages of ratings: 600 in one minute, 10 at each second (MovieLens
    # has users with 10 ratings in one second), i.e. far over the raw per-minute limit.
    session = [1.7e9 + (k // 10) for k in range(600)]
    assert not any(bots.is_bot("person", ts) for ts in session)


def test_no_movielens_100k_user_looks_like_a_bot(ml100k_real: Path) -> None:
    data = np.loadtxt(ml100k_real, dtype=np.int64)
    data = data[np.argsort(data[:, 3], kind="stable")]
    bots = BotFilter(limit=ConsumerConfig().bot_events_per_minute)
    flagged = [bots.is_bot(str(u), float(ts)) for u, ts in data[:, [0, 3]].tolist()]
    assert not any(flagged)


def test_the_simulators_bots_are_still_filtered_and_its_users_are_not() -> None:
    sim = Simulator(SimulatorConfig(n_users=300, n_items=200, seed=11, bot_share=0.05))
    events = list(sim.events(30_000))
    bots = BotFilter(limit=ConsumerConfig().bot_events_per_minute)
    flagged = {e.user_id for e in events if bots.is_bot(e.user_id, e.ts)}
    active_bots = {e.user_id for e in events} & sim.bot_users
    assert active_bots and flagged == active_bots


def test_a_checkpointed_filter_from_before_keeps_working() -> None:
    bots = BotFilter(limit=2)
    bots.is_bot("u", 60.0)
    state = pickle.dumps(bots)
    old = pickle.loads(state)
    old._activity = {"u": [1, 1, 0]}  # an entry as older versions pickled it
    restored = pickle.loads(pickle.dumps(old))
    assert [restored.is_bot("u", 60.0 + s) for s in (1, 2, 3)] == [False, True, True]
