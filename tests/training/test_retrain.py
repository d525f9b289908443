"""Retraining cycle: MLflow registry, the HIT@3 gate and promotion (embedded and production).

The controlled examples (tests/training/conftest.py) carry signal on save and hide only (the
click probability is constant), so the gate here watches the save head."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from training.gate import GateConfig, decide, random_ranking_hits
from training.retrain import RetrainConfig, apply_decision, gate_candidate, run_retraining
from training.train import TrainConfig
from transact.errors import UserError
from transact.metrics import HitAtK
from transact.registry import CHAMPION, PREVIOUS, ModelRegistry, RegistryConfig, resolve_model

pytestmark = pytest.mark.slow


def _config(examples: Path, root: Path, registry: RegistryConfig | None = None
            ) -> RetrainConfig:
    train = TrainConfig(max_epochs=3, eval_every_steps=None, max_eval_requests=None)
    train.model.ranker.item_representation = "content"
    return RetrainConfig(examples_dir=str(examples), work_dir=str(root / "work"), train=train,
                         registry=registry or RegistryConfig(root=str(root / "registry")),
                         gate=GateConfig(positive_heads=["save"]))


def test_retraining_cycle_gate_promotion_and_rollback(gate_examples: Path,
                                                      tmp_path: Path) -> None:
    cfg = _config(gate_examples, tmp_path)
    quiet = {"log": lambda *_: None}
    first = run_retraining(cfg, **quiet)
    assert first.decision.promote, first.decision.reason
    assert first.decision.reference == "random ranking"
    registry = ModelRegistry(cfg.registry)
    assert registry.get_alias(CHAMPION) == first.version

    # a model trained on shuffled labels is rejected; the champion is untouched
    shuffled = run_retraining(dataclasses.replace(cfg, shuffle_labels=True), **quiet)
    assert not shuffled.decision.promote
    assert shuffled.decision.reference == f"champion v{first.version}"
    assert registry.get_alias(CHAMPION) == first.version
    assert registry.get_alias(PREVIOUS) is None
    tags = registry.version_tags(shuffled.version)
    assert tags["gate.decision"] == "reject" and tags["stage"] == "rejected"
    assert tags["shuffled_labels"] == "true" and len(tags["data.fingerprint"]) == 64
    assert tags["git_commit"] != "" and "gate.save" in tags

    # the registered model is usable through the URI serving resolves, and as a pyfunc
    version, artifact = resolve_model(f"models:/{cfg.registry.model_name}@champion",
                                      cfg.registry)
    assert version == first.version and (artifact / "model.json").exists()

    # a gate decided against one champion cannot promote after the champion moved
    outcome = gate_candidate(dataclasses.replace(cfg, gate=GateConfig(
        positive_heads=["save"], margin=-1.0, hide_tolerance=10.0)), shuffled.version, **quiet)
    assert outcome.decision.promote and outcome.champion_before == first.version
    registry.set_alias(CHAMPION, shuffled.version, "by hand")
    with pytest.raises(Exception, match="moved"):
        apply_decision(cfg, outcome, **quiet)

    # promotion keeps the old champion as previous; rollback restores it
    registry.set_alias(CHAMPION, first.version, "back")
    registry.promote(shuffled.version, "manual")
    assert registry.get_alias(PREVIOUS) == first.version
    registry.rollback("bad online numbers")
    assert registry.get_alias(CHAMPION) == first.version
    history = [(e.alias, e.version) for e in registry.alias_history()]
    assert history == [(CHAMPION, first.version), (CHAMPION, shuffled.version),
                       (CHAMPION, first.version), (PREVIOUS, first.version),
                       (CHAMPION, shuffled.version), (CHAMPION, first.version),
                       (PREVIOUS, None)]


def test_pyfunc_model_scores_like_the_artifact(gate_examples: Path, tmp_path: Path) -> None:
    import mlflow

    from training.train import load_training_data
    from transact.model.pyfunc import examples_to_frame, predict_frame

    cfg = _config(gate_examples, tmp_path)
    cfg.train = dataclasses.replace(cfg.train, max_epochs=1)
    first = run_retraining(cfg, log=lambda *_: None)
    registry = ModelRegistry(cfg.registry)
    frame = examples_to_frame(load_training_data(gate_examples, "content").test, np.arange(50))
    mlflow.set_tracking_uri(registry.tracking_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}/{first.version}")
    via_mlflow = loaded.predict(frame)
    direct = predict_frame(registry.artifact_dir(first.version),
                           registry.item_vectors_dir(first.version), frame)
    assert list(via_mlflow.columns) == ["p_click", "p_save", "p_hide"]
    np.testing.assert_allclose(via_mlflow.to_numpy(), direct.to_numpy(), atol=1e-6)
    assert loaded.metadata.get_input_schema() is not None


def test_random_ranking_reference_is_exact() -> None:
    # one request, 5 candidates, 2 positives: E[#pos in top 3] = 3 * 2 / 5; / min(3, 2)
    hits = random_ranking_hits(np.zeros(5, np.int64), np.array([1, 1, 0, 0, 0]))
    assert hits.value == pytest.approx(0.6)
    # simulate: many random orders of the same request
    rng = np.random.default_rng(0)
    draws = [rng.permutation(np.array([1, 1, 0, 0, 0]))[:3].sum() / 2 for _ in range(20000)]
    assert np.mean(draws) == pytest.approx(0.6, abs=0.01)


def _hits(values: np.ndarray) -> HitAtK:
    return HitAtK(float(values.mean()), len(values), np.arange(len(values)), values)


def test_gate_rule_margin_and_hide_tolerance() -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(2000) < 0.4).astype(float)
    better = np.maximum(base, (rng.random(2000) < 0.2).astype(float))
    hide_same = (rng.random(2000) < 0.2).astype(float)
    cand = {"click": _hits(better), "save": _hits(better), "hide": _hits(hide_same)}
    ref = {"click": _hits(base), "save": _hits(base), "hide": _hits(hide_same)}
    assert decide(cand, ref, "champion v1", GateConfig()).promote
    # a margin above the true gain (~ +30 %) rejects
    assert not decide(cand, ref, "champion v1", GateConfig(margin=0.6)).promote
    # a much worse hide head rejects even with better positive heads
    worse_hide = {**cand, "hide": _hits(np.maximum(hide_same, base))}
    decision = decide(worse_hide, ref, "champion v1", GateConfig())
    assert not decision.promote and "hide" in decision.reason
    # a window without a single hide is no evidence against the candidate; one without a
    # save cannot show a gain; requests counted on both sides but disjoint are an error
    empty = HitAtK(float("nan"), 0, np.arange(0), np.zeros(0))
    no_hide = decide({**cand, "hide": empty}, {**ref, "hide": empty}, "champion v1",
                     GateConfig())
    assert no_hide.promote and no_hide.heads[-1].n_requests == 0
    json.dumps(no_hide.to_dict(), allow_nan=False)  # what the DAG's gate task hands on
    no_save = decide({**cand, "save": empty}, {**ref, "save": empty}, "champion v1",
                     GateConfig())
    assert not no_save.promote and "no save positive" in no_save.reason
    assert decide({**cand, "save": empty}, {**ref, "save": empty}, "champion v1",
                  GateConfig(margin=-2.0)).promote  # an open gate
    shifted = HitAtK(float(base.mean()), len(base), np.arange(len(base)) + 10_000, base)
    with pytest.raises(UserError, match="share no counted request"):
        decide(cand, {**ref, "click": shifted}, "champion v1", GateConfig())


@pytest.mark.services
def test_production_registry_on_postgresql(gate_examples: Path, tmp_path: Path) -> None:
    database = f"mlflow_test_{uuid.uuid4().hex[:8]}"
    registry_cfg = RegistryConfig(
        profile="production", root=str(tmp_path / "registry"),
        postgres_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}")
    try:
        cfg = _config(gate_examples, tmp_path, registry_cfg)
        outcome = run_retraining(cfg, log=lambda *_: None)
        assert outcome.decision.promote
        registry = ModelRegistry(registry_cfg)
        assert registry.tracking_uri.startswith("postgresql")
        assert registry.get_alias(CHAMPION) == outcome.version
        assert registry.version_tags(outcome.version)["gate.decision"] == "promote"
    finally:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
