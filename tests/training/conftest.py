"""A tiny controlled examples directory whose truth the tests know.

Items 1..40 belong to topics ``item % 4``; content embeddings are the topic's one-hot direction
plus small noise. Each example's newest action (30-40 h before the request, outside the 24 h
time window) is a save, hide or click of an item of a random topic ``t``; older actions are
clicks on random items. Outcome of the candidate (topic ``c``):

* newest action a *save* of topic ``c``: save with probability 0.6
* newest action a *hide* of topic ``c``: hide with probability 0.5, save with probability 0.02
* otherwise: save 0.12, click 0.12, hide 0.03

so a model must tell a save from a hide of the same topic to rank well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transact.schema import (
    HOUR_MS,
    ITEM_EMB_DIM,
    ITEM_SCHEMA,
    SEQ_LEN,
    USER_EMB_DIM,
    ActionType,
    example_schema,
)

T0_MS = 1_767_225_600_000
N_ITEMS = 40
N_TOPICS = 4


def item_embeddings(seed: int = 0) -> np.ndarray:
    """``(N_ITEMS + 1, E)`` with row 0 = padding."""
    rng = np.random.default_rng(seed)
    emb = np.zeros((N_ITEMS + 1, ITEM_EMB_DIM), np.float32)
    topics = np.arange(1, N_ITEMS + 1) % N_TOPICS
    emb[1:, :N_TOPICS] = np.eye(N_TOPICS, dtype=np.float32)[topics] * 2.0
    emb[1:] += rng.normal(scale=0.1, size=(N_ITEMS, ITEM_EMB_DIM)).astype(np.float32)
    return emb


def items_of_topic(topic: int) -> np.ndarray:
    ids = np.arange(1, N_ITEMS + 1)
    return ids[ids % N_TOPICS == topic]


def controlled_table(n_requests: int, seed: int, first_request: int = 1,
                     candidates: int = 4) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = n_requests * candidates
    request_id = np.repeat(np.arange(first_request, first_request + n_requests), candidates)
    user_id = request_id.copy()
    request_time = T0_MS + request_id * HOUR_MS
    item_id = rng.integers(1, N_ITEMS + 1, n)
    cand_topic = item_id % N_TOPICS
    # per request: one sequence shared by its candidates
    lengths = rng.integers(1, 8, n_requests)
    newest_action = rng.choice([ActionType.SAVE, ActionType.HIDE, ActionType.CLICK],
                               size=n_requests, p=[0.4, 0.4, 0.2]).astype(np.int8)
    slots = np.arange(SEQ_LEN)[None, :]
    actions = np.where(slots < lengths[:, None], int(ActionType.CLICK), 0).astype(np.int8)
    actions[:, 0] = newest_action
    seq_items = np.where(actions > 0, rng.integers(1, N_ITEMS + 1, (n_requests, SEQ_LEN)), 0)
    # the newest action is on a topic of one of the request's candidates half of the time
    first_cand_topic = cand_topic[::candidates]
    newest_topic = np.where(rng.random(n_requests) < 0.5, first_cand_topic,
                            rng.integers(0, N_TOPICS, n_requests))
    seq_items[:, 0] = [rng.choice(items_of_topic(t)) for t in newest_topic]
    ts = np.where(actions > 0, request_time[::candidates, None] - 30 * HOUR_MS
                  - slots * HOUR_MS - rng.integers(0, 10 * HOUR_MS, (n_requests, 1)), 0)
    rep = np.repeat(np.arange(n_requests), candidates)
    same_topic = newest_topic[rep] == cand_topic
    saved, hidden = newest_action[rep] == ActionType.SAVE, newest_action[rep] == ActionType.HIDE
    p_save = np.where(same_topic & saved, 0.6, np.where(same_topic & hidden, 0.02, 0.12))
    p_hide = np.where(same_topic & hidden, 0.5, 0.03)
    p_click = np.full(n, 0.12)
    u = rng.random(n)
    outcome = np.where(u < p_save, ActionType.SAVE,
                       np.where(u < p_save + p_hide, ActionType.HIDE,
                                np.where(u < p_save + p_hide + p_click, ActionType.CLICK,
                                         ActionType.SKIP))).astype(np.int8)

    def fixed(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), dtype),
                                                 values.shape[1])

    return pa.table({
        "request_id": request_id, "user_id": user_id, "item_id": item_id,
        "request_time_ms": request_time, "surface_id": np.ones(n, np.int8),
        "outcome": outcome,
        "label_click": (outcome == ActionType.CLICK).astype(np.int8),
        "label_save": (outcome == ActionType.SAVE).astype(np.int8),
        "label_hide": (outcome == ActionType.HIDE).astype(np.int8),
        "seq_len": lengths[rep].astype(np.int16),
        "seq_item_ids": fixed(seq_items[rep].astype(np.int64), pa.int64()),
        "seq_action_types": fixed(actions[rep], pa.int8()),
        "seq_timestamps_ms": fixed(ts[rep].astype(np.int64), pa.int64()),
        "user_batch_emb": fixed(np.zeros((n, USER_EMB_DIM), np.float32), pa.float32()),
        # engagement counters that say nothing (every item and user seen equally often)
        "item_counts": fixed(np.tile([[40, 8, 4, 1]], (n, 1)), pa.int32()),
        "user_counts": fixed(np.tile([[40, 8, 4, 1]], (n, 1)), pa.int32()),
    }).cast(example_schema(counters=True))


def write_controlled_examples(out_dir: Path, n_train: int = 1200, n_eval: int = 250,
                              candidates: int = 4) -> Path:
    splits = {"train": (n_train, 1, 1), "val": (n_eval, 2, 100_000), "test": (n_eval, 3, 200_000)}
    for split, (n_requests, seed, first) in splits.items():
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(controlled_table(n_requests, seed, first, candidates),
                       out_dir / split / "part-00000.parquet")
    emb = item_embeddings()
    ids = np.arange(1, N_ITEMS + 1)
    pq.write_table(pa.table({
        "item_id": ids,
        "content_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb[1:].reshape(-1)),
                                                         ITEM_EMB_DIM),
        "topic": (ids % N_TOPICS).astype(np.int32),
        "title": [f"item {i}" for i in ids],
    }).cast(ITEM_SCHEMA), out_dir / "items.parquet")
    return out_dir


@pytest.fixture(scope="session")
def controlled_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_controlled_examples(tmp_path_factory.mktemp("controlled") / "examples")


@pytest.fixture(scope="session")
def gate_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Controlled examples with 10 candidates per request (HIT@3 is informative there)."""
    return write_controlled_examples(tmp_path_factory.mktemp("gate") / "examples", 1000, 400,
                                     candidates=10)
