"""The demo's result table is printed whole in a log or a pipe, not cut at 80 columns."""

from __future__ import annotations

import pytest

from training.demo import _print_table


def test_demo_table_is_not_truncated_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = {f"{m}_{h}": 0.5 for m in ("hit3", "auc") for h in ("click", "save", "hide")}
    _print_table({"no_sequence": metrics, "transact": dict(metrics, hit3_save=0.55)})
    out = capsys.readouterr().out
    assert "no_sequence" in out and "transact" in out and "…" not in out
    assert "+10.0%" in out  # the relative change of TransAct's save HIT@3
