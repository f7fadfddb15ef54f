"""Reading feedback files for replay: formats, order, ids, errors (no broker needed).

Every fixture file is written into ``tmp_path`` by the test itself; only the MovieLens test
at the end uses the network (once, cached), and skips with the reason when it cannot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench import movielens
from producers.replay import (
    FORMATS,
    ML100K_GENRES,
    ReplayError,
    ReplaySource,
    guess_format,
    open_source,
    paced,
)
from stream.config import Limits
from stream.events import InvalidEvent, event_from_dict

T0 = 881_250_000  # a MovieLens-era unix time


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in ML100K_GENRES)


def ml100k(folder: Path, *, genre_file: bool = False) -> Path:
    """A small MovieLens-100K layout: out-of-order times, a tie, a latin-1 title."""
    _write(
        folder / "u.data",
        f"196\t242\t3\t{T0 + 50}\n"
        f"186\t302\t3\t{T0 + 10}\n"
        f"22\t377\t1\t{T0 + 10}\n"  # ties with the line above: file order must be kept
        f"196\t302\t5\t{T0}\n",
    )
    _write(
        folder / "u.user", "196|49|M|writer|55105\n186|39|F|executive|00000\n22|25|M|none|40206\n"
    )
    _write(
        folder / "u.item",
        f"242|Kolya (1996)|24-Jan-1997||http://x|{_flags('Comedy')}\n"
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://y|{_flags('Crime', 'Film-Noir')}\n"
        f"377|Misérables, Les (1995)|||http://z|{_flags('Drama', 'Musical')}\n",
        encoding="latin-1",
    )
    if genre_file:
        _write(
            folder / "u.genre", "".join(f"{g.upper()}|{i}\n" for i, g in enumerate(ML100K_GENRES))
        )
    return folder / "u.data"


def read(source: ReplaySource) -> list[Any]:
    """All records of a source (typed loosely: tests index into them)."""
    return list(source.records())


def validate_all(records: list[Any], limits: Limits | None = None) -> None:
    assert records, "nothing to validate"
    for record in records:
        assert isinstance(record, dict), record
        event_from_dict(record, limits)  # raises InvalidEvent with a reason


def split(
    records: list[Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(user profiles, item profiles, interactions), asserting they come in that order."""
    kinds = [r["type"] for r in records]
    n_users, n_items = kinds.count("user_profile"), kinds.count("item_profile")
    assert kinds[:n_users] == ["user_profile"] * n_users
    assert kinds[n_users : n_users + n_items] == ["item_profile"] * n_items
    assert "user_profile" not in kinds[n_users + n_items :]
    assert "item_profile" not in kinds[n_users + n_items :]
    return records[:n_users], records[n_users : n_users + n_items], records[n_users + n_items :]


# --------------------------------------------------------------------------- guessing


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("u.data", "1\t2\t3\t881250949\n", "movielens-100k"),
        ("u1.base", "1\t2\t3\t881250949\n4\t5\t1\t881250950\n", "movielens-100k"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n", "movielens-csv"),
        ("ml.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n", "recbole"),
        ("e.jsonl", '{"type": "click"}\n', "events"),
        ("e.ndjson", '{"type": "click"}\n', "events"),
        ("e.csv", "event_id,type,user_id,item_id,ts\n", "events"),
        ("e.log", '{"type": "click", "event_id": "x"}\n', "events"),
    ],
)
def test_guess_format(tmp_path: Path, name: str, content: str, expected: str) -> None:
    assert expected in FORMATS
    assert guess_format(_write(tmp_path / name, content)) == expected
    assert open_source(tmp_path / name, profiles=False).format == expected


def test_guess_parquet_by_suffix(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"type": ["click"], "event_id": ["e1"]}).to_parquet(path)
    assert guess_format(path) == "events"


def test_unguessable_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    odd = _write(tmp_path / "notes.txt", "hello world\n")
    with pytest.raises(ReplayError, match=r"notes\.txt: cannot guess the replay format"):
        guess_format(odd)
    with pytest.raises(ReplayError, match=r"nothing\.jsonl: no such file"):
        open_source(tmp_path / "nothing.jsonl")
    with pytest.raises(ReplayError, match="unknown replay format 'foo'"):
        open_source(odd, "foo")


# --------------------------------------------------------------------------- movielens-100k


