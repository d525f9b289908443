"""Benchmark serving: the engine against the plain eval-mode model, and the HTTP endpoint.

Usage::

    .venv/bin/python bench/bench_serving.py model [--candidates 100,500,2000] [--threads 2]
    .venv/bin/python bench/bench_serving.py http  [--candidates 500] [--clients 4] [--seconds 20]

``model``: one user with a full sequence of 100 actions, the default TransAct ranker (d = 96,
2 layers, 1 head, FFN 32, DCN v2 + MLP), the same weights in three formulations, in the same
run: ``plain`` (eval-mode ``model(batch)``, C rows each carrying the sequence), ``shared1``
(the model's own shared-first-layer-projection path) and ``engine`` (:mod:`serving.engine`: the
extended exact rewrite, fused lookup, one packed buffer). Reports the latency (median of
``--repeats``, after a warm-up; ``min`` too because the machine is shared), the ratio to plain,
the max abs difference of the probabilities (parity), and the FLOP/s achieved against the
machine's measured fp32 matmul ceiling (a 2048^3 matmul on the same threads).

``http``: starts Ray Serve on 127.0.0.1 with a private ``redis-server`` as the online store
(users with full 100-action sequences fed through the stream and the processor), then a bounded
closed loop: each of ``--clients`` (1, then 4) threads sends ``POST /rank`` (``--candidates``
candidates) back to back for ``--seconds``; p50 / p99 latency, requests/s, the server's model
time and mean batch size, once with dynamic batching (``batch_max_size`` 8) and once without.

Writes ``docs/bench/serving_model.json`` / ``docs/bench/serving_http.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_results import add_json_out, write_results  # noqa: E402

from serving.config import ServingConfig  # noqa: E402
from serving.engine import (  # noqa: E402
    EngineConfig,
    RankingEngine,
    RequestInputs,
    reference_scores,
)
from transact.model.config import RankerConfig  # noqa: E402
from transact.model.ranker import Pinnability  # noqa: E402
from transact.schema import HOUR_MS, SEQ_LEN, USER_EMB_DIM  # noqa: E402

N_ITEMS = 20_000
REQUEST_MS = 1_790_000_000_000


def full_request(rng: np.random.Generator, n_candidates: int) -> RequestInputs:
    actions = rng.integers(2, 5, SEQ_LEN)
    stamps = REQUEST_MS - np.cumsum(rng.integers(1, HOUR_MS, SEQ_LEN))
    return RequestInputs(rng.integers(1, N_ITEMS, SEQ_LEN), actions, stamps, REQUEST_MS,
                         rng.normal(size=USER_EMB_DIM).astype(np.float32),
                         rng.choice(np.arange(1, N_ITEMS), n_candidates, replace=False), 1)


def flops_per_candidate(cfg: RankerConfig, length: int, input_dim: int) -> dict[str, float]:
    """Matmul FLOPs per candidate (2 per multiply-add) of the plain model and the engine."""
    enc = cfg.encoder
    d, f, e = enc.d_model, enc.ffn_dim, enc.item_emb_dim
    layer = 2 * length * d * 3 * d + 2 * 2 * length * length * d + 2 * length * d * d \
        + 2 * 2 * length * d * f
    first_rewritten = 2 * length * length * d + 2 * length * e + 2 * d * e \
        + 2 * 2 * length * d * f
    ranker = cfg.n_cross_layers * 2 * input_dim * input_dim
    width = input_dim
    for hidden in cfg.mlp_dims:
        ranker += 2 * width * hidden
        width = hidden
    ranker += 2 * width * len(cfg.heads)
    later = (enc.num_layers - 1) * layer
    return {"plain": float(enc.num_layers * layer + ranker),
            "engine": float(first_rewritten + later + ranker),
            "encoder_plain": float(enc.num_layers * layer),
            "encoder_engine": float(first_rewritten + later)}


def matmul_ceiling(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def timed(fn: Any, repeats: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def bench_model(args: argparse.Namespace) -> dict[str, Any]:
    by_threads = {}
    for threads in [int(t) for t in str(args.threads).split(",")]:
        torch.set_num_threads(threads)
        by_threads[threads] = bench_model_threads(args)
    first = next(iter(by_threads.values()))
    return {"threads": args.threads, "matmul_ceiling_gflops": first["matmul_ceiling_gflops"],
            "load_average_1m_at_end": os.getloadavg()[0],
            "parity_ok": all(r["parity_ok"] for r in by_threads.values()),
            "by_threads": by_threads}


def bench_model_threads(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    cfg = RankerConfig()
    model = Pinnability(cfg).eval()
    rng = np.random.default_rng(0)
    table = rng.normal(size=(N_ITEMS, cfg.item_emb_dim)).astype(np.float32)
    engine = RankingEngine(model, table, EngineConfig(chunk_size=args.chunk_size))
    # two threads over independent chunks, each single-threaded (only with 1 intra-op thread)
    workers = (RankingEngine(model, table, EngineConfig(chunk_size=args.chunk_size, workers=2))
               if torch.get_num_threads() == 1 else None)
    ceiling = matmul_ceiling()
    rows = {}
    for n_cand in [int(c) for c in args.candidates.split(",")]:
        req = full_request(rng, n_cand)
        want = reference_scores(model, req, table)
        diff = float(np.abs(engine.score(req) - want).max())
        diff_shared = float(np.abs(reference_scores(model, req, table, True) - want).max())
        repeats = max(2, args.repeats if n_cand <= 500 else args.repeats // 2)
        latency = {
            "plain": timed(lambda r=req: reference_scores(model, r, table), repeats),
            "shared1": timed(lambda r=req: reference_scores(model, r, table, True), repeats),
            "engine": timed(lambda r=req: engine.score(r), repeats),
        }
        if workers is not None:
            latency["engine_2_chunk_workers"] = timed(lambda r=req: workers.score(r), repeats)
        flops = flops_per_candidate(cfg, SEQ_LEN, model.input_dim)
        engine_s = latency["engine"][1]
        rows[n_cand] = {
            "latency_ms": {k: round(v[0] * 1000, 1) for k, v in latency.items()},
            "min_latency_ms": {k: round(v[1] * 1000, 1) for k, v in latency.items()},
            "engine_speedup_vs_plain": round(latency["plain"][0] / latency["engine"][0], 2),
            "engine_speedup_vs_plain_min": round(latency["plain"][1] / engine_s, 2),
            "max_abs_diff": {"engine": diff, "shared1": diff_shared},
            "mflop_per_candidate": {k: round(v / 1e6, 2) for k, v in flops.items()},
            "engine_gflops_at_min": round(flops["engine"] * n_cand / engine_s / 1e9, 1),
            "engine_floor_ms_at_ceiling": round(flops["engine"] * n_cand / ceiling * 1000, 1),
        }
        print(f"threads {torch.get_num_threads()}, {n_cand:5d} candidates: "
              f"{json.dumps(rows[n_cand])}", flush=True)
    return {"matmul_ceiling_gflops": round(ceiling / 1e9, 1),
            "load_average_1m": os.getloadavg()[0],
            "parity_ok": all(r["max_abs_diff"]["engine"] <= 1e-5 for r in rows.values()),
            "by_candidates": rows}


# ------------------------------------------------------------------------------------ http
def make_artifact(root: Path) -> Path:
    """A default-shape ranker (random weights) with an examples dir of its item vectors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transact.model.artifact import save_model
    from transact.model.config import ModelConfig
    from transact.schema import ITEM_EMB_DIM, ITEM_SCHEMA

    examples = root / "examples"
    examples.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = np.arange(1, N_ITEMS)
    vectors = rng.normal(size=(len(ids), ITEM_EMB_DIM)).astype(np.float32)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), ITEM_EMB_DIM)
    pq.write_table(pa.table({"item_id": ids, "content_emb": fixed,
                             "topic": (ids % 7).astype(np.int32),
                             "title": [f"item {i}" for i in ids]}).cast(ITEM_SCHEMA),
                   examples / "items.parquet")
    pq.write_table(pa.table({"item_id": ids, "item_emb": fixed}),
                   examples / "pinnerformer_items.parquet")
    torch.manual_seed(0)
    config = ModelConfig()
    return save_model(Pinnability(config.ranker).eval(), config, root / "model",
                      metadata={"examples_dir": str(examples)})


