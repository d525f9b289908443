"""The Ray Serve endpoint on loopback: ranking, events, bad input, hot reload under load, the
online store going down and coming back. One Serve instance for the module."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server on a free loopback port (stopped and restarted by the test)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def call(url: str, body: Any = None, raw: bytes | None = None, headers: dict | None = None,
         method: str | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None
                                                                   else "GET"),
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        text, status = err.read(), err.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text.decode()


@pytest.fixture(scope="module")
def server(trained_artifacts: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, Any]]:
    from serving.app import run_server, stop_server
    from serving.config import ServingConfig
    from serving.engine import EngineConfig

    root = tmp_path_factory.mktemp("serve")
    redis = RedisServer(root)
    redis.start()
    served = root / "served"  # the path the app serves; tests replace its files
    shutil.copytree(trained_artifacts[0], served)
    cfg = ServingConfig(model_uri=str(served), profile="production", redis_port=redis.port,
                        features_root=str(root / "features"), port=free_port(),
                        admin_token=TOKEN, store_retry_after_s=0.3, max_body_bytes=200_000,
                        engine=EngineConfig(chunk_size=64),
                        serving_log_dir=str(root / "serving_log"))
    url = run_server(cfg)
    try:
        yield {"url": url, "cfg": cfg, "redis": redis, "served": served,
               "artifacts": trained_artifacts}
    finally:
        stop_server()
        redis.stop()


def test_rank_orders_candidates_by_utility(server: dict[str, Any]) -> None:
    status, body = call(server["url"] + "/rank", {"user_id": 7, "candidates": [5, 9, 11, 2],
                                                  "top_k": 3})
    assert status == 200, body
    assert body["model_version"].startswith("dir:")
    assert body["cold_start"] is True and body["degraded"] is False
    assert len(body["items"]) == 3
    utilities = [item["utility"] for item in body["items"]]
    assert utilities == sorted(utilities, reverse=True)
    weights = server["cfg"].utility
    for item in body["items"]:
        assert set(item["scores"]) == {"click", "save", "hide"}
        expected = sum(weights[h] * p for h, p in item["scores"].items())
        assert abs(expected - item["utility"]) < 1e-5


def test_rank_answers_are_logged_for_monitoring(server: dict[str, Any]) -> None:
    from monitoring.logs import ParquetServingLog

    status, body = call(server["url"] + "/rank", {"user_id": 8, "candidates": [3, 4, 6, 10, 12],
                                                  "top_k": 4})
    assert status == 200, body
    log = ParquetServingLog(Path(server["cfg"].serving_log_dir)).read().to_pandas()
    shown = log[log["request_id"] == body["request_id"]].sort_values("position")
    assert shown["item_id"].tolist() == [item["item_id"] for item in body["items"]]
    assert shown["position"].tolist() == [0, 1, 2, 3]
    assert set(shown["user_id"]) == {8} and set(shown["model_version"]) == {body["model_version"]}
    assert abs(shown["score_save"].iloc[0] - body["items"][0]["scores"]["save"]) < 1e-6


def bad_requests(cfg: Any) -> list[tuple[str, Any, bytes | None, dict | None]]:
    """(route, json body, raw body, headers): every one must be answered 4xx."""
    now = int(time.time() * 1000)
    ok = {"user_id": 1, "candidates": [1, 2]}
    cases: list[tuple[str, Any, bytes | None, dict | None]] = [
        ("/rank", None, b"{not json", None),
        ("/rank", None, b"", None),
        ("/rank", None, b"\xff\xfe\x00", None),
        ("/rank", [1, 2, 3], None, None),
        ("/rank", "user 1", None, None),
        ("/rank", None, b"null", None),
        ("/rank", {"candidates": [1, 2]}, None, None),
        ("/rank", {"user_id": 1}, None, None),
        ("/rank", {"user_id": "1", "candidates": [1]}, None, None),
        ("/rank", {"user_id": 1.5, "candidates": [1]}, None, None),
        ("/rank", {"user_id": True, "candidates": [1]}, None, None),
        ("/rank", {"user_id": -3, "candidates": [1]}, None, None),
        ("/rank", {"user_id": 2**64, "candidates": [1]}, None, None),
        ("/rank", {"user_id": 1, "candidates": []}, None, None),
        ("/rank", {"user_id": 1, "candidates": "1,2"}, None, None),
        ("/rank", {"user_id": 1, "candidates": [1, "2"]}, None, None),
        ("/rank", {"user_id": 1, "candidates": [1, None]}, None, None),
        ("/rank", {"user_id": 1, "candidates": [1, 2.5]}, None, None),
        ("/rank", {"user_id": 1, "candidates": [1, 1]}, None, None),
        ("/rank", {"user_id": 1, "candidates": [0, 1]}, None, None),
        ("/rank", {"user_id": 1, "candidates": list(range(1, cfg.max_candidates + 2))},
         None, None),
        ("/rank", {"user_id": 1, "candidates": [1, 99_999]}, None, None),  # unknown item
        ("/rank", {**ok, "request_time_ms": -5}, None, None),
        ("/rank", {**ok, "request_time_ms": 17}, None, None),
        ("/rank", {**ok, "request_time_ms": now + 86_400_000}, None, None),
        ("/rank", {**ok, "request_time_ms": "now"}, None, None),
        ("/rank", {**ok, "surface": "moon"}, None, None),
        ("/rank", {**ok, "top_k": 0}, None, None),
        ("/rank", {**ok, "extra": 1}, None, None),
        ("/rank", None, json.dumps({**ok, "pad": "x" * 300_000}).encode(), None),
        ("/events", {"events": []}, None, None),
        ("/events", {"events": [{"event_id": 1}]}, None, None),
        ("/events", {"events": [{"event_id": 1, "user_id": 1, "item_id": 1,
                                 "action_type": "like", "timestamp_ms": now,
                                 "request_id": 1}]}, None, None),
        ("/events", {"events": [{"event_id": 1, "user_id": 1, "item_id": 1,
                                 "action_type": 9, "timestamp_ms": now,
                                 "request_id": 1}]}, None, None),
        ("/events", {"events": [{"event_id": 1, "user_id": 0, "item_id": 1,
                                 "action_type": "save", "timestamp_ms": now,
                                 "request_id": 1}]}, None, None),
        ("/events", {"events": [{"event_id": 1, "user_id": 1, "item_id": 1,
                                 "action_type": "save", "timestamp_ms": now // 1000,
                                 "request_id": 1}]}, None, None),
        ("/events", {"events": [{"event_id": 1, "user_id": 1, "item_id": 1,
                                 "action_type": "save", "timestamp_ms": now + 86_400_000,
                                 "request_id": 1}]}, None, None),
        ("/events", None, b"[]", None),
        ("/admin/reload", None, b"{}", None),
        ("/admin/reload", None, b"{}", {"authorization": "Bearer wrong"}),
        ("/admin/model", {"model_uri": 3}, None, {"authorization": f"Bearer {TOKEN}"}),
        ("/admin/model", {"model_uri": "/no/such/dir"}, None,
         {"authorization": f"Bearer {TOKEN}"}),
    ]
    return cases


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server: dict[str, Any]) -> None:
    cases = bad_requests(server["cfg"])
    assert len(cases) >= 30
    # a chunked body (no Content-Length) over the limit is cut off too
    chunked = urllib.request.Request(
        server["url"] + "/rank", data=iter([b"[" + b"1," * 60_000, b"1" * 100_000 + b"]"]),
        headers={"content-type": "application/json", "transfer-encoding": "chunked"})
    try:
        urllib.request.urlopen(chunked, timeout=30)
        raise AssertionError("an oversized chunked body was accepted")
    except urllib.error.HTTPError as err:
        assert err.code == 413
    for route, body, raw, headers in cases:
        status, answer = call(server["url"] + route, body, raw, headers)
        assert 400 <= status < 500, (route, body if raw is None else raw[:60], status, answer)
        assert isinstance(answer, dict) and answer.get("error"), answer
    assert call(server["url"] + "/healthz")[0] == 200
    assert call(server["url"] + "/readyz")[0] == 200
    status, body = call(server["url"] + "/rank", {"user_id": 1, "candidates": [1, 2]})
    assert status == 200 and len(body["items"]) == 2
    _, metrics = call(server["url"] + "/metrics")
    assert 'transact_requests_total{route="rank",status="422"}' in metrics


def test_events_feed_the_users_realtime_sequence(server: dict[str, Any]) -> None:
    from features.processor import ProcessorConfig, open_processor
    from features.store import load_profile

    now = int(time.time() * 1000)
    user = 4242
    events = [{"event_id": 10_000 + i, "user_id": user, "item_id": 20 + i,
               "action_type": ["click", "save", "hide", "skip"][i % 4],
               "timestamp_ms": now - 60_000 + i * 1000, "surface": "homefeed",
               "request_id": 1} for i in range(6)]
    status, body = call(server["url"] + "/events", {"events": events})
    assert status == 202 and body == {"appended": 6}
    cfg = server["cfg"]
    profile = load_profile("production", cfg.features_root, redis_port=cfg.redis_port)
    processor = open_processor(profile, ProcessorConfig(block_ms=0))
    result = processor.step()
    assert result is not None and result.accepted == 6
    status, body = call(server["url"] + "/rank", {"user_id": user, "candidates": [1, 2, 3],
                                                  "request_time_ms": now + 1000})
    assert status == 200, body
    assert body["cold_start"] is False and body["sequence_length"] == 5  # skips are no action


def test_concurrent_requests_are_batched(server: dict[str, Any]) -> None:
    url = server["url"]
    results: list[int] = []

    def one() -> None:
        results.append(call(url + "/rank", {"user_id": 3, "candidates": list(range(1, 200))})[0])

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 12
    _, metrics = call(url + "/metrics")
    sizes = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
             if line.startswith("transact_rank_batch_size_")}
    assert sizes["transact_rank_batch_size_sum"] > sizes["transact_rank_batch_size_count"]


def test_reload_under_load_drops_nothing(server: dict[str, Any]) -> None:
    url, served = server["url"], server["served"]
    first, second = server["artifacts"]
    auth = {"authorization": f"Bearer {TOKEN}"}
    start_version = call(url + "/readyz")[1]["model_version"]
    failures: list[Any] = []
    versions: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, body = call(url + "/rank", {"user_id": 5, "candidates": list(range(1, 150))})
            if status != 200:
                failures.append((status, body))
            else:
                versions.add(body["model_version"])

    clients = [threading.Thread(target=load) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        # 1. the same path gets new weights (a retrained model written in place)
        for name in ("model.json", "weights.safetensors"):
            shutil.copy(second / name, served / name)
        status, body = call(url + "/admin/reload", raw=b"", headers=auth)
        assert status == 200 and body["changed"] is True, body
        time.sleep(0.5)
        # 2. switch the URI (what moving an alias does), then back
        status, body = call(url + "/admin/model", {"model_uri": str(first)}, headers=auth)
        assert status == 200 and body["changed"] is True, body
        time.sleep(0.5)
        status, body = call(url + "/admin/model", {"model_uri": str(served)}, headers=auth)
        assert status == 200, body
        time.sleep(0.5)
        # 3. nothing changed: no reload
        status, body = call(url + "/admin/reload", raw=b"", headers=auth)
        assert status == 200 and body["changed"] is False
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert failures == []
    assert start_version in versions and len(versions) >= 2
    _, metrics = call(url + "/metrics")
    assert "transact_model_reloads_total 3.0" in metrics


def test_online_store_down_degrades_and_recovers(server: dict[str, Any]) -> None:
    url, redis = server["url"], server["redis"]
    body_in = {"user_id": 4242, "candidates": [1, 2, 3]}
    assert call(url + "/rank", body_in)[1]["degraded"] is False
    redis.stop()
    try:
        answers = [call(url + "/rank", body_in) for _ in range(10)]
        assert all(status == 200 for status, _ in answers), answers
        assert all(body["degraded"] and body["cold_start"] for _, body in answers)
        assert call(url + "/events", {"events": [{
            "event_id": 1, "user_id": 1, "item_id": 1, "action_type": "save",
            "timestamp_ms": int(time.time() * 1000), "request_id": 1}]})[0] == 503
        assert call(url + "/healthz")[0] == 200
    finally:
        redis.start()
    deadline = time.time() + 10
    body: dict[str, Any] = {}
    while time.time() < deadline:
        status, body = call(url + "/rank", body_in)
        if status == 200 and not body["degraded"]:
            break
        time.sleep(0.2)
    assert body.get("degraded") is False
    _, metrics = call(url + "/metrics")
    assert "transact_rank_degraded_total 1" in metrics


def test_every_ray_listener_is_on_loopback(server: dict[str, Any]) -> None:
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=True).stdout
    exposed = [line for line in out.splitlines() if ("ray::" in line or "raylet" in line
                                                     or "gcs_server" in line)
               and "127.0.0.1" not in line]
    assert exposed == []


def test_polled_uri_and_user_config_switch_every_replica(server: dict[str, Any],
                                                        tmp_path: Path) -> None:
    """A second app (2 replicas) re-resolving its URI every 0.3 s picks up new weights at the
    same path; a user_config redeploy switches both replicas; no request fails meanwhile."""
    from dataclasses import replace

    from ray import serve

    from serving.app import build_app, switch_model

    first, second = server["artifacts"]
    polled = tmp_path / "polled"
    shutil.copytree(first, polled)
    cfg = replace(server["cfg"], model_uri=str(polled), poll_interval_s=0.3, num_replicas=2,
                  app_name="polled", route_prefix="/polled")
    serve.run(build_app(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix)
    url = server["url"].rstrip("/") + "/polled"
    failures: list[Any] = []
    versions: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, body = call(url + "/rank", {"user_id": 9, "candidates": list(range(1, 60))})
            if status != 200:
                failures.append((status, body))
            else:
                versions.append(body["model_version"])

    clients = [threading.Thread(target=load) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        # the first answers (a loaded machine may take seconds to give one)
        deadline = time.time() + 60
        while time.time() < deadline and not versions and not failures:
            time.sleep(0.1)
        assert versions, failures[:1] or "no answer within 60 s"
        v0 = versions[-1]
        for name in ("model.json", "weights.safetensors"):
            shutil.copy(second / name, polled / name)
        deadline = time.time() + 15
        while time.time() < deadline and (not versions or versions[-1] == v0):
            time.sleep(0.1)
        v1 = versions[-1]
        assert v1 != v0
        switch_model(cfg, str(first))  # back to the first weights, through user_config
        # serve.run returns once every replica has reconfigured; a replica left on another
        # model (a poll that swapped in the old URI's weights after the switch) never settles
        deadline = time.time() + 30
        while time.time() < deadline and set(versions[-8:]) != {v0}:
            time.sleep(0.1)
        tail = versions[-8:]
    finally:
        stop.set()
        for client in clients:
            client.join()
        serve.delete("polled")
    assert failures == []
    assert set(tail) == {v0}  # every replica serves the switched-to model


def test_a_counters_model_reads_the_candidates_counters_online(server: dict[str, Any],
                                                               tmp_path: Path) -> None:
    """A model with engagement counters, served: events processed by the stream processor
    change the counters in the online store, and the next ``/rank`` scores the one candidate
    they touched differently while the others keep their scores."""
    import torch

    from features.processor import ProcessorConfig, open_processor
    from features.store import load_profile
    from transact.model.artifact import load_model, save_model
    from transact.model.config import ModelConfig, RankerConfig
    from transact.model.ranker import Pinnability

    url, cfg = server["url"], server["cfg"]
    auth = {"authorization": f"Bearer {TOKEN}"}
    examples_dir = load_model(server["artifacts"][0]).metadata["examples_dir"]
    torch.manual_seed(0)
    model_cfg = ModelConfig(ranker=RankerConfig(use_engagement_counters=True))
    save_model(Pinnability(model_cfg.ranker), model_cfg, tmp_path / "counters",
               metadata={"examples_dir": examples_dir})
    status, body = call(url + "/admin/model", {"model_uri": str(tmp_path / "counters")},
                        headers=auth)
    assert status == 200 and body["changed"] is True, body
    try:
        now = int(time.time() * 1000)
        request = {"user_id": 777, "candidates": [1, 2, 3], "request_time_ms": now + 60_000}

        def scores() -> dict[int, dict[str, float]]:
            status, body = call(url + "/rank", request)
            assert status == 200 and not body["degraded"], body
            return {item["item_id"]: item["scores"] for item in body["items"]}

        before = scores()
        events = [{"event_id": 50_000 + i, "user_id": 9_000 + i, "item_id": 2,
                   "action_type": "save" if i % 3 else "skip", "timestamp_ms": now - 1000 + i,
                   "surface": "homefeed", "request_id": 2} for i in range(30)]
        assert call(url + "/events", {"events": events})[0] == 202
        profile = load_profile("production", cfg.features_root, redis_port=cfg.redis_port)
        open_processor(profile, ProcessorConfig(block_ms=0)).run()
        after = scores()
        assert after[1] == before[1] and after[3] == before[3]
        assert max(abs(after[2][h] - before[2][h]) for h in before[2]) > 1e-4
    finally:
        call(url + "/admin/model", {"model_uri": str(server["served"])}, headers=auth)
