"""One retraining cycle as library functions: train a candidate, register it, gate it, promote.

The CLI verbs (``transact train retrain``, ``transact registry ...``), the Airflow tasks of
``dags/retrain_twice_weekly.py`` and the demo are thin callers of:

* :func:`train_candidate` — train on the examples' train split (plain loop or Ray Train, by
  ``backend``), evaluate on the held-out window, log the MLflow run and register the model as
  a new version (tags: ``stage=candidate``, data window, fingerprint, git commit);
* :func:`gate_candidate` — score the candidate and the current champion on the *same*, latest
  held-out window and apply :func:`training.gate.decide`; the decision and its numbers are
  stored as version tags;
* :func:`apply_decision` — promote (``previous`` <- old champion, ``champion`` <- candidate)
  or leave every alias as it is;
* :func:`run_retraining` — the three in a row.

The held-out window is the examples' ``test`` split: the newest days, never used for training
or early stopping (which uses ``val``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from training.gate import GateConfig, GateDecision, decide, random_ranking_hits
from training.train import TrainConfig, TrainData, load_training_data, predict_probs
from transact.errors import UserError
from transact.metrics import DEFAULT_UTILITY, HitAtK, ranking_metrics_detail
from transact.model.features import ExampleArrays
from transact.registry import (
    CHAMPION,
    AliasEvent,
    ModelRegistry,
    RegisteredCandidate,
    RegistryConfig,
    dataset_fingerprint,
    git_commit,
)
from transact.schema import HEADS

Backend = Literal["plain", "ray"]


@dataclass
class RayTrainSettings:
    """Ray Train resources (used with ``backend="ray"``); a GPU cluster is configuration:
    ``use_gpu: true`` and ``num_workers`` = GPUs, ``address`` of the cluster."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    #: ``None``: start a local cluster on 127.0.0.1; else ``ray://host:port`` / ``auto``
    address: str | None = None
    #: automatic restarts of the worker group from the last checkpoint
    max_failures: int = 1
    #: where Ray Train keeps checkpoints (``None``: ``<work_dir>/ray``)
    storage_path: str | None = None
    #: row-group shuffle buffer of the streamed training set, in rows
    shuffle_buffer_rows: int = 32_768


@dataclass
class RetrainConfig:
    """One retraining cycle. ``examples_dir`` must hold train/ val/ test/ and items.parquet."""

    examples_dir: str = "artifacts/demo/examples_synthetic"
    work_dir: str = "artifacts/retrain"
    backend: Backend = "plain"
    train: TrainConfig = field(default_factory=TrainConfig)
    ray: RayTrainSettings = field(default_factory=RayTrainSettings)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    #: cap on held-out requests the gate scores (None: the whole window)
    max_gate_requests: int | None = 20_000
    #: test hook: train on labels shuffled across rows (a model that learns nothing)
    shuffle_labels: bool = False

    def validate(self) -> RetrainConfig:
        if self.backend not in ("plain", "ray"):
            raise UserError(f"backend must be 'plain' or 'ray', got {self.backend!r}")
        if self.ray.num_workers < 1:
            raise UserError(f"ray.num_workers must be >= 1, got {self.ray.num_workers}")
        self.train.validate()
        self.registry.validate()
        self.gate.validate()
        return self


@dataclass
class GateOutcome:
    version: str
    decision: GateDecision
    champion_before: str | None
    events: list[AliasEvent] = field(default_factory=list)

    @property
    def champion_after(self) -> str | None:
        return self.version if self.decision.promote else self.champion_before


def _held_out(data: TrainData) -> ExampleArrays:
    if data.test is None or not len(data.test):
        raise UserError("the examples hold no test/ split: the gate needs a held-out window "
                        "(build examples with a test split)")
    return data.test


def _window(examples: ExampleArrays) -> dict[str, int]:
    if not len(examples):
        return {}
    return {"from_ms": int(examples.request_time_ms.min()),
            "to_ms": int(examples.request_time_ms.max())}