def test_movielens_100k_profiles_then_ratings_in_time_order(tmp_path: Path) -> None:
    records = read(open_source(ml100k(tmp_path)))
    validate_all(records)
    users, items, ratings = split(records)
    assert [u["user_id"] for u in users] == ["196", "186", "22"]
    assert users[1] == {
        "type": "user_profile",
        "event_id": "u.user:user_profile:2",
        "ts": float(T0),  # the earliest interaction, so profiles come first and validate
        "user_id": "186",
        "age": 39,
        "gender": "F",
        "occupation": "executive",
    }
    kolya, la, mis = items
    assert kolya["genres"] == ["Comedy"] and kolya["year"] == 1997
    assert la["genres"] == ["Crime", "Film-Noir"]
    # latin-1 decoded; no release date, so the year comes from the title
    assert mis["title"] == "Misérables, Les (1995)" and mis["year"] == 1995
    assert [r["event_id"] for r in ratings] == [
        "u.data:rating:4",
        "u.data:rating:2",  # tie at T0+10 keeps file order: line 2 before line 3
        "u.data:rating:3",
        "u.data:rating:1",
    ]
    assert ratings[0] == {
        "type": "rating",
        "event_id": "u.data:rating:4",
        "user_id": "196",
        "item_id": "302",
        "ts": float(T0),
        "rating": 5.0,
    }


def test_event_ids_are_deterministic_and_unique(tmp_path: Path) -> None:
    source = open_source(ml100k(tmp_path))
    first, second = read(source), read(source)
    assert len(first) == 3 + 3 + 4  # users, items, ratings
    assert first == second
    ids = [r["event_id"] for r in first]
    assert len(set(ids)) == len(ids)


def test_u_genre_names_the_flags(tmp_path: Path) -> None:
    records = read(open_source(ml100k(tmp_path, genre_file=True)))
    _, items, _ = split(records)
    assert items[1]["genres"] == ["CRIME", "FILM-NOIR"]


def test_missing_companion_is_a_clear_error_unless_profiles_off(tmp_path: Path) -> None:
    data = ml100k(tmp_path)
    (tmp_path / "u.user").unlink()
    with pytest.raises(ReplayError, match=r"u\.user not found beside it"):
        open_source(data)
    records = read(open_source(data, profiles=False))
    assert [r["type"] for r in records] == ["rating"] * 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1\t2\t3\t881250949\n4\t5\t2\t881250948\t9\n", r"u\.data:2: expected 4 fields, found 5"),
        ("1\t2\t3\t881250949\n4\t5\t2\n", r"u\.data:2: missing timestamp"),
        ("1\t2\t3\t881250949\n4\t5\tx\t881250948\n", r"u\.data:2: rating 'x' is not a number"),
        ("1\t2\t3\t881250949\n4\t5\t3\tnan\n", r"u\.data:2: timestamp nan is not a finite"),
    ],
)
def test_broken_lines_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = _write(tmp_path / "u.data", content)
    with pytest.raises(ReplayError, match=message):
        read(open_source(path, profiles=False))


def test_blank_lines_and_crlf_keep_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.data", f"1\t2\t3\t{T0 + 1}\r\n\r\n4\t5\t2\t{T0}\r\n")
    records = read(open_source(path, profiles=False))
    assert [(r["event_id"], r["user_id"]) for r in records] == [
        ("u.data:rating:3", "4"),
        ("u.data:rating:1", "1"),
    ]


def test_broken_companion_fails_before_anything_is_yielded(tmp_path: Path) -> None:
    data = ml100k(tmp_path)
    _write(tmp_path / "u.user", "196|49|M|writer|55105\n186|39|F\n")
    with pytest.raises(ReplayError, match=r"u\.user:2: expected 5 fields"):
        next(iter(open_source(data).records()))


# --------------------------------------------------------------------------- movielens-csv


def test_movielens_csv_with_movies(tmp_path: Path) -> None:
    ratings = _write(
        tmp_path / "ratings.csv",
        f"userId,movieId,rating,timestamp\n7,2,3.5,{T0 + 5}\n1,1,4.0,{T0}\n7,1,0.5,{T0 + 5}\n",
    )
    _write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '2,"American President, The (1995) ",(no genres listed)\n'
        "3,Untitled,Drama\n",
    )
    records = read(open_source(ratings))
    validate_all(records, Limits(rating_min=0.5))  # the scale of MovieLens-20M/25M
    users, items, rated = split(records)
    # ratings.csv comes without user demographics: bare profiles, in order of appearance
    assert [(u["event_id"], u["user_id"]) for u in users] == [
        ("ratings.csv:user_profile:1", "7"),
        ("ratings.csv:user_profile:2", "1"),
    ]
    assert items[0]["genres"] == ["Adventure", "Animation", "Children"]
    assert items[1]["title"] == "American President, The (1995)" and items[1]["year"] == 1995
    assert items[1]["genres"] == []
    assert "year" not in items[2]
    assert [(r["event_id"], r["rating"]) for r in rated] == [
        ("ratings.csv:rating:3", 4.0),
        ("ratings.csv:rating:2", 3.5),
        ("ratings.csv:rating:4", 0.5),
    ]


