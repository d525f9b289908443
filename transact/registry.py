"""The model registry: MLflow tracking + model registry with ``champion`` / ``previous`` aliases.

Every retraining run is an MLflow run (parameters, data window, dataset fingerprint, git commit,
per-step losses, held-out metrics) whose model is logged as an MLflow ``pyfunc`` model with an
input signature, wrapping the project's self-describing artifact (``model.json`` +
``weights.safetensors``) and the item vectors it was trained with, and registered as a new
version of :attr:`RegistryConfig.model_name`. Promotion moves aliases; every alias move is also
recorded as a registered-model tag ``alias_event.<n>`` (MLflow keeps no alias history itself), so
:meth:`ModelRegistry.alias_history` can list who pointed where, when and why.

Stores (:class:`RegistryConfig`):

* ``embedded`` (default): tracking + registry in SQLite at ``<root>/mlflow.db``, artifacts in
  ``<root>/artifacts``. No server process.
* ``production``: tracking + registry in a PostgreSQL database (default ``mlflow`` on the
  machine's 127.0.0.1:5432, created if missing), artifacts in ``<root>/artifacts`` (point
  ``artifact_root`` at shared storage on a cluster).

Serving resolves ``models:/<name>@<alias>`` with :func:`resolve_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transact.errors import UserError
from transact.runtime import quiet_telemetry

RegistryProfile = Literal["embedded", "production"]
CHAMPION = "champion"
PREVIOUS = "previous"
_URI_RE = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class RegistryError(UserError):
    """The registry cannot do what was asked (unknown alias or version, bad URI, no store)."""


@dataclass
class RegistryConfig:
    """Where the registry lives. ``tracking_uri`` / ``artifact_root`` override the profile's
    defaults (``sqlite:///<root>/mlflow.db`` or ``postgres_url``; ``<root>/artifacts``)."""

    profile: RegistryProfile = "embedded"
    root: str = "artifacts/registry"
    tracking_uri: str | None = None
    artifact_root: str | None = None
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/mlflow"
    model_name: str = "transact-ranker"
    experiment: str = "transact-retraining"

    def validate(self) -> RegistryConfig:
        if self.profile not in ("embedded", "production"):
            raise RegistryError(f"registry.profile must be 'embedded' or 'production', got "
                                f"{self.profile!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.model_name):
            raise RegistryError(f"registry.model_name {self.model_name!r}: use letters, digits, "
                                f"'_', '.', '-'")
        return self

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if self.profile == "production":
            return self.postgres_url
        return f"sqlite:///{Path(self.root).resolve() / 'mlflow.db'}"

    def resolved_artifact_root(self) -> Path:
        return Path(self.artifact_root or Path(self.root) / "artifacts").resolve()


@dataclass
class AliasEvent:
    """One move of an alias: ``version`` None means the alias was removed."""

    alias: str
    version: str | None
    at_ms: int
    reason: str
    previous_version: str | None = None


@dataclass
class RegisteredCandidate:
    version: str
    run_id: str
    model_uri: str
    tags: dict[str, str] = field(default_factory=dict)


def ensure_postgres_database(url: str) -> None:
    """Create the database named in a ``postgresql+psycopg://`` URL if it does not exist."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if not database:
        raise RegistryError(f"{url!r} names no database")
    admin = parsed.set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')
    except psycopg.OperationalError as err:
        raise RegistryError(f"cannot reach PostgreSQL for the registry ({admin.host}:"
                            f"{admin.port}): {err}") from err


def git_commit(repo_dir: Path | str | None = None) -> str:
    """The checked-out commit (``+dirty`` when the tree has changes), or ``unknown``."""
    where = str(repo_dir or Path(__file__).resolve().parents[1])
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=10
                               ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def dataset_fingerprint(paths: Iterable[Path]) -> str:
    """SHA-256 over the bytes of every file under ``paths`` (sorted by relative path)."""
    digest = hashlib.sha256()
    for base in paths:
        base = Path(base)
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
        for path in files:
            digest.update(str(path.relative_to(base.parent)).encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        text = json.dumps(value, default=str) if not isinstance(value, str) else value
        out[prefix] = text[:6000]


class ModelRegistry:
    """MLflow-backed registry of ranker versions with alias history."""

    def __init__(self, cfg: RegistryConfig | None = None) -> None:
        quiet_telemetry()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # MLflow's INFO lines (table creation, "Created version") and its pickling advice
        # would drown the callers' own progress output; errors still show
        import logging

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        self.cfg = (cfg or RegistryConfig()).validate()
        from mlflow.tracking import MlflowClient

        uri = self.cfg.resolved_tracking_uri()
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        elif uri.startswith("postgresql"):
            ensure_postgres_database(uri)
        self.tracking_uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.artifact_root = self.cfg.resolved_artifact_root()
        self.artifact_root.mkdir(parents=True, exist_ok=True)

    # --- runs and versions -----------------------------------------------------------------
    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.cfg.experiment)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(self.cfg.experiment,
                                             artifact_location=self.artifact_root.as_uri())

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.cfg.model_name)
        except MlflowException:
            self.client.create_registered_model(
                self.cfg.model_name, description="TransAct multi-task ranker (Pinnability)")

    def log_candidate(
        self,
        artifact_dir: Path,
        item_vectors_dir: Path,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        history: list[dict[str, float]],
        tags: Mapping[str, str],
        input_example: Any,
        run_name: str | None = None,
    ) -> RegisteredCandidate:
        """Log one training run and register its model as a new version.

        ``artifact_dir``: the project's model artifact; ``item_vectors_dir``: the item vectors
        it needs (see :func:`transact.model.pyfunc.save_item_vectors`); ``history``: per-step
        dicts with ``step`` and loss/metric keys; ``input_example``: a small DataFrame of
        example rows (its schema becomes the model's input signature)."""
        import mlflow
        from mlflow.models import infer_signature

        from transact.model.pyfunc import TransActPyfunc, predict_frame

        self._ensure_model()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        flat: dict[str, str] = {}
        _flatten("", dict(params), flat)
        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name) as run:
            mlflow.log_params(flat)
            mlflow.set_tags(dict(tags))
            for row in history:
                step = int(row.get("step", 0))
                mlflow.log_metrics({k: float(v) for k, v in row.items()
                                    if k != "step" and v == v}, step=step)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v})
            output_example = predict_frame(artifact_dir, item_vectors_dir, input_example)
            signature = infer_signature(input_example, output_example)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=TransActPyfunc(),
                artifacts={"transact_model": str(artifact_dir),
                           "item_vectors": str(item_vectors_dir)},
                signature=signature, input_example=input_example,
                pip_requirements=_requirements(),
                registered_model_name=self.cfg.model_name)
            run_id = run.info.run_id
        version = str(info.registered_model_version)
        for key, value in tags.items():
            self.client.set_model_version_tag(self.cfg.model_name, version, key, str(value))
        self.client.set_model_version_tag(self.cfg.model_name, version, "run_id", run_id)
        return RegisteredCandidate(version=version, run_id=run_id,
                                   model_uri=f"models:/{self.cfg.model_name}/{version}",
                                   tags=dict(tags))

    def version_tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.cfg.model_name, str(version)).tags)

    def set_version_tags(self, version: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.cfg.model_name, str(version), key,
                                              value if isinstance(value, str)
                                              else json.dumps(value, default=str))

    def versions(self) -> list[str]:
        found = self.client.search_model_versions(f"name='{self.cfg.model_name}'")
        return sorted((str(v.version) for v in found), key=int)

    def local_files(self, version: str) -> Path:
        """A local directory holding the version's MLflow model (``MLmodel``, ``artifacts/``),
        downloaded once into ``<root>/cache/v<version>``."""
        import mlflow

        target = Path(self.cfg.root).resolve() / "cache" / f"v{version}"
        if (target / "MLmodel").exists():
            return target
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        path = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{self.cfg.model_name}/{version}", dst_path=str(partial)))
        if path != partial:  # some stores download into a sub-directory
            partial = path
        if target.exists():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.rename(target)
        return target

    def _pyfunc_artifact(self, version: str, key: str) -> Path:
        import yaml

        root = self.local_files(version)
        doc = yaml.safe_load((root / "MLmodel").read_text())
        try:
            rel = doc["flavors"]["python_function"]["artifacts"][key]["path"]
        except (KeyError, TypeError) as err:
            raise RegistryError(f"version {version} of {self.cfg.model_name} is not a TransAct "
                                f"model (its MLmodel lists no {key!r} artifact)") from err
        return root / rel

    def artifact_dir(self, version: str) -> Path:
        """The project's model artifact (``model.json`` + weights) of ``version``."""
        return self._pyfunc_artifact(str(version), "transact_model")

    def item_vectors_dir(self, version: str) -> Path:
        """The item vectors ``version`` was trained with (``items.npy``)."""
        return self._pyfunc_artifact(str(version), "item_vectors")

    # --- aliases ---------------------------------------------------------------------------
    def get_alias(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.cfg.model_name,
                                                              alias).version)
        except MlflowException:
            return None

    def _record(self, event: AliasEvent) -> None:
        model = self.client.get_registered_model(self.cfg.model_name)
        n = sum(1 for key in model.tags if key.startswith("alias_event."))
        self.client.set_registered_model_tag(self.cfg.model_name, f"alias_event.{n:06d}",
                                             json.dumps(event.__dict__))

    def set_alias(self, alias: str, version: str | None, reason: str) -> AliasEvent:
        """Point ``alias`` at ``version`` (None: remove it) and record the move."""
        self._ensure_model()
        before = self.get_alias(alias)
        if version is None:
            if before is not None:
                self.client.delete_registered_model_alias(self.cfg.model_name, alias)
        else:
            if str(version) not in self.versions():
                raise RegistryError(f"{self.cfg.model_name} has no version {version} "
                                    f"(versions: {self.versions()})")
            self.client.set_registered_model_alias(self.cfg.model_name, alias, str(version))
        event = AliasEvent(alias=alias, version=None if version is None else str(version),
                           at_ms=int(time.time() * 1000), reason=reason,
                           previous_version=before)
        self._record(event)
        return event

    def promote(self, version: str, reason: str) -> list[AliasEvent]:
        """``previous`` <- the current champion (if any), ``champion`` <- ``version``."""
        current = self.get_alias(CHAMPION)
        if current == str(version):
            return []
        events = []
        if current is not None:
            events.append(self.set_alias(PREVIOUS, current, f"demoted: {reason}"))
        events.append(self.set_alias(CHAMPION, version, reason))
        return events

    def rollback(self, reason: str = "rollback") -> list[AliasEvent]:
        """``champion`` <- ``previous``; ``previous`` is removed (the rolled-back version
        stays registered and in the history)."""
        previous = self.get_alias(PREVIOUS)
        if previous is None:
            raise RegistryError("nothing to roll back to: the registry has no 'previous' "
                                "version")
        return [self.set_alias(CHAMPION, previous, reason),
                self.set_alias(PREVIOUS, None, reason)]

    def alias_history(self) -> list[AliasEvent]:
        model = self.client.get_registered_model(self.cfg.model_name)
        events = [AliasEvent(**json.loads(value)) for key, value in sorted(model.tags.items())
                  if key.startswith("alias_event.")]
        return events