def _gate_examples(examples: ExampleArrays, max_requests: int | None) -> ExampleArrays:
    from training.train import subsample_requests

    return subsample_requests(examples, max_requests, seed=0)


def hits_of(model: Any, item_table: np.ndarray, examples: ExampleArrays,
            utility: tuple[float, ...] = DEFAULT_UTILITY
            ) -> tuple[dict[str, float], dict[str, HitAtK]]:
    probs = predict_probs(model, examples, item_table)
    return ranking_metrics_detail(examples.request_id, probs, examples.labels, utility)


def train_candidate(cfg: RetrainConfig, data: TrainData | None = None,
                    log: Any = print) -> RegisteredCandidate:
    """Train, evaluate on the held-out window, log to MLflow and register a new version."""
    cfg.validate()
    examples_dir = Path(cfg.examples_dir)
    if data is None:
        data = load_training_data(examples_dir, cfg.train.model.ranker.item_representation,
                                  with_train=cfg.backend == "plain")
    _held_out(data)
    train_data = data
    if cfg.shuffle_labels and cfg.backend == "plain":  # (Ray workers shuffle per chunk)
        perm = np.random.default_rng(cfg.train.seed).permutation(len(data.train))
        train_data = dataclasses.replace(data, train=dataclasses.replace(
            data.train, labels=data.train.labels[perm]))
    log(f"training a candidate on {examples_dir} ({cfg.backend}"
        f"{f', {cfg.ray.num_workers} Ray workers' if cfg.backend == 'ray' else ''})")
    if cfg.backend == "ray":
        from training.ray_train import fit_on_ray

        result = fit_on_ray(cfg, train_data, Path(cfg.work_dir) / "ray")
    else:
        from training.train import train_model

        result = train_model(cfg.train, train_data)
    return register_trained(cfg, result, data, log)


def register_trained(cfg: RetrainConfig, result: Any, data: TrainData,
                     log: Any = print) -> RegisteredCandidate:
    """Evaluate a trained model (``TrainResult``) on the held-out window, log the MLflow run
    and register it as a new version (nothing is promoted)."""
    from transact.model.artifact import save_model
    from transact.model.pyfunc import examples_to_frame, save_item_vectors

    examples_dir = Path(cfg.examples_dir)
    held_out = _held_out(data)
    run_dir = Path(cfg.work_dir) / "runs" / time.strftime("%Y%m%dT%H%M%S")
    run_dir = run_dir.with_name(f"{run_dir.name}-{time.time_ns() % 1_000_000:06d}")
    gate_window = _gate_examples(held_out, cfg.max_gate_requests)
    # a refitted model may have been trained with the refit window's item vectors
    item_table = data.item_table if result.item_table is None else result.item_table
    held_metrics, _ = hits_of(result.model, item_table, gate_window, cfg.train.utility)
    artifact = save_model(result.model, cfg.train.model, run_dir / "model",
                          metadata={"examples_dir": str(examples_dir), **result.summary()})
    items_dir = save_item_vectors(item_table, data.item_representation, run_dir / "items")
    tags = {
        "stage": "candidate",
        "git_commit": git_commit(),
        "data.examples_dir": str(examples_dir.resolve()),
        "data.fingerprint": dataset_fingerprint([examples_dir / "train", examples_dir / "val",
                                                 examples_dir / "test"]),
        "data.train_window": json.dumps(_window(data.train)),
        "data.held_out_window": json.dumps(_window(held_out)),
        "backend": cfg.backend,
        "shuffled_labels": str(cfg.shuffle_labels).lower(),
    }
    registry = ModelRegistry(cfg.registry)
    candidate = registry.log_candidate(
        artifact_dir=artifact, item_vectors_dir=items_dir,
        params={"train": dataclasses.asdict(cfg.train), "backend": cfg.backend,
                "ray": dataclasses.asdict(cfg.ray)},
        metrics={f"held_out_{k}": v for k, v in held_metrics.items()},
        history=[{k: v for k, v in row.items()} for row in result.history],
        tags=tags, input_example=examples_to_frame(gate_window, np.arange(min(4, len(
            gate_window)))),
        run_name=f"retrain-{run_dir.name}")
    log(f"registered {registry.cfg.model_name} version {candidate.version} "
        f"(held-out HIT@3 click/save/hide "
        f"{held_metrics['hit3_click']:.3f}/{held_metrics['hit3_save']:.3f}/"
        f"{held_metrics['hit3_hide']:.3f})")
    return candidate


