"""The ``transact`` command line: help everywhere, readable errors, examples from a dataset."""

from __future__ import annotations

import subprocess
import sys

from tiny_data import write_tiny_dataset

from transact.schema import DAY_MS, ActionType

T0 = 1_767_225_600_000


def run_cli(*args: str) -> subprocess.CompletedProcess:
    code = "from transact_cli.main import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def test_help_lists_every_stage():
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ("data", "demo"):
        assert verb in result.stdout
    data_help = run_cli("data", "--help")
    assert data_help.returncode == 0 and "examples" in data_help.stdout


def test_bad_dataset_path_is_one_readable_line_not_a_traceback(tmp_path):
    result = run_cli("data", "examples", str(tmp_path / "missing"), str(tmp_path / "out"),
                     "--no-validate")
    assert result.returncode == 2
    assert "no meta.json" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_examples_command_builds_splits(tmp_path):
    events = [(i + 1, 1 + i % 3, 1 + i % 10, int(ActionType.CLICK if i % 4 else ActionType.SKIP),
               T0 + i * DAY_MS // 4) for i in range(40)]
    dataset = write_tiny_dataset(tmp_path / "ds", events)
    result = run_cli("data", "examples", str(dataset), str(tmp_path / "ex"), "--no-validate")
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "ex" / "train").glob("part-*.parquet"))
    assert list((tmp_path / "ex" / "test").glob("part-*.parquet"))
    # the item-vector mode and the first training day are options; a bad mode is refused
    result = run_cli("data", "examples", str(dataset), str(tmp_path / "ex2"), "--no-validate",
                     "--item-graph-mode", "propagated", "--start-day", "2026-01-02")
    assert result.returncode == 0, result.stderr
    assert '"mode": "propagated"' in (tmp_path / "ex2" / "item_graph.json").read_text()
    bad = run_cli("data", "examples", str(dataset), str(tmp_path / "ex3"), "--no-validate",
                  "--item-graph-mode", "pagerank")
    assert bad.returncode == 2 and "item_graph_mode" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bad_option_value_is_a_usage_message_not_a_traceback(tmp_path):
    result = run_cli("data", "synthetic", "--users", "many", "--out", str(tmp_path / "w"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "users" in result.stderr


def test_validate_on_nothing_fails_and_says_what_it_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "missing"):
        result = run_cli("data", "validate", str(target))
        assert result.returncode == 2, result.stdout
        assert "all expectations met" not in result.stdout
        assert "expected a dataset directory" in result.stderr
        assert "Traceback" not in result.stderr


def test_validate_reports_the_rows_it_checked(tmp_path):
    events = [(i + 1, 1 + i % 3, 1 + i % 10, int(ActionType.CLICK), T0 + i * DAY_MS // 4)
              for i in range(40)]
    dataset = write_tiny_dataset(tmp_path / "ds", events)
    result = run_cli("data", "validate", str(dataset))
    assert result.returncode == 0, result.stderr
    assert "all expectations met (40 rows)" in " ".join(result.stdout.split())