def _requirements() -> list[str]:
    """The loading side's needs, pinned to this environment (skips MLflow's slow
    inference, which imports the model in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "mlflow", "numpy", "pandas", "safetensors", "pyarrow"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` or ``models:/name/3`` -> ``(name, alias, version)``."""
    match = _URI_RE.match(uri)
    if not match:
        raise RegistryError(f"{uri!r} is not a model URI: use models:/<name>@<alias> or "
                            f"models:/<name>/<version>")
    return match["name"], match["alias"], match["version"]


def resolve_model(uri: str, cfg: RegistryConfig | None = None) -> tuple[str, Path]:
    """``models:/<name>@<alias>`` (or ``/<version>``) -> ``(version, artifact_dir)``.

    The registry location comes from ``cfg`` or, when None, from the environment
    (``TRANSACT_REGISTRY_ROOT``, ``MLFLOW_TRACKING_URI``) and the defaults."""
    name, alias, version = parse_model_uri(uri)
    if cfg is None:
        cfg = RegistryConfig(root=os.environ.get("TRANSACT_REGISTRY_ROOT", RegistryConfig.root),
                             tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None)
    cfg = RegistryConfig(**{**cfg.__dict__, "model_name": name})
    registry = ModelRegistry(cfg)
    if alias is not None:
        version = registry.get_alias(alias)
        if version is None:
            raise RegistryError(f"{name} has no version with alias {alias!r}")
    assert version is not None
    return version, registry.artifact_dir(version)
