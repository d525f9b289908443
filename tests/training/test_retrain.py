"""Retraining cycle: MLflow registry, the HIT@3 gate and promotion (embedded and production).

The controlled examples (tests/training/conftest.py) carry signal on save and hide only (the
click probability is constant), so the gate here watches the save head."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import numpy as np
import pytest

from training.gate import GateConfig, decide, random_ranking_hits
from training.retrain import RetrainConfig, apply_decision, gate_candidate, run_retraining
from training.train import TrainConfig
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


def test_first_model_promoted_then_shuffled_labels_rejected(gate_examples: Path,
                                                            tmp_path: Path) -> None:
    cfg = _config(gate_examples, tmp_path)
    first = run_retraining(cfg, log=lambda *_: None)
    assert first.decision.promote, first.decision.reason
    assert first.decision.reference == "random ranking"
    registry = ModelRegistry(cfg.registry)
    assert registry.get_alias(CHAMPION) == first.version

    shuffled = run_retraining(dataclasses.replace(cfg, shuffle_labels=True),
                              log=lambda *_: None)
    assert not shuffled.decision.promote
    assert shuffled.decision.reference == f"champion v{first.version}"
    assert registry.get_alias(CHAMPION) == first.version  # untouched
    assert registry.get_alias(PREVIOUS) is None
    tags = registry.version_tags(shuffled.version)
    assert tags["gate.decision"] == "reject" and tags["stage"] == "rejected"
    assert tags["shuffled_labels"] == "true" and len(tags["data.fingerprint"]) == 64
    # the registered model is usable through the URI serving resolves
    version, artifact = resolve_model(f"models:/{cfg.registry.model_name}@champion",
                                      cfg.registry)
    assert version == first.version and (artifact / "model.json").exists()


def test_promotion_moves_previous_and_rollback_restores(gate_examples: Path,
                                                        tmp_path: Path) -> None:
    cfg = _config(gate_examples, tmp_path)
    first = run_retraining(cfg, log=lambda *_: None)
    registry = ModelRegistry(cfg.registry)
    # a second, differently seeded model promoted by hand through apply_decision's path
    second_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=1),
                                     gate=GateConfig(positive_heads=["save"], margin=-1.0,
                                                     hide_tolerance=10.0))
    second = run_retraining(second_cfg, log=lambda *_: None)
    assert second.decision.promote
    assert registry.get_alias(CHAMPION) == second.version
    assert registry.get_alias(PREVIOUS) == first.version
    registry.rollback("bad online numbers")
    assert registry.get_alias(CHAMPION) == first.version
    history = [(e.alias, e.version) for e in registry.alias_history()]
    assert history == [(CHAMPION, first.version), (PREVIOUS, first.version),
                       (CHAMPION, second.version), (CHAMPION, first.version),
                       (PREVIOUS, None)]


def test_gate_refuses_when_champion_moved_meanwhile(gate_examples: Path, tmp_path: Path
                                                    ) -> None:
    cfg = _config(gate_examples, tmp_path)
    cfg.gate = GateConfig(positive_heads=["save"], margin=-1.0, hide_tolerance=10.0)
    first = run_retraining(cfg, log=lambda *_: None)
    from training.retrain import train_candidate

    candidate = train_candidate(cfg, log=lambda *_: None)
    outcome = gate_candidate(cfg, candidate.version, log=lambda *_: None)
    ModelRegistry(cfg.registry).set_alias(CHAMPION, candidate.version, "by hand")
    ModelRegistry(cfg.registry).set_alias(CHAMPION, first.version, "by hand, back")
    outcome.champion_before = "999"
    with pytest.raises(Exception, match="moved"):
        apply_decision(cfg, outcome, log=lambda *_: None)


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