def test_movielens_csv_needs_movies_and_its_columns(tmp_path: Path) -> None:
    ratings = _write(tmp_path / "ratings.csv", f"userId,movieId,rating,timestamp\n1,1,4,{T0}\n")
    with pytest.raises(ReplayError, match=r"movies\.csv not found"):
        open_source(ratings)
    bad = _write(tmp_path / "r.csv", f"userId,movieId,stars,timestamp\n1,1,4,{T0}\n")
    with pytest.raises(ReplayError, match=r"r\.csv:1: missing columns \['rating'\]"):
        read(open_source(bad, "movielens-csv", profiles=False))


# --------------------------------------------------------------------------- recbole


def test_recbole_maps_columns_by_header(tmp_path: Path) -> None:
    inter = _write(
        tmp_path / "ml.inter",
        # other column order, an extra column, and header names RecBole datasets vary in
        "timestamp:float\tuser_id:token\tcount:float\titem_id:token\trating:float\n"
        f"{T0 + 9}\t1\t0\t10\t4\n"
        f"{T0}\t2\t0\t20\t2\n",
    )
    _write(
        tmp_path / "ml.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n2\t\tF\tother\t94043\n",
    )
    _write(
        tmp_path / "ml.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n20\tunkonwn\tunkonwn\tunknown\n",
    )
    records = read(open_source(inter))
    validate_all(records)
    users, items, rated = split(records)
    assert "age" not in users[1]  # empty cell: unknown, left out
    assert items[0]["genres"] == ["Animation", "Children's", "Comedy"]
    assert items[0]["year"] == 1995 and "year" not in items[1]
    assert [(r["user_id"], r["item_id"], r["rating"], r["ts"]) for r in rated] == [
        ("2", "20", 2.0, float(T0)),
        ("1", "10", 4.0, float(T0 + 9)),
    ]
    assert rated[0]["event_id"] == "ml.inter:rating:3"


def test_recbole_without_profile_files_announces_bare_ids(tmp_path: Path) -> None:
    inter = _write(
        tmp_path / "x.inter",
        f"user_id:token\titem_id:token\tscore:float\tts:float\nb\tq\t5\t{T0}\na\tp\t1\t{T0}\n"
        f"b\tp\t3\t{T0}\n",
    )
    records = read(open_source(inter))
    validate_all(records)
    users, items, _ = split(records)
    assert [u["user_id"] for u in users] == ["b", "a"]  # order of first appearance
    assert [i["item_id"] for i in items] == ["q", "p"]


def test_recbole_without_rating_column_is_an_error(tmp_path: Path) -> None:
    inter = _write(
        tmp_path / "x.inter", f"user_id:token\titem_id:token\ttimestamp:float\n1\t2\t{T0}\n"
    )
    with pytest.raises(ReplayError, match=r"x\.inter:1: no rating column"):
        read(open_source(inter))


# --------------------------------------------------------------------------- events


def _event(event_id: str, ts: float | None, **extra: Any) -> dict[str, Any]:
    event = {"type": "click", "event_id": event_id, "user_id": "u1", "item_id": "i1", **extra}
    if ts is not None:
        event["ts"] = ts
    return event


def test_jsonl_sorted_with_raw_lines_kept_in_place(tmp_path: Path) -> None:
    lines = [
        json.dumps(_event("late", T0 + 100)),
        "{not json",  # follows "late": sort key T0+100
        "",  # blank lines carry nothing
        json.dumps(_event("early", T0)),
        "[1, 2]",  # JSON but not an object: raw as well; follows "early"
        json.dumps(_event("no-ts", None)),  # follows the raw line: key T0
        json.dumps(_event("mid", T0 + 50)),
    ]
    path = _write(tmp_path / "events.jsonl", "\n".join(lines) + "\n")
    records = read(open_source(path))
    assert [r["event_id"] if isinstance(r, dict) else r for r in records] == [
        "early",
        b"[1, 2]",
        "no-ts",
        "mid",
        "late",
        b"{not json",
    ]
    validate_all([r for r in records if isinstance(r, dict) and "ts" in r])
    with pytest.raises(InvalidEvent, match="ts"):
        event_from_dict(records[2])  # the consumer dead-letters it with a reason


