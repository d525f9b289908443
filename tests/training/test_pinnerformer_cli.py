"""``transact train pinnerformer`` (the daily job's verb) and ``transact features
materialize-embeddings`` (the DAG task after it): settings, day ranges, idempotent reruns,
exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from transact_cli.errors import run_cli
from transact_cli.main import app

TINY_SETTINGS = {"train_steps": 3, "history_len": 16, "window_days": 2, "warmup_days": 1,
                 "batch_size": 8, "n_random_negatives": 8,
                 "model": {"n_layers": 1, "item_id_buckets": 0}}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from transact.data.synthetic import generate_world
    from transact.data.synthetic_world import WorldConfig

    path = tmp_path_factory.mktemp("pf_cli") / "world"
    generate_world(path, WorldConfig(n_users=40, n_items=200, n_days=8, n_topics=4, seed=1))
    return path


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "pinnerformer.json"
    path.write_text(json.dumps(TINY_SETTINGS))
    return path


def _day_file(out: Path, day: str) -> Path:
    return out / "user_embeddings" / f"date={day}" / "part-0.parquet"


@pytest.mark.slow
def test_job_runs_from_a_config_file_with_overrides_and_a_day_range(world, config_file,
                                                                     tmp_path, capsys):
    out = tmp_path / "pf"
    code = run_cli(app, args=["train", "pinnerformer", str(world), str(out), "--config",
                              str(config_file), "--seed", "5", "--first-day", "2026-11-06",
                              "--last-day", "2026-11-07"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["config"]["train_steps"] == 3 and summary["config"]["seed"] == 5
    assert summary["config"]["model"]["n_layers"] == 1
    assert summary["config"]["lr"] == 2e-3  # the dataclass default
    assert summary["days"] == ["2026-11-06", "2026-11-07"]
    assert summary["trained_until"] == "2026-11-06"  # trained only before the first day
    assert all(summary["rows_per_day"][d] > 0 for d in summary["days"])
    # progress lines go to stderr, one per phase and per written day
    assert "PinnerFormer training: step 3/3" in captured.err
    assert f"wrote {_day_file(out, '2026-11-07')}" in captured.err

    # a daily rerun of one day with the run's checkpoint: replaces that day's file only
    before_other = _day_file(out, "2026-11-06").read_bytes()
    first = pq.read_table(_day_file(out, "2026-11-07"))
    code = run_cli(app, args=["train", "pinnerformer", str(world), str(out), "--config",
                              str(config_file), "--checkpoint", str(out / "model.pt"),
                              "--first-day", "2026-11-07", "--last-day", "2026-11-07"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rerun = json.loads(captured.out)
    assert rerun["days"] == ["2026-11-07"] and rerun["reused_checkpoint"]
    assert _day_file(out, "2026-11-06").read_bytes() == before_other
    again = pq.read_table(_day_file(out, "2026-11-07"))
    assert again.select(["user_id", "user_emb"]).equals(first.select(["user_id", "user_emb"]))
    assert sorted(p.name for p in (out / "user_embeddings").iterdir()) == [
        "date=2026-11-06", "date=2026-11-07"]
    assert not list(out.rglob("*.tmp"))

    # the next DAG task: stage and materialise what the job wrote, twice (idempotent)
    root = tmp_path / "store"
    assert run_cli(app, args=["features", "apply", "--root", str(root)]) == 0
    capsys.readouterr()
    for _ in range(2):
        code = run_cli(app, args=["features", "materialize-embeddings", str(out), "--root",
                                  str(root)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        done = json.loads(captured.out)
        assert done["user_emb_rows_staged"] == sum(summary["rows_per_day"].values())
        assert done["materialized"] == ["user_batch_embedding"]


@pytest.mark.slow
def test_user_mistakes_exit_2_and_a_corrupt_checkpoint_exits_3(world, config_file, tmp_path,
                                                               capsys):
    def run(*args: str) -> tuple[int, str]:
        code = run_cli(app, args=["train", "pinnerformer", str(world), str(tmp_path / "out"),
                                  "--config", str(config_file), *args])
        return code, capsys.readouterr().err

    code, err = run("--first-day", "2026-11-07", "--last-day", "2026-11-06")
    assert code == 2 and "after the last" in err
    code, err = run("--day", "2026-11-07", "--first-day", "2026-11-06")
    assert code == 2 and "not both" in err
    code, err = run("--first-day", "07/11/2026")
    assert code == 2 and "YYYY-MM-DD" in err
    code, err = run("--last-day", "2030-01-01")
    assert code == 2 and "outside the dataset" in err
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("histroy_len: 10\n")
    code, err = run("--config", str(bad_config))
    assert code == 2 and "histroy_len" in err
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    code, err = run("--checkpoint", str(tmp_path / "broken.pt"))
    assert code == 3 and "not a readable PinnerFormer checkpoint" in err
    assert not (tmp_path / "out" / "user_embeddings").exists()

    code = run_cli(app, args=["features", "materialize-embeddings", str(tmp_path / "nothing"),
                              "--root", str(tmp_path / "store")])
    assert code == 2 and "transact train pinnerformer" in capsys.readouterr().err


def test_the_console_entry_has_the_verb_and_reports_a_missing_dataset_on_one_line(tmp_path):
    code = "from transact_cli.main import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "train", "pinnerformer",
                             str(tmp_path / "missing"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "missing" in result.stderr and "Traceback" not in result.stderr
