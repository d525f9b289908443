"""bench/seed_ensemble.py on the controlled examples: what it records about each run."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_report_records_each_seeds_course_and_its_chosen_step(
        tmp_path: Path, controlled_examples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per seed: the validation AUC of each head at every evaluation, and the early-stopping
    step, whose row is the AUC the report gives for that seed's model."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("seed_ensemble", None)
    seed_ensemble = importlib.import_module("seed_ensemble")
    out = tmp_path / "seed_ensemble.json"
    config = tmp_path / "content.yaml"  # the controlled items have content vectors only
    config.write_text("model:\n  ranker:\n    item_representation: content\n")
    assert seed_ensemble.main([
        str(controlled_examples), "--config", str(config), "--seeds", "2",
        "--set", "max_steps=12",
        "--set", "eval_every_steps=4", "--set", "batch_size=64", "--set", "patience=5",
        "--out", str(out)]) == 0
    result = json.loads(out.read_text())["result"]
    assert set(result["courses"]) == {"0", "1"}
    for seed, course in result["courses"].items():
        history = course["history"]
        assert [row["step"] for row in history] == [4, 8, 12]
        assert all(set(row) == {"step", "auc_click", "auc_save", "auc_hide"} for row in history)
        chosen = next(row for row in history if row["step"] == course["best_step"])
        assert [chosen[f"auc_{head}"] for head in ("click", "save", "hide")] == pytest.approx(
            result["per_seed"][seed], abs=2e-4)
