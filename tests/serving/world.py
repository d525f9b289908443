"""A small serving world for tests: an examples directory (items, PinnerFormer item vectors,
graph item vectors, train/val/test splits with real sequences) and model artifacts trained
briefly on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
N_ITEMS = 300


def _fixed(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), dtype),
                                             values.shape[1])


def sequences(rng: np.random.Generator, n: int, request_time: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, SEQ_LEN)`` item ids, actions, timestamps: lengths 0..100 (zero-padded), newest
    first, and a few actions at or after the request (which the model must not see)."""
    lengths = rng.choice([0, 1, 3, 10, 40, 100], size=n)
    slots = np.arange(SEQ_LEN)[None, :]
    real = slots < lengths[:, None]
    actions = np.where(real, rng.choice([int(ActionType.CLICK), int(ActionType.SAVE),
                                         int(ActionType.HIDE)], (n, SEQ_LEN)), 0)
    items = np.where(real, rng.integers(1, N_ITEMS + 1, (n, SEQ_LEN)), 0)
    ages = np.cumsum(rng.integers(1, 3 * HOUR_MS, (n, SEQ_LEN)), axis=1)
    future = rng.random(n) < 0.2  # the newest slot lies after the request
    ages[future, 0] = -HOUR_MS
    ts = np.where(real, request_time[:, None] - ages, 0)
    return items.astype(np.int64), actions.astype(np.int8), ts.astype(np.int64)


def engagement_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 4)`` plausible engagement counters: impressions, then clicks / saves / hides."""
    impressions = rng.integers(0, 400, (n, 1))
    rates = rng.random((n, 3)) * np.array([0.3, 0.15, 0.05])
    return np.concatenate([impressions, (impressions * rates).astype(np.int64)], axis=1)


def write_examples(out_dir: Path, seed: int = 0, n_requests: int = 300, per_request: int = 8
                   ) -> Path:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, N_ITEMS + 1)
    content = rng.normal(size=(N_ITEMS, ITEM_EMB_DIM)).astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "item_id": ids, "content_emb": _fixed(content, pa.float32()),
        "topic": (ids % 5).astype(np.int32), "title": [f"item {i}" for i in ids],
    }).cast(ITEM_SCHEMA), out_dir / "items.parquet")
    tower = rng.normal(scale=0.3, size=(N_ITEMS, ITEM_EMB_DIM)).astype(np.float32)
    pq.write_table(pa.table({"item_id": ids, "item_emb": _fixed(tower, pa.float32())}),
                   out_dir / "pinnerformer_items.parquet")
    # the default representation's vectors (the example builder's item_graph.parquet): here
    # the content vectors pulled towards the tower's, at the builder's norm of 2
    graph = content + 3.0 * tower
    graph = 2.0 * graph / np.linalg.norm(graph, axis=1, keepdims=True)
    pq.write_table(pa.table({"item_id": ids, "graph_emb": _fixed(graph.astype(np.float32),
                                                                 pa.float32())}),
                   out_dir / "item_graph.parquet")
    for split, first in (("train", 1), ("val", 100_000), ("test", 200_000)):
        n_req = n_requests if split == "train" else n_requests // 3
        n = n_req * per_request
        request_id = np.repeat(np.arange(first, first + n_req), per_request)
        request_time = T0_MS + 1000 * HOUR_MS + request_id * 60_000
        seq_items, actions, ts = sequences(rng, n_req, request_time[::per_request])
        rep = np.repeat(np.arange(n_req), per_request)
        item_id = rng.integers(1, N_ITEMS + 1, n)
        score = (tower[item_id - 1, 0] + 0.5 * (actions[rep, 0] == ActionType.SAVE))
        outcome = np.where(rng.random(n) < 1 / (1 + np.exp(-2 * score)) * 0.4,
                           ActionType.SAVE,
                           np.where(rng.random(n) < 0.1, ActionType.HIDE,
                                    np.where(rng.random(n) < 0.2, ActionType.CLICK,
                                             ActionType.SKIP))).astype(np.int8)
        part = out_dir / split
        part.mkdir(exist_ok=True)
        pq.write_table(pa.table({
            "request_id": request_id, "user_id": request_id % 50 + 1, "item_id": item_id,
            "request_time_ms": request_time, "surface_id": np.ones(n, np.int8),
            "outcome": outcome,
            "label_click": (outcome == ActionType.CLICK).astype(np.int8),
            "label_save": (outcome == ActionType.SAVE).astype(np.int8),
            "label_hide": (outcome == ActionType.HIDE).astype(np.int8),
            "seq_len": (actions[rep] > 0).sum(axis=1).astype(np.int16),
            "seq_item_ids": _fixed(seq_items[rep], pa.int64()),
            "seq_action_types": _fixed(actions[rep], pa.int8()),
            "seq_timestamps_ms": _fixed(ts[rep], pa.int64()),
            "user_batch_emb": _fixed(rng.normal(size=(n, USER_EMB_DIM)).astype(np.float32),
                                     pa.float32()),
            "item_counts": _fixed(engagement_counts(rng, n), pa.int32()),
            "user_counts": _fixed(engagement_counts(rng, n), pa.int32()),
        }).cast(example_schema(counters=True)), part / "part-00000.parquet")
    return out_dir


def train_artifact(examples_dir: Path, out_dir: Path, seed: int = 0, steps: int = 25) -> Path:
    """Train the default TransAct ranker (graph item vectors) a few steps; save it."""
    from training.train import TrainConfig, load_training_data, train_model
    from transact.model.artifact import save_model

    cfg = TrainConfig(max_steps=steps, batch_size=64, eval_every_steps=steps, seed=seed,
                      progress=False)
    data = load_training_data(examples_dir, cfg.model.ranker.item_representation)
    result = train_model(cfg, data)
    save_model(result.model, cfg.model, out_dir, metadata={"examples_dir": str(examples_dir)})
    return out_dir
