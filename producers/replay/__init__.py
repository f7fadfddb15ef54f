"""Read files of user feedback as events, in the order a replay publishes them.

Five formats (see :data:`FORMATS`); :func:`open_source` guesses which from the file:

``movielens-100k``
    ``u.data`` (tab-separated ``user item rating timestamp``) with ``u.user`` and ``u.item``
    (and, when present, ``u.genre``) beside it.
``movielens-csv``
    ``ratings.csv`` (``userId,movieId,rating,timestamp``) with ``movies.csv`` beside it.
``recbole``
    RecBole atomic files ``NAME.inter`` with optional ``NAME.user`` / ``NAME.item``.
``events``
    Our own event schema as JSON lines (``.jsonl``/``.ndjson``), CSV or Parquet.
``archive``
    A directory of the consumer's archive of admitted events (:mod:`stream.kafka.archive`),
    in the order they were applied.

For the three dataset formats :meth:`ReplaySource.records` yields every ``user_profile``,
then every ``item_profile`` (stamped with the earliest interaction time so they validate and
come before what they announce), then the ratings sorted by time; ties keep file order.
Event ids are ``"{file name}:{kind}:{line number}"``: a second replay of the same file
produces the same ids, which the consumer de-duplicates. When a dataset has no file of user
(or item) profiles -- ``ratings.csv`` never has one, RecBole's are optional -- a bare profile
is made for each id in order of first appearance, because the consumer rejects events of
unannounced users and items. ``profiles=False`` yields the ratings alone (e.g. for
``u1.test`` after ``u1.base`` announced everyone).

Records are not validated here (the consumer does, and dead-letters what fails with a
reason), but a structurally broken file (unreadable, missing columns, wrong number of
fields, a non-number where a number must be) raises :class:`ReplayError` naming the file
and line before anything is yielded.

One module per format (:mod:`~producers.replay.movielens_100k`,
:mod:`~producers.replay.movielens_csv`, :mod:`~producers.replay.recbole`,
:mod:`~producers.replay.events`), over shared ones: :mod:`~producers.replay.source`
(guessing, opening), :mod:`~producers.replay.columns` (fast column reading),
:mod:`~producers.replay.dataset` (profiles, replay order), :mod:`~producers.replay.files`
and :mod:`~producers.replay.pacing`.

>>> import shutil, tempfile
>>> from pathlib import Path
>>> tmp = Path(tempfile.mkdtemp())
>>> _ = (tmp / "u.data").write_text("196\\t242\\t3\\t881250949\\n186\\t302\\t3\\t881250000\\n")
>>> source = open_source(tmp / "u.data", profiles=False)
>>> source.format
'movielens-100k'
>>> for record in source.records():
...     print(record)  # doctest: +NORMALIZE_WHITESPACE
{'type': 'rating', 'event_id': 'u.data:rating:2', 'user_id': '186', 'item_id': '302',
 'ts': 881250000.0, 'rating': 3.0}
{'type': 'rating', 'event_id': 'u.data:rating:1', 'user_id': '196', 'item_id': '242',
 'ts': 881250949.0, 'rating': 3.0}
>>> shutil.rmtree(tmp)
"""

from producers.replay.files import ReplayError
from producers.replay.movielens_100k import ML100K_GENRES
from producers.replay.movielens_csv import ML_CSV_HEADER
from producers.replay.pacing import paced, record_ts
from producers.replay.scale import FORMAT_SCALES, SCALE_FIELDS, RatingScale, RatingScaleError
from producers.replay.source import FORMATS, ReplaySource, guess_format, open_source
from stream.kafka.publisher import Record

__all__ = [
    "FORMATS",
    "FORMAT_SCALES",
    "ML100K_GENRES",
    "ML_CSV_HEADER",
    "SCALE_FIELDS",
    "RatingScale",
    "RatingScaleError",
    "Record",
    "ReplayError",
    "ReplaySource",
    "guess_format",
    "open_source",
    "paced",
    "record_ts",
]
