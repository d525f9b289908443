"""The ranker as an MLflow ``pyfunc`` model: what the registry stores and any MLflow tool loads.

The registered model wraps two directories, never pickled code of its own:

* ``transact_model``: the self-describing artifact (:mod:`transact.model.artifact`);
* ``item_vectors``: ``items.npy`` — the ``(max_item_id + 1, E)`` float32 item table the model
  was trained with (its ``RankerConfig.item_representation``) — and ``meta.json``.

Input (the signature): a DataFrame with one row per (user, candidate) — ``user_id``,
``item_id``, ``request_time_ms``, ``surface_id`` (integers) and the list columns
``seq_item_ids``, ``seq_action_types``, ``seq_timestamps_ms`` (``S`` entries, newest first,
0-padded) and ``user_batch_emb`` (``U`` floats); for a model that reads the engagement
counters also ``item_counts`` and ``user_counts`` (4 integers each: impressions, clicks,
saves, hides before the request). Output: ``p_click``, ``p_save``, ``p_hide``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from transact.schema import HEADS

ITEMS_FILE = "items.npy"
INPUT_COLUMNS = ("user_id", "item_id", "request_time_ms", "surface_id", "seq_item_ids",
                 "seq_action_types", "seq_timestamps_ms", "user_batch_emb")
#: input columns of a model with ``use_engagement_counters``
COUNTER_INPUT_COLUMNS = ("item_counts", "user_counts")

try:  # the class must subclass PythonModel when mlflow is there; the core works without it
    from mlflow.pyfunc import PythonModel as _Base
except ImportError:  # pragma: no cover - mlflow is part of the pinned stack
    _Base = object  # type: ignore[assignment,misc]


def save_item_vectors(item_table: np.ndarray, representation: str, out_dir: Path | str
                      ) -> Path:
    """Write ``out_dir/items.npy`` ``(N, E)`` float32 and ``out_dir/meta.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / ITEMS_FILE, np.ascontiguousarray(item_table, dtype=np.float32))
    (out_dir / "meta.json").write_text(json.dumps(
        {"item_representation": representation, "shape": list(item_table.shape)}))
    return out_dir


def load_item_vectors(path: Path | str) -> np.ndarray:
    return np.load(Path(path) / ITEMS_FILE)


def frame_to_examples(frame: pd.DataFrame) -> Any:
    """``(N rows)`` DataFrame of :data:`INPUT_COLUMNS` -> ``ExampleArrays`` (labels zero)."""
    from transact.model.features import ExampleArrays, ExamplesError

    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ExamplesError(f"input lacks columns {missing}; expected {list(INPUT_COLUMNS)}")
    n = len(frame)

    def lists(name: str, dtype: type) -> np.ndarray:
        return np.asarray([np.asarray(v, dtype=dtype) for v in frame[name]], dtype=dtype
                          ).reshape(n, -1)

    counters = {name: lists(name, np.int32) for name in COUNTER_INPUT_COLUMNS
                if name in frame.columns}
    return ExampleArrays(
        **counters,
        request_id=np.zeros(n, np.int64),
        user_id=frame["user_id"].to_numpy(np.int64),
        item_id=frame["item_id"].to_numpy(np.int64),
        request_time_ms=frame["request_time_ms"].to_numpy(np.int64),
        surface_id=frame["surface_id"].to_numpy(np.int64),
        labels=np.zeros((n, len(HEADS)), np.float32),
        seq_item_ids=lists("seq_item_ids", np.int64),
        seq_action_types=lists("seq_action_types", np.int64),
        seq_timestamps_ms=lists("seq_timestamps_ms", np.int64),
        user_batch_emb=lists("user_batch_emb", np.float32),
        user_weight=np.ones(n, np.float32),
    )


def examples_to_frame(examples: Any, rows: np.ndarray) -> pd.DataFrame:
    """Rows of an ``ExampleArrays`` as the model's input DataFrame (e.g. an input example);
    with the engagement counters when the examples carry them."""
    counters = {name: list(getattr(examples, name)[rows].astype(np.int64))
                for name in COUNTER_INPUT_COLUMNS
                if (getattr(examples, name)[rows] >= 0).all()}
    return pd.DataFrame({
        "user_id": examples.user_id[rows], "item_id": examples.item_id[rows],
        "request_time_ms": examples.request_time_ms[rows],
        "surface_id": examples.surface_id[rows],
        "seq_item_ids": list(examples.seq_item_ids[rows]),
        "seq_action_types": list(examples.seq_action_types[rows]),
        "seq_timestamps_ms": list(examples.seq_timestamps_ms[rows]),
        # float64 lists: what a JSON round trip of an input example gives back
        "user_batch_emb": list(examples.user_batch_emb[rows].astype(np.float64)),
        **counters,
    })


def _predict(model: Any, item_table: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
    from transact.model.features import collate

    examples = frame_to_examples(frame)
    import torch

    with torch.inference_mode():
        logits = model(collate(examples, np.arange(len(examples)), item_table,
                               model.cfg.item_id_buckets))
    probs = torch.sigmoid(logits).numpy().astype(np.float64)
    return pd.DataFrame({f"p_{head}": probs[:, h] for h, head in enumerate(HEADS)})


def predict_frame(artifact_dir: Path | str, item_vectors_dir: Path | str,
                  frame: pd.DataFrame) -> pd.DataFrame:
    """Score ``frame`` with the artifact in ``artifact_dir`` (no MLflow involved)."""
    from transact.model.artifact import load_model

    return _predict(load_model(artifact_dir).model, load_item_vectors(item_vectors_dir), frame)


class TransActPyfunc(_Base):  # type: ignore[misc,valid-type]
    """``mlflow.pyfunc`` wrapper: loads the artifact and item vectors from the context."""

    def load_context(self, context: Any) -> None:
        from transact.model.artifact import load_model

        self._model = load_model(context.artifacts["transact_model"]).model
        self._items = load_item_vectors(context.artifacts["item_vectors"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None
                ) -> pd.DataFrame:
        return _predict(self._model, self._items, model_input)
