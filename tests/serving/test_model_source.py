"""Where the served model comes from: versions, registry URIs, the model's own item vectors."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from serving.model_source import (
    ModelSourceError,
    load_item_vectors,
    load_served_model,
    resolve_model_uri,
)
from transact.errors import UserError


def test_directory_version_follows_the_weights(trained_artifacts: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    first, second = trained_artifacts
    served = tmp_path / "served"
    shutil.copytree(first, served)
    v_first, path = resolve_model_uri(str(served))
    assert path == served and v_first == resolve_model_uri(str(first))[0]
    shutil.copy(second / "weights.safetensors", served / "weights.safetensors")
    shutil.copy(second / "model.json", served / "model.json")
    assert resolve_model_uri(str(served))[0] == resolve_model_uri(str(second))[0] != v_first


def test_a_wrong_uri_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="not a model artifact"):
        resolve_model_uri(str(tmp_path))
    assert issubclass(ModelSourceError, UserError)


def test_registry_uri_without_a_registry_says_so(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transact.registry", None)  # import fails
    with pytest.raises(ModelSourceError, match="needs the model registry"):
        resolve_model_uri("models:/transact@champion")


def test_registry_uri_is_resolved_by_the_registry(monkeypatch,
                                                  trained_artifacts: tuple[Path, Path]) -> None:
    """The registry's contract is ``resolve_model(uri) -> (version, artifact_dir)``; a stand-in
    with that contract (the registry is another stage's work) shows what serving does with it."""
    aliases = {"champion": ("7", trained_artifacts[1])}
    stand_in = types.ModuleType("transact.registry")
    stand_in.resolve_model = lambda uri: aliases[uri.split("@")[1]]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transact.registry", stand_in)
    served = load_served_model("models:/transact@champion")
    assert served.version == "7" and served.artifact_dir == trained_artifacts[1]
    aliases["champion"] = ("8", trained_artifacts[0])  # the alias moves
    assert resolve_model_uri("models:/transact@champion") == ("8", trained_artifacts[0])


def test_item_vectors_are_the_models_representation(serving_examples: Path) -> None:
    tower = pq.read_table(serving_examples / "pinnerformer_items.parquet")
    ids = tower.column("item_id").to_numpy()
    vectors = np.asarray(tower.column("item_emb").combine_chunks().values).reshape(len(ids), -1)
    table, known = load_item_vectors(serving_examples, "pinnerformer")
    np.testing.assert_array_equal(table[ids], vectors)
    content, _ = load_item_vectors(serving_examples, "content")
    assert not np.allclose(content[ids], vectors)
    assert known[ids].all() and not known[0]
    both, _ = load_item_vectors(serving_examples, "content+pinnerformer")
    assert both.shape[1] == content.shape[1] + table.shape[1]
    with pytest.raises(ModelSourceError, match="items.parquet is missing"):
        load_item_vectors(serving_examples / "nope", "pinnerformer")


def test_a_model_that_reads_engagement_counters_is_served(tmp_path: Path,
                                                          serving_examples: Path) -> None:
    """The stream processor keeps the counters online: such a model loads, says it reads
    them (so each request also reads its candidates' counters) and scores with them."""
    from serving.engine import RequestInputs
    from transact.model.artifact import save_model
    from transact.model.config import ModelConfig, RankerConfig
    from transact.model.ranker import Pinnability

    cfg = ModelConfig(ranker=RankerConfig(use_engagement_counters=True))
    save_model(Pinnability(cfg.ranker), cfg, tmp_path / "m",
               metadata={"examples_dir": str(serving_examples)})
    served = load_served_model(str(tmp_path / "m"))
    assert served.reads_counters
    cands = np.flatnonzero(served.known_items)[:5]
    seq = np.zeros(100, np.int64)
    scores = served.engine.score(RequestInputs(
        seq, seq, seq, 10**12, np.zeros(32, np.float32), cands,
        item_counts=np.tile([100, 10, 5, 1], (5, 1)), user_counts=np.array([50, 5, 2, 1])))
    assert scores.shape == (5, len(served.heads)) and np.isfinite(scores).all()
