"""PinSage-style item embeddings: the co-engagement graph, importance pooling, learning."""

from __future__ import annotations

import numpy as np
import pytest

from transact.model.item_graph import (
    ItemGraphConfig,
    co_engagement_graph,
    impression_factors,
    item_vectors_from_events,
    neighbour_matrix,
    train_item_embeddings,
)
from transact.schema import ITEM_EMB_DIM, ActionType

CLICK, SAVE, HIDE, SKIP = (int(a) for a in (ActionType.CLICK, ActionType.SAVE, ActionType.HIDE,
                                            ActionType.SKIP))
MIN = 60_000


def test_graph_links_positive_engagements_of_one_user_within_the_window_and_gap() -> None:
    user = np.array([1, 1, 1, 1, 1, 2, 2])
    item = np.array([1, 2, 3, 4, 5, 1, 5])
    action = np.array([CLICK, SAVE, HIDE, SKIP, CLICK, CLICK, SAVE])
    ts = np.array([0, 1, 2, 3, 100, 0, 1]) * MIN
    graph = co_engagement_graph(user, item, action, ts, n_items=5, window=5,
                                session_gap_ms=30 * MIN).toarray()
    assert graph[1, 2] == graph[2, 1] == 1  # click then save, one minute apart
    assert graph[1, 5] == graph[5, 1] == 1  # user 2 only: user 1's item 5 came 99 min later
    assert graph[2, 5] == 0
    assert graph[:, 3].sum() == graph[:, 4].sum() == 0  # a hide and a skip link nothing
    assert np.trace(graph) == 0


def test_importance_pooling_keeps_the_heaviest_neighbours_and_normalises() -> None:
    user = np.ones(8, np.int64)
    # item 1 co-engaged with 2 three times, with 3 once
    item = np.array([1, 2, 1, 2, 1, 2, 1, 3])
    graph = co_engagement_graph(user, item, np.full(8, CLICK), np.arange(8) * MIN, n_items=3,
                                window=1)
    pool = neighbour_matrix(graph, n_neighbours=1).toarray()
    assert pool[1, 2] == 1.0 and pool[1, 3] == 0.0
    full = neighbour_matrix(graph, n_neighbours=5).toarray()
    np.testing.assert_allclose(full[1:].sum(axis=1), 1.0, rtol=1e-6)
    assert full[0].sum() == 0  # the padding id has no neighbours


def test_learned_vectors_separate_co_engaged_clusters_that_content_barely_does() -> None:
    """Two clusters of 40 items; users engage within one cluster; content is almost noise."""
    rng = np.random.default_rng(0)
    n_items = 80
    cluster = (np.arange(n_items + 1) > 40).astype(int)
    content = rng.normal(size=(n_items + 1, ITEM_EMB_DIM)).astype(np.float32)
    content[1:, 0] += 0.3 * (2 * cluster[1:] - 1)  # a faint hint of the cluster
    content[0] = 0
    users, items, times = [], [], []
    for user in range(300):
        pool = np.arange(1, 41) + 40 * (user % 2)
        picks = rng.choice(pool, size=12)
        users += [user] * 12
        items += list(picks)
        times += list(np.arange(12) * MIN)
    graph = co_engagement_graph(np.array(users), np.array(items), np.full(len(items), CLICK),
                                np.array(times), n_items=n_items)
    result = train_item_embeddings(content, graph, ItemGraphConfig(epochs=30, seed=0))
    emb = result.embeddings
    assert emb.shape == (n_items + 1, ITEM_EMB_DIM) and not emb[0].any()
    np.testing.assert_allclose(np.linalg.norm(emb[1:], axis=1), 2.0, rtol=1e-4)

    def separation(vectors: np.ndarray) -> float:
        unit = vectors[1:] / np.linalg.norm(vectors[1:], axis=1, keepdims=True)
        sims = unit @ unit.T
        same = cluster[1:, None] == cluster[None, 1:]
        return float(sims[same].mean() - sims[~same].mean())

    assert separation(emb) > 0.5 > 0.1 > separation(content)
    again = train_item_embeddings(content, graph, ItemGraphConfig(epochs=30, seed=0))
    np.testing.assert_array_equal(again.embeddings, emb)


def _separation(vectors: np.ndarray, cluster: np.ndarray, rows: np.ndarray) -> float:
    unit = vectors[rows] / np.linalg.norm(vectors[rows], axis=1, keepdims=True)
    sims = unit @ unit.T
    same = cluster[rows, None] == cluster[None, rows]
    return float(sims[same].mean() - sims[~same].mean())


