"""The item-embedding job end to end: CLI -> item_graph.parquet -> a ranker's item vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from training.cli import app
from training.train import load_training_data
from transact.data.examples import ExampleConfig, build_examples
from transact.data.synthetic import WorldConfig, generate_world
from transact.errors import UserError


@pytest.mark.slow
def test_job_learns_on_the_training_window_and_feeds_the_ranker(tmp_path: Path) -> None:
    world, examples = tmp_path / "world", tmp_path / "examples"
    generate_world(world, WorldConfig(n_users=120, n_items=300, n_days=6, seed=3))
    build_examples(world, examples, ExampleConfig(test_days=1, val_days=1,
                                                  item_graph_mode="none"))
    with pytest.raises(UserError, match="item-embeddings"):
        load_training_data(examples, "graph")
    config = tmp_path / "graph.yaml"
    config.write_text("epochs: 2\nhidden_dim: 32\n")
    result = CliRunner().invoke(app, ["item-embeddings", str(world), str(examples),
                                      "--config", str(config), "--seed", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    stats = json.loads((examples / "stats.json").read_text())
    assert summary["window_end_ms"] == stats["split_boundaries_ms"]["val_start"]
    assert summary["config"]["epochs"] == 2 and summary["config"]["seed"] == 1
    assert summary["edges"] > 0 and summary["items"] == 300
    data = load_training_data(examples, "graph")
    norms = np.linalg.norm(data.item_table[1:301], axis=1)
    np.testing.assert_allclose(norms, 2.0, rtol=1e-4)  # every item gets a vector
    assert not data.item_table[0].any()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["propagated", "spectral_propagated", "spectral",
                                  "clustered"])
def test_examples_carry_the_item_vectors_of_the_job(tmp_path: Path, mode: str) -> None:
    """The example builder writes the ``graph`` item vectors itself: the same as the job's
    ``--mode`` on the same training window (the spectral modes read every impression of it,
    the co-engagement graph its clicks and saves)."""
    world, examples = tmp_path / "world", tmp_path / "examples"
    generate_world(world, WorldConfig(n_users=120, n_items=300, n_days=6, seed=3))
    build_examples(world, examples, ExampleConfig(test_days=1, val_days=1,
                                                  item_graph_mode=mode, refit_item_graph=True))
    built = load_training_data(examples, "graph").item_table
    summary = json.loads((examples / "item_graph.json").read_text())
    stats = json.loads((examples / "stats.json").read_text())
    assert summary["window_end_ms"] == stats["split_boundaries_ms"]["val_start"]
    assert summary["config"]["mode"] == mode and summary["edges"] > 0
    # beside them, the same mode on the window through the test start, for a refit
    refit_summary = json.loads((examples / "item_graph_refit.json").read_text())
    assert refit_summary["window_end_ms"] == stats["split_boundaries_ms"]["test_start"]
    assert refit_summary["config"]["mode"] == mode
    assert refit_summary["events_read"] > summary["events_read"]
    refit_table = load_training_data(examples, "graph").refit_item_table
    assert refit_table is not None and refit_table.shape == built.shape
    assert not np.allclose(refit_table, built)
    assert load_training_data(examples, "content").refit_item_table is None
    result = CliRunner().invoke(app, ["item-embeddings", str(world), str(examples),
                                      "--mode", mode])
    assert result.exit_code == 0, result.output
    rebuilt = load_training_data(examples, "graph")
    np.testing.assert_allclose(rebuilt.item_table, built, rtol=1e-5, atol=1e-6)
    # the job rewrote the training window's vectors only: no stale refit vectors remain
    assert rebuilt.refit_item_table is None
    content = load_training_data(examples, "content").item_table
    assert not np.allclose(built[1:301], content[1:301] / np.linalg.norm(
        content[1:301], axis=1, keepdims=True) * 2.0)  # the graph moved them
