"""The training part of ``transact demo``: TransAct against the no-sequence baseline.

Both models train with the experiment runner's budget (same data, seed and steps); the TransAct
model is saved as a self-describing artifact and the relative HIT@3 change per head is printed,
the same quantity as the paper's offline table.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from training.experiments import BASELINE, experiment_base_config, select_variants
from training.train import load_training_data, train_model
from transact.model.artifact import save_model
from transact.schema import HEADS


def wide_console() -> Console:
    """The terminal's console; off a terminal (a log, a pipe) a wide one, so that tables
    are printed whole instead of being cut to 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def run_training_demo(
    examples_dir: Path | str,
    out_dir: Path | str,
    seed: int = 0,
    epochs: int = 1,
    max_train_examples: int = 100_000,
    max_eval_requests: int = 1_500,
    registry_root: Path | str | None = None,
) -> dict[str, Any]:
    """Train ``no_sequence`` and ``transact`` on ``examples_dir``; save TransAct to ``out_dir``.
    With ``registry_root``, TransAct is also registered in the MLflow registry there, gated
    against the champion (or, for a first model, a random ranking) and promoted if it passes.

    Returns ``{variant: test metrics}`` plus the artifact path under ``"artifact"`` (the
    champion's artifact when one was promoted) and the gate's outcome under ``"gate"``.
    """
    base = experiment_base_config()
    data = load_training_data(examples_dir, base.model.ranker.item_representation)
    base.max_epochs = epochs
    base.max_train_examples = max_train_examples
    base.max_eval_requests = max_eval_requests
    base.max_test_requests = max_eval_requests  # the demo's short budget: a test subset too
    base.seed = seed
    base.progress = True
    results: dict[str, Any] = {}
    artifact = Path(out_dir) / "transact"
    for variant in select_variants(["transact"]):
        cfg = copy.deepcopy(base)
        cfg.model = variant.apply(cfg.model)
        wide_console().print(f"  training [bold]{variant.name}[/]: {variant.description}")
        result = train_model(cfg, data)
        results[variant.name] = result.test_metrics
        if variant.name == "transact":
            save_model(result.model, cfg.model, artifact,
                       metadata={"examples_dir": str(examples_dir), **result.summary()})
            transact_result, transact_cfg = result, cfg
    _print_table(results)
    results["artifact"] = str(artifact)
    if registry_root is not None:
        results["gate"] = _register_and_gate(examples_dir, out_dir, registry_root,
                                             transact_cfg, transact_result, data)
        if results["gate"]["champion_artifact"]:
            results["artifact"] = results["gate"]["champion_artifact"]
    (Path(out_dir) / "demo_metrics.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def _register_and_gate(examples_dir: Path | str, out_dir: Path | str,
                       registry_root: Path | str, cfg: Any, result: Any, data: Any
                       ) -> dict[str, Any]:
    """Register the trained TransAct, gate it and promote it if it passes; print the
    decision."""
    from training.retrain import RetrainConfig, apply_decision, gate_candidate, register_trained
    from transact.registry import RegistryConfig, resolve_model

    console = wide_console()
    retrain = RetrainConfig(examples_dir=str(examples_dir), work_dir=str(Path(out_dir) /
                                                                         "retrain"),
                            train=cfg, registry=RegistryConfig(root=str(registry_root)))

    def log(line: str) -> None:
        console.print(f"  {line}", markup=False, highlight=False)

    candidate = register_trained(retrain, result, data, log)
    outcome = apply_decision(retrain, gate_candidate(retrain, candidate.version, data, log),
                             log)
    champion = outcome.champion_after
    artifact = None
    if champion is not None:
        _, path = resolve_model(f"models:/{retrain.registry.model_name}@champion",
                                retrain.registry)
        artifact = str(path)
    return {"version": candidate.version, "promote": outcome.decision.promote,
            "reference": outcome.decision.reference, "reason": outcome.decision.reason,
            "champion": champion, "champion_artifact": artifact,
            "registry": str(registry_root)}


def _print_table(results: dict[str, dict[str, float]]) -> None:
    console = wide_console()
    table = Table(title="test split: HIT@3 (hide: lower is better) and AUC per head")
    table.add_column("model")
    for head in HEADS:
        table.add_column(f"HIT@3 {head}", justify="right")
    for head in HEADS:
        table.add_column(f"AUC {head}", justify="right")
    base = results[BASELINE]
    for name, metrics in results.items():
        cells = []
        for head in HEADS:
            value = metrics.get(f"hit3_{head}", float("nan"))
            ref = base.get(f"hit3_{head}", float("nan"))
            change = "" if name == BASELINE else f" ({(value - ref) / max(ref, 1e-12):+.1%})"
            cells.append(f"{value:.3f}{change}")
        cells += [f"{metrics.get(f'auc_{head}', float('nan')):.3f}" for head in HEADS]
        table.add_row(name, *cells)
    console.print(table)