def test_spectral_vectors_place_items_shown_to_the_same_users_together() -> None:
    """Two audiences of users, each shown (mostly) its own half of the items; nobody engages.
    The impression factors separate the halves; unseen items are zero; user ids above 2^40
    are fine; the same input gives the same vectors."""
    rng = np.random.default_rng(1)
    n_items = 60
    cluster = (np.arange(n_items + 1) > 30).astype(int)
    users, items = [], []
    for user in range(200):
        own = np.arange(1, 31) + 30 * (user % 2)
        shown = np.where(rng.random(15) < 0.9, rng.choice(own, 15), rng.integers(1, 61, 15))
        users += [(1 << 41) + user] * 15
        items += list(shown)
    user_id, item_id = np.array(users), np.array(items)
    item_id[item_id == 60] = 59  # item 60 is never shown
    factors = impression_factors(user_id, item_id, n_items, dim=8)
    assert factors.shape == (n_items + 1, 8) and not factors[0].any() and not factors[60].any()
    shown_rows = np.arange(1, 60)
    assert _separation(factors, cluster, shown_rows) > 0.5
    np.testing.assert_array_equal(impression_factors(user_id, item_id, n_items, dim=8), factors)

    content = rng.normal(size=(n_items + 1, ITEM_EMB_DIM)).astype(np.float32)
    content[0] = 0
    skips = np.full(len(item_id), SKIP)
    times = np.arange(len(item_id)) * MIN
    for mode in ("spectral", "spectral_propagated"):
        emb = item_vectors_from_events(content, user_id, item_id, skips, times,
                                       ItemGraphConfig(mode=mode)).embeddings
        assert emb.shape == (n_items + 1, ITEM_EMB_DIM) and not emb[0].any()
        np.testing.assert_allclose(np.linalg.norm(emb[shown_rows], axis=1), 2.0, rtol=1e-4)
        assert _separation(emb, cluster, shown_rows) > 0.1 > _separation(content, cluster,
                                                                        shown_rows)
    # clustered: a one-hot cluster (the two audiences apart) beside a soft residue
    clustered = item_vectors_from_events(content, user_id, item_id, skips, times,
                                         ItemGraphConfig(mode="clustered", n_clusters=2)
                                         ).embeddings
    assert clustered.shape == (n_items + 1, ITEM_EMB_DIM) and not clustered[0].any()
    np.testing.assert_allclose(np.linalg.norm(clustered[1:], axis=1), 2.0, rtol=1e-4)
    cluster_of = clustered[1:, :2].argmax(axis=1)
    assert ((clustered[1:, :2] > 0).sum(axis=1) == 1).all()  # exactly one cluster each
    agreement = (cluster_of[shown_rows - 1] == cluster[shown_rows]).mean()
    assert max(agreement, 1 - agreement) > 0.9
    np.testing.assert_array_equal(item_vectors_from_events(
        content, user_id, item_id, skips, times,
        ItemGraphConfig(mode="clustered", n_clusters=2)).embeddings, clustered)
    # a tiny window (fewer users than factors) still gives vectors, with zero columns
    few = impression_factors(np.array([1, 1, 2]), np.array([1, 2, 2]), n_items, dim=8)
    assert few.shape == (n_items + 1, 8)
    # ... and a catalogue with fewer items than clusters gets one cluster per item
    tiny = item_vectors_from_events(content[:6], np.array([1, 1, 2]), np.array([1, 2, 2]),
                                    np.full(3, SKIP), np.arange(3) * MIN,
                                    ItemGraphConfig(mode="clustered")).embeddings
    assert tiny.shape == (6, ITEM_EMB_DIM) and len({row.argmax() for row in tiny[1:]}) == 5


def test_bad_config_is_a_user_error() -> None:
    from transact.errors import UserError

    with pytest.raises(UserError, match="temperature"):
        ItemGraphConfig(temperature=0).validate()
    with pytest.raises(UserError, match="spectral"):
        ItemGraphConfig(mode="pagerank").validate()
    with pytest.raises(UserError, match="n_clusters"):
        ItemGraphConfig(mode="clustered", n_clusters=ITEM_EMB_DIM).validate()
    with pytest.raises(UserError, match="cluster_factors_per_cluster"):
        ItemGraphConfig(mode="clustered", cluster_factors_per_cluster=-1).validate()
