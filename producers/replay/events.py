"""Our own event schema, replayed from JSON lines (``.jsonl``/``.ndjson``), CSV or Parquet.

Records come out in time order (a stable sort on ``ts``; a record without a usable ``ts``
stays right after the one it followed). They are not validated here: an unparseable JSON
line is passed on as raw bytes, for the consumer to dead-letter with a reason. CSV and
Parquet rows become event dicts: missing cells dropped, ``context.x`` columns nested,
numbers parsed, integer ids as strings.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = Path(tmp) / "events.jsonl"
...     _ = path.write_text('{"event_id": "b", "ts": 2}\\n{broken\\n{"event_id": "a", "ts": 1}\\n')
...     list(records(path))
[{'event_id': 'a', 'ts': 1}, {'event_id': 'b', 'ts': 2}, b'{broken']
"""

from __future__ import annotations

import csv
import math
import mmap
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from producers.replay.columns import parser_message
from producers.replay.dataset import CHUNK
from producers.replay.files import ReplayError, head
from producers.replay.pacing import record_ts
from stream.kafka.publisher import Record

__all__ = ["records"]

# Fields of our schema that are numbers: CSV cells (strings) are converted so sorting and
# validation see numbers (e.g. schema_version "1" would not match Literal[1]).
_NUMERIC = frozenset({"ts", "rating", "seconds", "position", "age", "year", "schema_version"})
_CTX_NUMERIC = frozenset({"hour", "weekday"})
# Id fields: a typed column (Parquet written by pandas) may hold ints; ids are strings.
_IDS = frozenset({"event_id", "user_id", "item_id"})