def feed_users(profile: Any, n_users: int) -> None:
    """Every user gets 120 engagements (the sequence keeps the newest 100) via the stream."""
    import pyarrow as pa

    from features.processor import ProcessorConfig, open_processor, open_stream
    from transact.schema import EVENT_SCHEMA

    now = int(time.time() * 1000)
    rng = np.random.default_rng(1)
    n = n_users * 120
    users = np.repeat(np.arange(1, n_users + 1), 120)
    events = pa.table({
        "event_id": np.arange(1, n + 1), "user_id": users,
        "item_id": rng.integers(1, N_ITEMS, n),
        "action_type": rng.integers(2, 5, n).astype(np.int8),
        "timestamp_ms": now - 120_000 + np.tile(np.arange(120) * 500, n_users),
        "surface": ["homefeed"] * n, "request_id": users,
    }).cast(EVENT_SCHEMA)
    open_stream(profile).publish(events)
    processor = open_processor(profile, ProcessorConfig(block_ms=0, batch_size=50_000))
    while (result := processor.step()) is not None and result.messages:
        pass


def closed_loop(url: str, clients: int, seconds: float, n_cand: int, n_users: int
                ) -> dict[str, Any]:
    import urllib.request

    latencies: list[float] = []
    model_ms: list[float] = []
    batch_sizes: list[int] = []
    errors = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while time.perf_counter() < stop:
            body = json.dumps({"user_id": int(rng.integers(1, n_users + 1)),
                               "candidates": rng.choice(np.arange(1, N_ITEMS), n_cand,
                                                        replace=False).tolist()}).encode()
            req = urllib.request.Request(url + "/rank", data=body,
                                         headers={"content-type": "application/json"})
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    answer = json.loads(resp.read())
                ok = not answer["degraded"] and answer["sequence_length"] == SEQ_LEN
            except Exception:  # noqa: BLE001 - counted
                ok = False
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - start)
                    model_ms.append(answer["timing"]["model_ms"])
                    batch_sizes.append(answer["timing"]["batch_size"])
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors[0],
            "requests_per_s": round(len(latencies) / elapsed, 2),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "mean_ms": round(float(lat.mean()), 1) if len(lat) else None,
            "server_model_ms_median": round(float(np.median(model_ms)), 1) if model_ms else None,
            "mean_batch_size": round(float(np.mean(batch_sizes)), 2) if batch_sizes else None}


