"""CUDA graphs against eager on a GPU, for a machine that has one (``serving.engine``).

Usage (on a CUDA machine)::

    .venv/bin/python bench/gpu_serving.py [--candidates 100,500,2000] [--repeats 50]

For each candidate count: one user with a full 100-action sequence, the default TransAct
ranker; the engine on ``cuda`` in eager mode (bucketed shapes, one packed host->device copy)
and with one CUDA graph per (length bucket, candidate bucket) captured and replayed; the plain
eval-mode model on the GPU as the baseline. Latency is the median wall time of a whole request
(packing, the copy, the forward, the copy back; ``torch.cuda.synchronize`` included). Parity:
both engine paths within 1e-5 of the plain model on the CPU. Writes
``docs/bench/gpu_serving.json``. Exits 2 when no GPU is present (the CPU paths of the same code
are tested in ``tests/serving/test_engine.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_results import add_json_out, write_results  # noqa: E402
from bench_serving import N_ITEMS, full_request  # noqa: E402

from serving.engine import EngineConfig, RankingEngine, reference_scores  # noqa: E402
from transact.model.config import RankerConfig  # noqa: E402
from transact.model.ranker import Pinnability  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", default="100,500,2000")
    parser.add_argument("--repeats", type=int, default=50)
    add_json_out(parser, "gpu_serving")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run this on a GPU machine)")
        return 2
    torch.manual_seed(0)
    cpu_model = Pinnability(RankerConfig()).eval()
    rng = np.random.default_rng(0)
    table = rng.normal(size=(N_ITEMS, 32)).astype(np.float32)
    engines = {
        "eager": RankingEngine(Pinnability(RankerConfig()).eval(), table,
                               EngineConfig(device="cuda", bucketed=True, cuda_graphs=False)),
        "cuda_graphs": RankingEngine(Pinnability(RankerConfig()).eval(), table,
                                     EngineConfig(device="cuda", bucketed=True,
                                                  cuda_graphs=True)),
    }
    for engine in engines.values():
        engine.model.load_state_dict(cpu_model.state_dict())
    gpu_model = Pinnability(RankerConfig()).eval().cuda()
    gpu_model.load_state_dict(cpu_model.state_dict())
    rows = {}
    for n_cand in [int(c) for c in args.candidates.split(",")]:
        req = full_request(rng, n_cand)
        want = reference_scores(cpu_model, req, table)
        row: dict[str, object] = {"max_abs_diff": {}, "latency_ms": {}}
        for name, engine in engines.items():
            row["max_abs_diff"][name] = float(np.abs(engine.score(req) - want).max())
            times = []
            for _ in range(args.repeats):
                torch.cuda.synchronize()
                start = time.perf_counter()
                engine.score(req)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            row["latency_ms"][name] = round(statistics.median(times) * 1000, 3)

        from serving.engine import request_batch

        batch = request_batch(req, table, cpu_model.cfg.item_id_buckets)
        times = []
        with torch.inference_mode():
            for _ in range(args.repeats):
                torch.cuda.synchronize()
                start = time.perf_counter()
                torch.sigmoid(gpu_model(batch.to("cuda"))).cpu()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        row["latency_ms"]["plain_gpu"] = round(statistics.median(times) * 1000, 3)
        rows[n_cand] = row
        print(n_cand, row, flush=True)
    ok = all(d <= 1e-5 for r in rows.values() for d in r["max_abs_diff"].values())
    path = write_results("gpu_serving", args, {"device": torch.cuda.get_device_name(0),
                                               "parity_ok": ok, "by_candidates": rows})
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