def records(path: Path) -> Iterator[Record]:
    """The events of ``path`` in time order (JSON lines, CSV or Parquet, by suffix)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_events(path)
    if suffix == ".parquet":
        return _parquet_events(path)
    if suffix == ".csv":
        return _csv_events(path)
    first = head(path, 1)
    return _jsonl_events(path) if first and first[0].lstrip().startswith("{") else _csv_events(path)


def _parse_line(line: bytes) -> Record:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    # Valid JSON but not an object (e.g. a list) is no event either: raw, for dead-lettering.
    return obj if isinstance(obj, dict) else line


def _jsonl_events(path: Path) -> Iterator[Record]:
    """JSON lines. The first pass keeps only each line's offset, length and sort key (not
    the parsed object), so even tens of millions of events sort in little memory.

    Sort key: a record's own ``ts`` when it has a finite numeric one, else the key of the
    line before it (``-inf`` at the start). An unparseable line or a record without a usable
    ts thus stays right after the line it followed in the file (stable sort)."""
    offsets, lengths, keys = array("q"), array("q"), array("d")
    last = -math.inf
    try:
        with path.open("rb") as fh:
            pos = 0
            for raw in fh:
                line = raw.rstrip(b"\r\n")
                if line.strip():  # blank lines separate nothing and carry no event
                    ts = record_ts(_parse_line(line))
                    last = ts if ts is not None else last
                    offsets.append(pos)
                    lengths.append(len(line))
                    keys.append(last)
                pos += len(raw)
    except OSError as err:
        raise ReplayError(f"{path}: cannot read: {err.strerror or err}") from err
    return _jsonl_in_order(path, offsets, lengths, np.frombuffer(keys, dtype=np.float64))


def _jsonl_in_order(
    path: Path, offsets: array[int], lengths: array[int], keys: np.ndarray
) -> Iterator[Record]:
    if not offsets:
        return
    # Event logs are usually in time order already: then no sort (and no index list).
    in_order = bool(np.all(keys[1:] >= keys[:-1]))
    order: Iterable[int] = (
        range(len(offsets)) if in_order else np.argsort(keys, kind="stable").tolist()
    )
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for i in order:
            start = offsets[i]
            yield _parse_line(mm[start : start + lengths[i]])


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or (isinstance(value, str) and value == ""):
        return True
    return isinstance(value, float) and math.isnan(value)


def _number(value: Any) -> Any:
    """A numeric cell as int or float; anything else unchanged (validation reports it)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def _clean_context(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value  # not JSON: left for validation to reject with a reason
    if isinstance(value, dict):
        return {
            k: _number(v) if k in _CTX_NUMERIC else v for k, v in value.items() if not _missing(v)
        }
    return value


def _clean_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A CSV/Parquet row as an event dict: missing cells dropped, ``context.x`` columns
    nested, numbers parsed, integer ids as strings, genres from "A|B" or a JSON list."""
    out: dict[str, Any] = {}
    context: dict[str, Any] = {}
    for name, value in row.items():
        if _missing(value):
            continue
        key = str(name)
        if key.startswith("context."):
            sub = key[len("context.") :]
            context[sub] = _number(value) if sub in _CTX_NUMERIC else value
        elif key == "context":
            out[key] = _clean_context(value)
        elif key in _NUMERIC:
            out[key] = _number(value)
        elif key in _IDS and isinstance(value, int) and not isinstance(value, bool):
            out[key] = str(value)
        elif key == "genres" and isinstance(value, str):
            out[key] = _genres(value)
        else:
            out[key] = value
    if context:
        base = out.get("context")
        out["context"] = {**base, **context} if isinstance(base, dict) else context
    if isinstance(out.get("context"), dict) and not out["context"]:
        del out["context"]
    return out


def _genres(value: str) -> Any:
    if value.lstrip().startswith("["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return [g for g in value.split("|") if g]


def _require_columns(path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in ("type", "event_id") if c not in columns]
    if missing:
        raise ReplayError(
            f"{path}:1: missing required columns {missing} (columns: {list(columns)})"
        )


def _column_keys(ts: pd.Series | None, n: int) -> np.ndarray:
    if ts is None:
        return np.full(n, -math.inf)
    values = pd.to_numeric(ts, errors="coerce").astype("float64")
    values[~np.isfinite(values)] = np.nan
    return values.ffill().fillna(-math.inf).to_numpy()


def _csv_events(path: Path) -> Iterator[Record]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    _require_columns(path, header)
    try:
        df = pd.read_csv(
            path, header=None, skiprows=1, dtype=str, keep_default_na=False, na_filter=False,
            skip_blank_lines=False, encoding="utf-8",
        )  # fmt: skip
    except pd.errors.EmptyDataError:
        return iter(())
    except pd.errors.ParserError as err:
        raise ReplayError(parser_message(path, err)) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    if df.shape[1] > len(header):
        extra = (df.iloc[:, len(header) :] != "").any(axis=1).to_numpy()
        row = int(np.flatnonzero(extra)[0]) if extra.any() else 0
        raise ReplayError(
            f"{path}:{row + 2}: more fields than the {len(header)} columns of the header"
        )
    df.columns = header[: df.shape[1]]
    df = df[(df != "").any(axis=1)]  # blank lines
    keys = _column_keys(df["ts"] if "ts" in df.columns else None, len(df))
    order = np.argsort(keys, kind="stable")
    return _rows_in_order(df, order)


def _rows_in_order(df: pd.DataFrame, order: np.ndarray) -> Iterator[Record]:
    for start in range(0, len(order), CHUNK):
        for row in df.iloc[order[start : start + CHUNK]].to_dict("records"):
            yield _clean_row(row)


def _parquet_events(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq  # imported here: only events files need it

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise ReplayError(f"{path}: cannot read as Parquet: {err}") from err
    _require_columns(path, table.column_names)
    ts = table.column("ts").to_pandas() if "ts" in table.column_names else None
    order = np.argsort(_column_keys(ts, table.num_rows), kind="stable")
    return _table_in_order(table, order)


def _table_in_order(table: Any, order: np.ndarray) -> Iterator[Record]:
    for start in range(0, len(order), CHUNK):
        for row in table.take(order[start : start + CHUNK]).to_pylist():
            yield _clean_row(row)
