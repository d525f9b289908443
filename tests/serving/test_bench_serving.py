"""bench/bench_serving.py (model mode) measures what it claims and checks parity."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_model_bench_writes_parity_and_flops(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("bench_serving", None)
    bench = importlib.import_module("bench_serving")
    out = tmp_path / "serving_model.json"
    assert bench.main(["model", "--candidates", "3,20", "--repeats", "2", "--threads", "1",
                       "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())["result"]
    assert result["parity_ok"] and result["matmul_ceiling_gflops"] > 0
    row = result["by_threads"]["1"]["by_candidates"]["20"]
    assert set(row["latency_ms"]) == {"plain", "shared1", "engine", "engine_2_chunk_workers"}
    assert row["mflop_per_candidate"]["engine"] < row["mflop_per_candidate"]["plain"]


def test_gpu_script_says_when_there_is_no_gpu(monkeypatch) -> None:
    import torch

    if torch.cuda.is_available():
        return
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("gpu_serving", None)
    assert importlib.import_module("gpu_serving").main(["--repeats", "1"]) == 2
