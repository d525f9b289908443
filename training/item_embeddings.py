"""The item-embedding job: PinSage-style vectors from the training window's co-engagements.

``run_item_embeddings(dataset_dir, examples_dir, cfg)`` reads the dataset's events strictly
before the examples' validation start (the training window only: validation and test
engagements never shape the vectors), builds the co-engagement graph, learns the vectors
(:mod:`transact.model.item_graph`) and writes ``examples_dir/item_graph.parquet``
(``item_id``, ``graph_emb``) with ``item_graph.json`` (what it was trained on). A ranker with
``item_representation="graph"`` then reads its item vectors from there
(:func:`training.train.load_training_data`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from transact.data.dataset import item_embedding_table, iter_event_parts, read_items
from transact.errors import UserError
from transact.model.item_graph import (
    GRAPH_FILE,
    GRAPH_REFIT_FILE,
    GRAPH_REFIT_SUMMARY_FILE,
    ItemGraphConfig,
    item_vectors_from_events,
    write_item_graph,
)


def training_window_end(examples_dir: Path) -> int:
    """The validation start of ``examples_dir`` (ms): the end of the training window."""
    stats_path = examples_dir / "stats.json"
    if not stats_path.exists():
        raise UserError(f"{stats_path} is missing; build examples first with "
                        f"`transact data examples`")
    return int(json.loads(stats_path.read_text())["split_boundaries_ms"]["val_start"])


def run_item_embeddings(dataset_dir: Path | str, examples_dir: Path | str,
                        cfg: ItemGraphConfig | None = None) -> dict[str, Any]:
    """Learn item vectors on the training window; write them next to the examples."""
    cfg = (cfg or ItemGraphConfig()).validate()
    dataset_dir, examples_dir = Path(dataset_dir), Path(examples_dir)
    started = time.perf_counter()
    end_ms = training_window_end(examples_dir)
    columns: dict[str, list[np.ndarray]] = {k: [] for k in
                                            ("user_id", "item_id", "action_type", "timestamp_ms")}
    for part in iter_event_parts(dataset_dir):
        early = part.column("timestamp_ms").to_numpy() < end_ms
        for name in columns:
            columns[name].append(part.column(name).to_numpy()[early])
    events = {k: np.concatenate(v) if v else np.empty(0, np.int64) for k, v in columns.items()}
    content = item_embedding_table(read_items(dataset_dir))
    result = item_vectors_from_events(content, events["user_id"], events["item_id"],
                                      events["action_type"], events["timestamp_ms"], cfg)
    # the builder's refit-window vectors were made another way: a refit falls back to these
    for name in (GRAPH_REFIT_FILE, GRAPH_REFIT_SUMMARY_FILE):
        (examples_dir / name).unlink(missing_ok=True)
    summary = write_item_graph(examples_dir, result, cfg, {
        "window_end_ms": end_ms, "events_read": int(len(events["item_id"])),
        "seconds": time.perf_counter() - started})
    return summary


def read_item_graph(examples_dir: Path | str, n_rows: int) -> np.ndarray:
    """``(n_rows, D)`` table of learned item vectors (row = item id; unknown ids zero)."""
    from training.train import read_item_vectors

    return read_item_vectors(Path(examples_dir) / GRAPH_FILE, "graph_emb", n_rows,
                             "item_representation='graph' needs the item embedding job; run "
                             f"`transact train item-embeddings DATASET_DIR {examples_dir}`")
