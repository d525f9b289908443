"""The README's demo, end to end at a small scale: every stage runs and leaves its outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from transact.model.artifact import load_model


@pytest.mark.slow
def test_demo_runs_every_stage_end_to_end(tmp_path):
    code = "from transact_cli.main import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "demo", "--workdir", str(tmp_path), "--users", "150",
         "--days", "8", "--embedding-steps", "20", "--max-train-examples", "5000"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "all expectations met" in out and "demo finished" in out
    assert "dashboard: transact monitor dashboard" in out  # step 9: monitoring
    assert (tmp_path / "monitoring" / "metrics.db").is_file()
    # the stream processor accepted every event and the read path found the user's features
    assert '"dead_letters": {}' in out and '"user_emb_found": true' in out
    assert list((tmp_path / "pinnerformer" / "user_embeddings").glob("date=*"))
    assert list((tmp_path / "examples_synthetic" / "test").glob("part-*.parquet"))
    metrics = json.loads((tmp_path / "models" / "demo_metrics.json").read_text())
    assert {"no_sequence", "transact"} <= set(metrics)
    artifact = load_model(metrics["artifact"])
    assert artifact.model is not None
