"""The Ray Serve application: ``POST /rank``, ``POST /events``, health, metrics, admin.

A thin wrapper of :mod:`serving.service`: one deployment (:class:`RankingDeployment`) with a
FastAPI ingress. Concurrent ``/rank`` calls are grouped by ``@serve.batch`` and scored in one
worker-thread pass (the event loop keeps answering health checks meanwhile).

Routes:

* ``POST /rank``, ``POST /events`` (see :mod:`serving.service` for bodies);
* ``GET /healthz`` (process alive), ``GET /readyz`` (a model is loaded: 200, else 503);
* ``GET /metrics`` (Prometheus text: latency histogram, batch sizes, errors by status, model
  version, degraded answers, reloads);
* ``POST /admin/reload`` (re-resolve ``model_uri``; load and switch when the version changed),
  ``POST /admin/model`` ``{"model_uri": ...}`` (serve another URI, e.g. another alias);
  both need ``Authorization: Bearer <admin_token>`` and are off when no token is configured.

Hot reload never drops a request: the new model is loaded beside the old one, then one
reference is swapped; a batch in flight keeps the model it started with. Ray Serve's
``user_config`` (``reconfigure``) does the same for every replica (``transact serve`` with a
new ``model_uri`` on a running app), and ``poll_interval_s`` re-resolves the URI periodically
(the registry's ``champion`` alias moving is picked up without any call).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from serving.config import ServingConfig
from serving.model_source import ServedModel, load_served_model, resolve_model_uri
from serving.service import (
    BadRequest,
    RankRequest,
    UserFeatures,
    UserFeatureSource,
    check_known,
    parse_events,
    parse_json,
    parse_rank_request,
    rank_response,
    score_requests,
    utility_weights,
    warm_up,
)
from transact.config import config_from_dict, config_to_dict

logger = logging.getLogger(__name__)

log = logging.getLogger("transact.serving")


def _loopback_replica_grpc() -> None:
    """Ray Serve 2.60 binds each replica's inter-deployment gRPC server to ``[::]:0`` (every
    interface) with no setting to change it; bind it to 127.0.0.1 like every other listener.
    Runs at import, i.e. in every replica before it starts that server (checked with
    ``ss -ltnp`` in ``tests/serving/test_app.py``)."""
    try:
        from ray.serve._private import replica as replica_module
    except ImportError:  # a Ray without it: nothing to patch
        return
    original = getattr(replica_module, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "loopback", False):
        return

    def loopback(server: Any, address: str) -> Any:
        return original(server, address.replace("[::]", "127.0.0.1", 1))

    loopback.loopback = True  # type: ignore[attr-defined]
    replica_module.add_port_to_grpc_server = loopback


_loopback_replica_grpc()

api = FastAPI(title="TransAct ranking", docs_url=None, redoc_url=None, openapi_url=None)


class Metrics:
    """Per-replica Prometheus metrics (a private registry: no global state)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "transact_rank_latency_seconds", "POST /rank latency", registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.model_latency = Histogram(
            "transact_model_latency_seconds", "engine time of one scoring batch",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.batch_size = Histogram("transact_rank_batch_size", "requests per scoring batch",
                                    registry=self.registry, buckets=(1, 2, 3, 4, 6, 8, 12, 16))
        self.candidates = Histogram("transact_rank_candidates", "candidates per request",
                                    registry=self.registry,
                                    buckets=(10, 50, 100, 250, 500, 1000, 2000))
        self.requests = Counter("transact_requests_total", "requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.degraded = Counter("transact_rank_degraded_total",
                                "answers given without the online store", registry=self.registry)
        self.reloads = Counter("transact_model_reloads_total", "model switches",
                               registry=self.registry)
        self.model_version = Gauge("transact_model_info", "the served model version (label)",
                                   ["version"], registry=self.registry)

    def set_version(self, version: str) -> None:
        self.model_version.clear()
        self.model_version.labels(version=version).set(1)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class RankingDeployment:
    """One serving replica: the loaded model, the online reader, the event stream."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = config_from_dict(ServingConfig, config).validate()
        self.engine_cfg = replace(self.cfg.engine, threads=self.cfg.replica_threads)
        self.metrics = Metrics()
        self.users = UserFeatureSource(self.cfg)
        self.model: ServedModel | None = None
        self.model_uri = self.cfg.model_uri
        self.reload_lock = asyncio.Lock()
        self.stream: Any = None
        self.load_error = ""
        self.serving_log: Any = None
        if self.cfg.serving_log_dir:
            from monitoring.logs import ParquetServingLog, ServingLogBuffer

            self.serving_log = ServingLogBuffer(ParquetServingLog(Path(
                self.cfg.serving_log_dir)), flush_rows=1 << 30)
        # request ids: a random 23-bit replica prefix and a counter (unique across replicas)
        self._request_prefix = secrets.randbits(23) << 40
        self._request_counter = itertools.count(1)
        self._score_batch.set_max_batch_size(self.cfg.batch_max_size)
        self._score_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)
        try:
            self._swap(load_served_model(self.model_uri, self.cfg.item_vectors_dir,
                                         self.engine_cfg))
        except Exception as err:  # noqa: BLE001 - serve /readyz 503 and say why
            self.load_error = f"{type(err).__name__}: {err}"
            log.error("no model loaded: %s", self.load_error)
        self.users.read(0)  # open the online reader now, not on the first request
        if self.model is not None:
            warm_up(self.model)
        self.poller = (asyncio.get_event_loop().create_task(self._poll())
                       if self.cfg.poll_interval_s > 0 else None)
        from features.online import freeze_startup_heap

        freeze_startup_heap()

    # ------------------------------------------------------------------------- model swaps
    def _swap(self, model: ServedModel) -> None:
        self.model = model
        self.load_error = ""
        self.metrics.set_version(model.version)
        log.info("serving model %s from %s", model.version, model.artifact_dir)

    async def reload(self, uri: str | None = None, force: bool = False) -> dict[str, Any]:
        """Re-resolve ``uri`` (default: the current one); load and switch if it changed."""
        async with self.reload_lock:
            uri = uri or self.model_uri
            resolved = await asyncio.to_thread(resolve_model_uri, uri)
            current = self.model.version if self.model else None
            if resolved[0] == current and uri == self.model_uri and not force:
                return {"model_version": current, "changed": False}
            model = await asyncio.to_thread(load_served_model, uri, self.cfg.item_vectors_dir,
                                            self.engine_cfg, resolved)
            await asyncio.to_thread(warm_up, model)
            self.model_uri = uri
            self._swap(model)
            self.metrics.reloads.inc()
            return {"model_version": model.version, "previous": current, "changed": True}

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray Serve ``user_config``: ``{"model_uri": ...}`` switches every replica.

        It takes the same lock as ``reload``: a poll that was loading the old URI's weights
        when the new URI arrived finishes first and cannot swap them in afterwards."""
        uri = user_config.get("model_uri") if user_config else None
        if not uri or (uri == self.model_uri and self.model is not None):
            return
        try:
            await self.reload(uri)
        except Exception as err:  # noqa: BLE001 - keep serving what is loaded
            self.load_error = f"{type(err).__name__}: {err}"
            log.error("reconfigure to %s failed: %s", uri, self.load_error)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.poll_interval_s)
            try:
                await self.reload()
            except Exception as err:  # noqa: BLE001 - keep serving the current model
                log.warning("model poll failed: %s", err)

    # ------------------------------------------------------------------------------ scoring
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _score_batch(self, reqs: list[RankRequest]) -> list[dict[str, Any] | BadRequest]:
        model = self.model  # one model for the whole batch, even if a reload lands meanwhile
        self.metrics.batch_size.observe(len(reqs))
        return await asyncio.to_thread(self._score_sync, model, reqs)

    def _score_sync(self, model: ServedModel | None, reqs: list[RankRequest]
                    ) -> list[dict[str, Any] | BadRequest]:
        if model is None:
            return [BadRequest(503, f"no model loaded: {self.load_error}")] * len(reqs)
        out: list[dict[str, Any] | BadRequest] = [BadRequest(500, "not scored")] * len(reqs)
        good: list[int] = []
        users: list[UserFeatures] = []
        reasons: list[list[str]] = []
        started = time.perf_counter()
        for i, req in enumerate(reqs):
            try:
                check_known(model, req)
            except BadRequest as err:
                out[i] = err
                continue
            user, reason = self.users.read(
                req.user_id, req.candidates if model.reads_counters else None)
            good.append(i)
            users.append(user)
            reasons.append([reason] if reason else [])
        if good:
            weights = utility_weights(model.heads, self.cfg.utility)
            read_s = time.perf_counter() - started
            started = time.perf_counter()
            scores = score_requests(model, [reqs[i] for i in good], users)
            timing = {"features_ms": round(read_s * 1000, 2),
                      "model_ms": round((time.perf_counter() - started) * 1000, 2),
                      "batch_size": len(good)}
            self.metrics.model_latency.observe(timing["model_ms"] / 1000)
            for k, i in enumerate(good):
                out[i] = rank_response(model, reqs[i], users[k], scores[k], weights, reasons[k])
                out[i]["timing"] = timing  # type: ignore[index]
                out[i]["request_id"] = self._request_prefix | next(  # type: ignore[index]
                    self._request_counter)
            if self.serving_log is not None:
                self._log_answers([out[i] for i in good])
        return out

    def _log_answers(self, answers: list[Any]) -> None:
        """Append the shown candidates of ``answers`` to the durable serving log (one file
        per batch); a failing log write never fails the ranking answers."""
        from monitoring.logs import rows_from_rank_answer

        try:
            for answer in answers:
                self.serving_log.add(rows_from_rank_answer(answer, answer["request_id"]))
            self.serving_log.flush()
        except Exception:  # noqa: BLE001 - logged and counted, the answers still go out
            logger.exception("serving log write failed")
            self.serving_log.pending, self.serving_log.pending_rows = [], 0

    # ------------------------------------------------------------------------------ routes
    async def _body(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.cfg.max_body_bytes:
            raise BadRequest(413, f"body is {declared} bytes; the limit is "
                                  f"{self.cfg.max_body_bytes}")
        limit = self.cfg.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # stop reading as soon as the limit is passed
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return parse_json(b"".join(chunks), limit)

    @api.post("/rank")
    async def rank(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            req = parse_rank_request(await self._body(request), self.cfg)
            self.metrics.candidates.observe(len(req.candidates))
            result = await self._score_batch(req)
            if isinstance(result, BadRequest):
                raise result
        except BadRequest as err:
            self.metrics.requests.labels("rank", str(err.status)).inc()
            return _error(err.status, err.message)
        except Exception as err:  # noqa: BLE001 - counted, logged, answered
            log.exception("rank failed")
            self.metrics.requests.labels("rank", "500").inc()
            return _error(500, f"internal error: {type(err).__name__}")
        if result["degraded"]:
            self.metrics.degraded.inc()
        self.metrics.requests.labels("rank", "200").inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(result)

    @api.post("/events")
    async def events(self, request: Request) -> JSONResponse:
        try:
            table = parse_events(await self._body(request), self.cfg)
        except BadRequest as err:
            self.metrics.requests.labels("events", str(err.status)).inc()
            return _error(err.status, err.message)
        try:
            appended = await asyncio.to_thread(self._publish, table)
        except Exception as err:  # noqa: BLE001 - the stream is down: retryable
            self.stream = None
            self.metrics.requests.labels("events", "503").inc()
            return _error(503, f"event stream unavailable, retry later: "
                               f"{type(err).__name__}")
        self.metrics.requests.labels("events", "202").inc()
        return JSONResponse({"appended": appended}, status_code=202)

    def _publish(self, table: Any) -> int:
        if self.stream is None:
            from features.processor import open_stream
            from features.store import load_profile

            profile = load_profile(self.cfg.profile, self.cfg.features_root,
                                   redis_port=self.cfg.redis_port)
            self.stream = open_stream(profile)
        return int(self.stream.publish(table))

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        if self.model is None:
            return JSONResponse({"ready": False, "error": self.load_error}, status_code=503)
        return JSONResponse({"ready": True, "model_version": self.model.version,
                             "model_uri": self.model_uri,
                             "online_store_failures": self.users.failures})

    @api.get("/metrics")
    async def metrics_route(self) -> PlainTextResponse:
        return PlainTextResponse(self.metrics.render().decode(),
                                 media_type="text/plain; version=0.0.4")

    def _authorised(self, request: Request) -> BadRequest | None:
        if not self.cfg.admin_token:
            return BadRequest(403, "admin routes are disabled: set admin_token")
        if request.headers.get("authorization") != f"Bearer {self.cfg.admin_token}":
            return BadRequest(401, "admin routes need Authorization: Bearer <admin_token>")
        return None

    @api.post("/admin/reload")
    async def admin_reload(self, request: Request) -> JSONResponse:
        denied = self._authorised(request)
        if denied:
            return _error(denied.status, denied.message)
        try:
            return JSONResponse(await self.reload())
        except Exception as err:  # noqa: BLE001 - keep the current model
            return _error(409, f"reload failed, still serving the previous model: {err}")

    @api.post("/admin/model")
    async def admin_model(self, request: Request) -> JSONResponse:
        denied = self._authorised(request)
        if denied:
            return _error(denied.status, denied.message)
        try:
            body = await self._body(request)
            if not isinstance(body, dict) or not isinstance(body.get("model_uri"), str):
                raise BadRequest(422, 'send {"model_uri": "<dir or models:/name@alias>"}')
            return JSONResponse(await self.reload(body["model_uri"]))
        except BadRequest as err:
            return _error(err.status, err.message)
        except Exception as err:  # noqa: BLE001 - keep the current model
            return _error(409, f"switch failed, still serving the previous model: {err}")


def build_app(cfg: ServingConfig, model_uri: str | None = None) -> Any:
    """The Serve application for ``cfg`` (``serve.run(build_app(cfg))``); ``model_uri``
    overrides only the ``user_config``, so redeploying with another one reconfigures the
    running replicas in place (:func:`switch_model`)."""
    cfg.validate()
    return RankingDeployment.options(
        num_replicas=cfg.num_replicas,
        user_config={"model_uri": model_uri or cfg.model_uri},
        max_ongoing_requests=max(16, 4 * cfg.batch_max_size),
    ).bind(config_to_dict(cfg))


def start_ray(num_cpus: int | None = None) -> None:
    """Start (or join) a local Ray with every listener on 127.0.0.1 and no telemetry."""
    from transact.runtime import quiet_telemetry

    quiet_telemetry()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 configure_logging=True, logging_level=logging.WARNING, log_to_driver=False)


#: how long to wait for Ray Serve's HTTP proxy beyond ``serve.start``'s own 60 s (a fixed
#: constant of Ray's); on 2 cores busy with training the proxy has taken longer than that
PROXY_START_PATIENCE_S = 300.0


def start_serve(host: str, port: int, patience_s: float = PROXY_START_PATIENCE_S) -> None:
    """``serve.start`` on ``host:port``; when Ray gives up on its HTTP proxy after 60 s (a
    loaded machine), keep the controller it started and wait up to ``patience_s`` more for the
    proxy to listen, then raise :class:`TimeoutError` naming the address."""
    import socket

    options = {"http_options": {"host": host, "port": port},
               "logging_config": {"log_level": "WARNING"}}
    try:
        serve.start(**options)
        return
    except TimeoutError as err:
        if "HTTP proxies" not in str(err):
            raise
        logger.warning("Ray Serve's HTTP proxy is slow to start (a busy machine?); waiting up "
                       "to %.0f s more for %s:%d", patience_s, host, port)
    serve.start(**options)  # the controller is running: this connects to it
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray Serve's HTTP proxy did not listen on {host}:{port} "
                                   f"within {60 + patience_s:.0f} s") from None
            time.sleep(1.0)


def run_server(cfg: ServingConfig, blocking: bool = False) -> str:
    """Start Ray + Serve on ``cfg.host:cfg.port`` and deploy the app; returns its base URL."""
    start_ray()
    start_serve(cfg.host, cfg.port)
    serve.run(build_app(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix,
              blocking=blocking)
    prefix = cfg.route_prefix.rstrip("/")
    return f"http://{cfg.host}:{cfg.port}{prefix}"


def switch_model(cfg: ServingConfig, model_uri: str) -> None:
    """Serve ``model_uri`` on every replica of the running app (Ray Serve ``user_config``:
    each replica's ``reconfigure`` loads it beside the old model, then swaps)."""
    serve.run(build_app(cfg, model_uri), name=cfg.app_name, route_prefix=cfg.route_prefix)


def stop_server() -> None:
    import ray

    serve.shutdown()
    ray.shutdown()