def test_events_csv_with_context_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "events.csv",
        "type,event_id,user_id,item_id,ts,seconds,position,context.device,context.hour,"
        "context\n"
        f"dwell,d1,007,42,{T0 + 1},12.5,,mobile,9,\n"
        f'click,c1,007,42,{T0},,3,,,"{{""session_id"": ""s1"", ""weekday"": 2}}"\n'
        f"impression,i1,007,43,{T0 + 1},,,,,\n",
    )
    records = read(open_source(path))
    validate_all(records)
    assert records == [
        {
            "type": "click",
            "event_id": "c1",
            "user_id": "007",  # ids stay strings, exactly as written
            "item_id": "42",
            "ts": T0,
            "position": 3,
            "context": {"session_id": "s1", "weekday": 2},
        },
        {
            "type": "dwell",
            "event_id": "d1",
            "user_id": "007",
            "item_id": "42",
            "ts": T0 + 1,
            "seconds": 12.5,
            "context": {"device": "mobile", "hour": 9},
        },
        {"type": "impression", "event_id": "i1", "user_id": "007", "item_id": "43", "ts": T0 + 1},
    ]


def test_events_csv_needs_type_and_event_id(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", f"type,user_id,item_id,ts\nclick,u,i,{T0}\n")
    with pytest.raises(
        ReplayError, match=r"events\.csv:1: missing required columns \['event_id'\]"
    ):
        read(open_source(path, "events"))


def test_parquet_round_trip(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = [
        _event("c1", T0 + 1.0, position=2, context={"device": "tv", "hour": 20}),
        {"type": "rating", "event_id": "r1", "user_id": "u1", "item_id": "i1", "ts": T0 + 2.5,
         "rating": 4.0},
        {"type": "item_profile", "event_id": "p1", "item_id": "i1", "ts": float(T0),
         "title": "Kolya", "genres": ["Comedy"], "year": 1996},
    ]  # fmt: skip
    path = tmp_path / "events.parquet"
    pd.DataFrame(events).to_parquet(path)  # missing fields become nulls / NaN
    records = read(open_source(path))
    validate_all(records)
    by_ts = sorted(events, key=lambda e: float(e["ts"]))
    # dict/list columns come back as dicts/lists; the struct column adds null keys, dropped
    assert records == by_ts


def test_parquet_integer_id_columns_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    frame = pd.DataFrame(
        {
            "type": ["rating"],
            "event_id": [1],
            "user_id": [196],
            "item_id": [242],
            "ts": [T0],
            "rating": [3],
        }
    )
    frame.to_parquet(path)
    (record,) = open_source(path).records()
    assert record == {
        "type": "rating",
        "event_id": "1",
        "user_id": "196",
        "item_id": "242",
        "ts": T0,
        "rating": 3,
    }
    validate_all([record])


# --------------------------------------------------------------------------- pacing


def test_paced_replays_event_time_gaps_at_speed() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    records: list[Any] = [{"ts": 100.0}, b"raw", {"ts": 110.0}, {"ts": 110.0}, {"ts": 10_110.0}]
    out = list(paced(records, 10.0, clock=lambda: now[0], sleep=sleep))
    assert out == records
    assert slept == [1.0, 1000.0]
    slept.clear()
    now[0] = 0.0
    list(paced(records, 10.0, max_sleep=5.0, clock=lambda: now[0], sleep=sleep))
    assert slept == [1.0, 5.0]  # the idle stretch is cut short
    assert list(paced(iter(records), None)) == records
    assert list(paced(iter(records), 0)) == records


# --------------------------------------------------------------------------- MovieLens-100K


def _interactions(records: list[Any]) -> list[tuple[str, str, float, float]]:
    return [
        (r["user_id"], r["item_id"], r["rating"], r["ts"]) for r in records if r["type"] == "rating"
    ]


def test_movielens_100k_real(ml100k_real: Path) -> None:
    records = read(open_source(ml100k_real))
    validate_all(records)
    users, items, ratings = split(records)
    assert (len(users), len(items), len(ratings)) == (943, 1682, 100_000)
    times = [r["ts"] for r in records]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    assert len({r["event_id"] for r in records}) == len(records)
    # the same ratings, in the same order, read from RecBole's atomic files
    inter = movielens.recbole_ml_100k(ml100k_real.parent)
    recbole = read(open_source(inter))
    assert guess_format(inter) == "recbole"
    assert _interactions(recbole) == _interactions(records)


def test_movielens_unavailable_when_pip_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(movielens, "_installed_example_dir", lambda: None)
    monkeypatch.setattr(movielens.sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(movielens.MovieLensUnavailable, match="pip download of recbole"):
        movielens.movielens_100k(tmp_path / "cache")
