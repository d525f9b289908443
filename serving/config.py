"""The serving configuration: one dataclass, defaults here only (``transact serve --config FILE``
and flags override them through :func:`transact.config.resolve_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.engine import EngineConfig
from transact.errors import UserError

#: documented limit of candidates per ``POST /rank``
MAX_CANDIDATES = 2_000


@dataclass
class ServingConfig:
    """Everything ``transact serve`` needs.

    * ``model_uri``: a model artifact directory (``transact train fit --out``) or
      ``models:/<name>@<alias>`` (resolved by :func:`transact.registry.resolve_model`); hot
      reload re-resolves it (``POST /admin/reload`` or every ``poll_interval_s``).
    * ``item_vectors_dir``: the examples directory whose item vectors the model was trained
      with (``items.parquet``, ``pinnerformer_items.parquet``); empty = the artifact's
      ``metadata.examples_dir``.
    * ``profile`` / ``features_root``: the online store (``embedded``: Feast over SQLite;
      ``production``: the direct Redis reader).
    * ``utility``: weights per head of the ranking utility ``sum_h w_h p_h`` (hide negative).
    * ``admin_token``: required (``Authorization: Bearer <token>``) by ``/admin/*``; empty
      disables the admin routes.
    """

    model_uri: str = "artifacts/demo/models/transact"
    item_vectors_dir: str = ""
    profile: str = "embedded"
    features_root: str = "data/features"
    redis_port: int = 6379
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"
    app_name: str = "transact"
    num_replicas: int = 1
    #: intra-op threads of a replica's engine. 1 by default: on a shared 2-core machine two
    #: OpenMP threads collapse when another process takes a core (300-4,000 ms instead of
    #: 150 ms for 500 candidates, docs/serving.md); with OMP_WAIT_POLICY=PASSIVE exported
    #: before ``transact serve`` they do not, and 2 pays off on a quiet machine
    replica_threads: int = 1
    max_candidates: int = MAX_CANDIDATES
    max_body_bytes: int = 1_000_000
    max_events: int = 1_000
    #: a request time may be at most this far in the future (clock skew)
    max_future_ms: int = 10 * 60_000
    utility: dict[str, float] = field(
        default_factory=lambda: {"click": 1.0, "save": 2.0, "hide": -4.0})
    batch_max_size: int = 8
    #: directory of the durable serving log (every /rank answer: user, request id, shown
    #: candidates with positions, per-head scores, model version, time; read by monitoring/);
    #: "" = no log. Each handled batch is written as one fsync'd Parquet file.
    serving_log_dir: str = ""
    batch_wait_timeout_s: float = 0.005
    #: seconds between checks of ``model_uri`` (0 = reload only on ``POST /admin/reload``)
    poll_interval_s: float = 0.0
    admin_token: str = ""
    #: the online store: per-read timeout, and how long to answer from defaults after a
    #: failed read before trying the store again
    store_timeout_s: float = 0.2
    store_retry_after_s: float = 1.0
    engine: EngineConfig = field(default_factory=EngineConfig)

    def validate(self) -> ServingConfig:
        if self.profile not in ("embedded", "production"):
            raise UserError(f"profile must be embedded or production, got {self.profile!r}")
        if not 1 <= self.max_candidates <= 100_000:
            raise UserError("max_candidates must be in [1, 100000]")
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.admin_token:
            raise UserError(f"binding {self.host} (not loopback) needs an admin_token")
        if not 0 <= self.port < 65536:
            raise UserError(f"port {self.port} is out of range")
        if self.batch_max_size < 1 or self.batch_wait_timeout_s < 0:
            raise UserError("batch_max_size must be >= 1 and batch_wait_timeout_s >= 0")
        if self.num_replicas < 1:
            raise UserError("num_replicas must be >= 1")
        if not self.model_uri:
            raise UserError("model_uri is empty: give an artifact directory or "
                            "models:/<name>@<alias>")
        return self
