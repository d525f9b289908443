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
) -> dict[str, Any]:
    """Train ``no_sequence`` and ``transact`` on ``examples_dir``; save TransAct to ``out_dir``.

    Returns ``{variant: test metrics}`` plus the artifact path under ``"artifact"``.
    """
    base = experiment_base_config()
    data = load_training_data(examples_dir, base.model.ranker.item_representation)
    base.max_epochs = epochs
    base.max_train_examples = max_train_examples
    base.max_eval_requests = max_eval_requests
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
    _print_table(results)
    results["artifact"] = str(artifact)
    (Path(out_dir) / "demo_metrics.json").write_text(json.dumps(results, indent=2, default=float))
    return results


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