def bench_http(args: argparse.Namespace) -> dict[str, Any]:
    import socket

    from ray import serve

    from features.store import load_profile
    from serving.app import build_app, run_server, stop_server

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    root = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(root)],
                             stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    results: dict[str, Any] = {}
    try:
        artifact = make_artifact(root)
        profile = load_profile("production", root / "features", redis_port=redis_port)
        feed_users(profile, args.users)
        cfg = ServingConfig(model_uri=str(artifact), profile="production",
                            features_root=str(root / "features"), redis_port=redis_port,
                            port=free_port(), replica_threads=args.threads)
        url = run_server(cfg)
        for label, batch in (("batched", 8), ("unbatched", 1)):
            cfg.batch_max_size = batch
            serve.run(build_app(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix)
            closed_loop(url, 1, 2.0, args.candidates, args.users)  # warm-up
            for clients in [int(c) for c in str(args.clients).split(",")]:
                key = f"{label}_{clients}_clients"
                results[key] = closed_loop(url, clients, args.seconds, args.candidates,
                                           args.users)
                print(key, json.dumps(results[key]), flush=True)
        stop_server()
    finally:
        redis.terminate()
        redis.wait(10)
    return {"candidates": args.candidates, "clients": args.clients, "seconds": args.seconds,
            "load_average_1m_at_end": os.getloadavg()[0],
            "replica_threads": args.threads, "online_store": "redis (direct reader)",
            **results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    model = sub.add_parser("model")
    model.add_argument("--candidates", default="100,500,2000")
    model.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    model.add_argument("--repeats", type=int, default=7)
    model.add_argument("--chunk-size", type=int, default=EngineConfig().chunk_size)
    add_json_out(model, "serving_model")
    http = sub.add_parser("http")
    http.add_argument("--candidates", type=int, default=500)
    http.add_argument("--clients", default="1,4", help="comma-separated client counts")
    http.add_argument("--seconds", type=float, default=20.0)
    http.add_argument("--users", type=int, default=50)
    http.add_argument("--threads", type=int, default=ServingConfig().replica_threads)
    add_json_out(http, "serving_http")
    args = parser.parse_args(argv)
    if args.mode == "model":
        result = bench_model(args)
        path = write_results("serving_model", args, result)
        print(f"wrote {path}")
        return 0 if result["parity_ok"] else 1
    result = bench_http(args)
    path = write_results("serving_http", args, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