def gate_candidate(cfg: RetrainConfig, version: str, data: TrainData | None = None,
                   log: Any = print) -> GateOutcome:
    """Compare ``version`` with the champion (or, with none, a random ranking) on the
    latest held-out window; store the decision as version tags (nothing is promoted)."""
    from transact.model.artifact import load_model
    from transact.model.pyfunc import load_item_vectors

    cfg.validate()
    registry = ModelRegistry(cfg.registry)
    examples_dir = Path(cfg.examples_dir)
    if data is None:
        data = load_training_data(examples_dir, cfg.train.model.ranker.item_representation)
    window = _gate_examples(_held_out(data), cfg.max_gate_requests)
    champion = registry.get_alias(CHAMPION)

    def hits(v: str) -> dict[str, HitAtK]:
        model = load_model(registry.artifact_dir(v)).model
        items = load_item_vectors(registry.item_vectors_dir(v))
        return hits_of(model, items, window, cfg.train.utility)[1]

    cand_hits = hits(version)
    if champion is None or champion == str(version):
        reference = "random ranking"
        ref_hits = {h: random_ranking_hits(window.request_id, window.labels[:, i])
                    for i, h in enumerate(HEADS)}
    else:
        reference = f"champion v{champion}"
        ref_hits = hits(champion)
    decision = decide(cand_hits, ref_hits, reference, cfg.gate)
    registry.set_version_tags(version, {**decision.to_tags(),
                                        "gate.window": json.dumps(_window(window)),
                                        "gate.at_ms": str(int(time.time() * 1000))})
    log(f"gate: version {version} vs {reference}: "
        f"{'PROMOTE' if decision.promote else 'REJECT'} — {decision.reason}")
    for row in decision.heads:
        log(f"  {row.head:5s} HIT@3 {row.candidate:.4f} vs {row.reference:.4f} "
            f"({row.relative_change:+.1%}, CI [{row.ci_low:+.1%}, {row.ci_high:+.1%}], "
            f"n={row.n_requests}) {'ok' if row.passed else 'FAIL'}")
    return GateOutcome(version=str(version), decision=decision, champion_before=champion)


def apply_decision(cfg: RetrainConfig, outcome: GateOutcome, log: Any = print) -> GateOutcome:
    """Promote a passed candidate; a rejected one leaves every alias untouched."""
    registry = ModelRegistry(cfg.registry)
    if not outcome.decision.promote:
        registry.set_version_tags(outcome.version, {"stage": "rejected"})
        log(f"version {outcome.version} rejected; champion stays "
            f"{outcome.champion_before or '(none)'}")
        return outcome
    if registry.get_alias(CHAMPION) != outcome.champion_before:
        raise UserError(f"the champion moved from {outcome.champion_before} to "
                        f"{registry.get_alias(CHAMPION)} while version {outcome.version} was "
                        f"gated; gate it again against the new champion")
    outcome.events = registry.promote(outcome.version,
                                      f"gate: {outcome.decision.reason}")
    registry.set_version_tags(outcome.version, {"stage": "champion"})
    log(f"version {outcome.version} promoted to champion (previous: "
        f"{outcome.champion_before or '(none)'})")
    return outcome


def run_retraining(cfg: RetrainConfig, log: Any = print) -> GateOutcome:
    """Train -> register -> gate -> promote (or not), on one loaded copy of the data."""
    cfg.validate()
    data = load_training_data(cfg.examples_dir, cfg.train.model.ranker.item_representation,
                              with_train=cfg.backend == "plain")
    candidate = train_candidate(cfg, data, log)
    outcome = gate_candidate(cfg, candidate.version, data, log)
    return apply_decision(cfg, outcome, log)
