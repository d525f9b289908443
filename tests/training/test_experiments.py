"""The experiment runner writes the paper-style table; the CLI trains and saves an artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from training.cli import app
from training.experiments import (
    BASELINE,
    experiment_base_config,
    paired_bootstrap,
    run_experiments,
    select_variants,
)
from training.train import load_training_data
from transact.errors import UserError
from transact.metrics import HitAtK
from transact.model.artifact import load_model


def test_variant_selection_always_includes_the_baseline() -> None:
    names = [v.name for v in select_variants(["transact", "batch_emb_only"])]
    assert names == [BASELINE, "transact"]
    with pytest.raises(UserError, match="unknown variants"):
        select_variants(["transformer_xl"])


def test_paired_bootstrap_flags_a_clear_change_only() -> None:
    ids = np.arange(400)
    base = HitAtK(0.25, 400, ids, np.tile([0.0, 0.0, 0.0, 1.0], 100))
    better = HitAtK(0.5, 400, ids, np.tile([0.0, 1.0, 0.0, 1.0], 100))
    point, low, high = paired_bootstrap(better, base)
    assert point == pytest.approx(1.0) and low > 0
    _, low, high = paired_bootstrap(base, base)
    assert low <= 0 <= high


@pytest.mark.slow
def test_runner_writes_the_table_with_its_command(tmp_path: Path,
                                                  controlled_examples: Path) -> None:
    base = experiment_base_config()
    base.max_train_examples, base.eval_every_steps, base.max_eval_requests = 1500, 100, 200
    base.model.ranker.item_representation = "content"  # the controlled data have no batch job
    out = tmp_path / "docs" / "experiments_controlled.md"
    results = run_experiments(load_training_data(controlled_examples), "controlled", out,
                              "transact train experiments X --source controlled",
                              variants=["transact", "bst_all"], base=base)
    assert [r.name for r in results] == [BASELINE, "bst_all", "transact"]
    text = out.read_text()
    assert "transact train experiments X --source controlled" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 3 and rows[0].startswith(f"| `{BASELINE}`")
    assert "+9.40% / -14.86%" in rows[2]  # the paper's numbers next to ours
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved) == {BASELINE, "bst_all", "transact"}
    assert 0.0 <= saved["transact"][0]["test"]["hit3_save"] <= 1.0


@pytest.mark.slow
def test_cli_fit_writes_a_loadable_artifact(tmp_path: Path, controlled_examples: Path) -> None:
    out = tmp_path / "model"
    result = CliRunner().invoke(app, [
        "fit", str(controlled_examples), "--out", str(out), "--max-steps", "5",
        "--item-representation", "content",
        "--batch-size", "64", "--no-progress", "--label-weights",
        "[[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["steps"] == 5
    artifact = load_model(out)
    assert artifact.config.loss.label_weights == [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]
    assert artifact.metadata["test"]["hit3_save"] == summary["test"]["hit3_save"]


def test_cli_reports_a_missing_examples_dir_as_a_user_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fit", str(tmp_path / "nope"), "--no-progress"])
    assert isinstance(result.exception, UserError)
    assert "no train/ split" in str(result.exception)


@pytest.mark.slow
def test_parallel_jobs_give_the_same_table_with_seed_statistics(
        tmp_path: Path, controlled_examples: Path) -> None:
    base = experiment_base_config()
    base.max_train_examples, base.eval_every_steps, base.max_eval_requests = 600, 50, 100
    base.model.ranker.item_representation = "content"
    data = load_training_data(controlled_examples)
    tables = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}.md"
        run_experiments(data, "controlled", out, "cmd", variants=["wdl_avg"], base=base,
                        seeds=2, jobs=jobs)
        tables[jobs] = json.loads(out.with_suffix(".json").read_text())
    assert tables[1] == tables[2] or all(  # train_seconds differ; metrics must not
        [r["test"] for r in tables[1][k]] == [r["test"] for r in tables[2][k]] for k in tables[1])
    assert [r["seed"] for r in tables[2][BASELINE]] == [0, 1]
    text = (tmp_path / "jobs2.md").read_text()
    assert "±" in text and "Welch" in text


def test_verdict_line_says_plainly_whether_transact_wins() -> None:
    from training.experiments import VariantResult, verdict

    def runs(name: str, level: float) -> list[VariantResult]:
        out = []
        for seed in range(3):
            jitter = 0.001 * seed
            test = {f"auc_{h}": level + jitter for h in ("click", "save", "hide")}
            test |= {"hit3_click": level + jitter, "hit3_save": level + jitter,
                     "hit3_hide": 1 - level - jitter}  # hide: lower is better
            out.append(VariantResult(name, test, {}, 0.0, 0, 0))
        return out

    winning = {BASELINE: runs(BASELINE, 0.5), "wdl_avg": runs("wdl_avg", 0.52),
               "transact": runs("transact", 0.6)}
    assert verdict(winning).startswith("**Verdict: TransAct wins**")
    assert "6 of 12" not in verdict(winning) and "12 of 12" in verdict(winning)
    losing = dict(winning, transact=runs("transact", 0.51))
    text = verdict(losing)
    assert text.startswith("**Verdict: TransAct does not win this table**")
    assert "vs `wdl_avg` (p < 0.05)" in text


def test_one_seed_verdict_claims_no_significance() -> None:
    from training.experiments import VariantResult, verdict

    def one(name: str, level: float) -> list[VariantResult]:
        test = {f"auc_{h}": level for h in ("click", "save", "hide")}
        test |= {"hit3_click": level, "hit3_save": level, "hit3_hide": 1 - level}
        return [VariantResult(name, test, {}, 0.0, 0, 0)]

    text = verdict({BASELINE: one(BASELINE, 0.5), "transact": one("transact", 0.6)})
    assert text.startswith("**Verdict (one seed, no significance test)**")
    assert "ahead on 6 of 6" in text


@pytest.mark.parametrize("config_file", [None, "training/configs/movielens.yaml",
                                         "training/configs/paper.yaml"])
def test_every_variant_is_a_valid_model_on_every_shipped_config(config_file) -> None:
    """The ablation list runs on the shipped configs (MovieLens keeps the max pool only, so a
    variant that needs the K columns must set them itself)."""
    from training.train import TrainConfig
    from transact.config import resolve_config

    root = Path(__file__).resolve().parents[2]
    base = resolve_config(TrainConfig, root / config_file if config_file else None)
    for variant in select_variants(None):
        model = variant.apply(base.model)
        assert model.ranker.encoder is not None
    if config_file and "movielens" in config_file:
        assert base.model.ranker.use_engagement_counters
        assert base.model.ranker.encoder.first_k == 0
        assert base.refit_on_val  # the MovieLens table refits on train + val (session 9)


def test_table_names_the_mode_of_the_graph_item_vectors(tmp_path) -> None:
    """The table's data line says how the examples' graph vectors were made."""
    import json
    from types import SimpleNamespace

    from training.experiments import _graph_mode

    (tmp_path / "item_graph.json").write_text(json.dumps({"config": {"mode": "clustered"}}))
    graph = SimpleNamespace(item_representation="graph", examples_dir=tmp_path)
    assert "`clustered`" in _graph_mode(graph)
    assert _graph_mode(SimpleNamespace(item_representation="content",
                                       examples_dir=tmp_path)) == ""
    assert _graph_mode(SimpleNamespace(item_representation="graph",
                                       examples_dir=tmp_path / "missing")) == ""
