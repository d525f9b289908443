"""A saved model describes itself and loads back to identical outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from transact.model.artifact import (
    ArtifactError,
    CorruptModelArtifact,
    load_model,
    save_model,
)
from transact.model.config import EncoderConfig, ModelConfig, RankerConfig
from transact.model.features import make_batch
from transact.model.ranker import Pinnability
from transact.schema import HOUR_MS

REQUEST_MS = 1_767_225_600_000


def random_batch(n: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    item_table = rng.normal(size=(50, 32)).astype(np.float32)
    item_table[0] = 0
    lengths = rng.integers(0, 100, n)
    slots = np.arange(100)[None, :]
    actions = np.where(slots < lengths[:, None], rng.integers(2, 5, (n, 100)), 0)
    ts = np.where(actions > 0, REQUEST_MS - (slots + 1) * HOUR_MS // 4, 0)
    return make_batch(
        item_table=item_table, item_id=rng.integers(1, 50, n),
        request_time_ms=np.full(n, REQUEST_MS), surface_id=rng.integers(0, 5, n),
        seq_item_ids=np.where(actions > 0, rng.integers(1, 50, (n, 100)), 0),
        seq_action_types=actions, seq_timestamps_ms=ts,
        user_batch_emb=rng.normal(size=(n, 32)).astype(np.float32), item_id_buckets=64,
        item_counts=rng.integers(0, 50, (n, 4)), user_counts=rng.integers(0, 50, (n, 4)))


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    cfg = ModelConfig(ranker=RankerConfig(encoder=EncoderConfig(fusion="append",
                                                                positional="learned"),
                                          item_id_buckets=64))
    cfg.loss.label_weights = [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]
    torch.manual_seed(1)
    model = Pinnability(cfg.ranker).eval()
    batch = random_batch()
    expected = model.predict(batch)
    save_model(model, cfg, tmp_path / "m", metadata={"val_hit3_save": 0.5})
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["config"]["ranker"]["encoder"]["fusion"] == "append"
    loaded = load_model(tmp_path / "m")
    assert loaded.config == cfg
    assert loaded.metadata == {"val_hit3_save": 0.5}
    assert torch.equal(loaded.model.predict(batch), expected)


def test_missing_artifact_is_a_user_error_and_a_damaged_one_an_internal_fault(
        tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_model(tmp_path)
    cfg = ModelConfig()
    save_model(Pinnability(cfg.ranker), cfg, tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["config"]["ranker"]["encoder"]["first_k"] = 5  # weights no longer fit the config
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CorruptModelArtifact, match="does not match"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text("{broken")
    with pytest.raises(CorruptModelArtifact, match="not valid JSON"):
        load_model(tmp_path / "m")


def test_ranker_scores_one_request_identically_with_the_shared_rewrite() -> None:
    torch.manual_seed(2)
    model = Pinnability(RankerConfig(item_id_buckets=64)).eval()
    one_user = random_batch(n=1)
    n = 40
    rng = np.random.default_rng(3)
    batch = type(one_user)(**{name: getattr(one_user, name).expand(n, *getattr(
        one_user, name).shape[1:]).clone() for name in (
            "seq_action_types", "seq_item_emb", "seq_timestamps_ms", "request_time_ms",
            "surface_id", "hour_of_day", "numeric", "user_batch_emb")},
        cand_item_emb=torch.from_numpy(rng.normal(size=(n, 32)).astype(np.float32)),
        cand_item_bucket=torch.from_numpy(rng.integers(0, 64, n)),
        counters=torch.from_numpy(rng.normal(size=(n, 8)).astype(np.float32)))
    torch.testing.assert_close(model.predict(batch, shared_sequence=True), model.predict(batch),
                               atol=1e-5, rtol=1e-5)
