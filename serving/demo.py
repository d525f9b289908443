"""The demo's serving step: start the endpoint on the demo's model and feature store, send a
few requests, print a ranked list, stop it."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from serving.config import ServingConfig


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_serving_demo(artifact_dir: Path | str, features_root: Path | str, dataset_dir: Path | str,
                     n_candidates: int = 500, seed: int = 0) -> dict[str, Any]:
    """Serve ``artifact_dir`` (embedded profile at ``features_root``), rank ``n_candidates``
    random items for a few users of ``dataset_dir``, and stop. Returns what it saw."""
    from rich.console import Console
    from rich.table import Table

    from serving.app import run_server, stop_server
    from transact.data.dataset import read_events, read_items

    console = Console()
    rng = np.random.default_rng(seed)
    items = read_items(Path(dataset_dir)).column("item_id").to_numpy()
    events = read_events(Path(dataset_dir))
    users = np.unique(events.column("user_id").to_numpy())
    cfg = ServingConfig(model_uri=str(artifact_dir), profile="embedded",
                        features_root=str(features_root), port=_free_port())
    started = time.perf_counter()
    url = run_server(cfg)
    console.print(f"  endpoint up at {url} in {time.perf_counter() - started:.1f} s")
    try:
        bad = _post(url + "/rank", {"user_id": 1, "candidates": []})
        console.print(f"  a bad request is answered {bad[0]}: {bad[1]['error']}")
        latencies = []
        answer: dict[str, Any] = {}
        for user in rng.choice(users, size=5, replace=False).tolist():
            cands = rng.choice(items, size=min(n_candidates, len(items)), replace=False)
            t = time.perf_counter()
            status, answer = _post(url + "/rank", {"user_id": int(user),
                                                   "candidates": cands.tolist(), "top_k": 10})
            latencies.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"/rank answered {status}: {answer}")
        table = Table(title=f"user {answer['user_id']}: top 10 of {n_candidates} candidates "
                            f"(model {answer['model_version']}, sequence length "
                            f"{answer['sequence_length']})")
        for column in ("rank", "item", "utility", "p(click)", "p(save)", "p(hide)"):
            table.add_column(column, justify="right")
        for rank, item in enumerate(answer["items"], 1):
            scores = item["scores"]
            table.add_row(str(rank), str(item["item_id"]), f"{item['utility']:.3f}",
                          f"{scores['click']:.3f}", f"{scores['save']:.3f}",
                          f"{scores['hide']:.3f}")
        console.print(table)
        summary = {"url": url, "requests": len(latencies),
                   "median_latency_ms": round(float(np.median(latencies)) * 1000, 1),
                   "degraded": answer["degraded"], "top_item": answer["items"][0]["item_id"]}
        console.print_json(json.dumps(summary))
        return summary
    finally:
        stop_server()
