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


def test_the_test_split_is_scored_by_the_refitted_models_and_not_merged_with_validation(
        tmp_path: Path, controlled_examples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--split test`` keeps the refit and scores the test rows (their labels are stored);
    ``--merge`` refuses to average predictions of different splits."""
    import numpy as np

    from training.train import load_training_data

    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("seed_ensemble", None)
    seed_ensemble = importlib.import_module("seed_ensemble")
    config = tmp_path / "content.yaml"
    config.write_text("model:\n  ranker:\n    item_representation: content\n")
    common = [str(controlled_examples), "--config", str(config), "--seeds", "1",
              "--set", "max_steps=8", "--set", "eval_every_steps=4", "--set", "batch_size=64",
              "--set", "refit_on_val=true"]
    test_out, val_out = tmp_path / "test.json", tmp_path / "val.json"
    assert seed_ensemble.main([*common, "--split", "test", "--out", str(test_out)]) == 0
    assert seed_ensemble.main([*common, "--first-seed", "1", "--out", str(val_out)]) == 0
    test_labels = load_training_data(controlled_examples, "content", with_test=True).test.labels
    stored = np.load(test_out.with_suffix(".npz"))
    assert str(stored["split"]) == "test"
    np.testing.assert_array_equal(stored["labels"], test_labels)
    result = json.loads(test_out.read_text())["result"]
    assert result["split"] == "test"
    assert result["courses"]["0"]["refit_steps"] > 0
    assert json.loads(val_out.read_text())["result"]["courses"]["1"]["refit_steps"] == 0
    with pytest.raises(SystemExit):
        seed_ensemble.main(["--merge", str(test_out.with_suffix(".npz")),
                            str(val_out.with_suffix(".npz"))])
