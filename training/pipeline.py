"""The scheduled pipelines' steps as library functions: what the Airflow tasks call.

``dags/retrain_twice_weekly.py`` (Monday and Thursday)::

    validate_events -> build_training_set -> train_candidate -> gate
        -> [passed?] -> promote -> notify_serving

``dags/daily_embeddings.py`` (daily)::

    pinnerformer_job -> materialize_embeddings

Every step takes a :class:`PipelineConfig` (one source of defaults, readable from a JSON/YAML
file given to the DAG as the ``config_path`` param, overridable by the ``overrides`` param with
dotted paths) plus the run's identity, returns a small JSON-able dict (what Airflow keeps as the
task's XCom), and is idempotent:

* ``build_training_set`` writes ``<work_dir>/examples/<run_key>`` through a temporary directory
  and a rename (a retried task replaces it whole);
* ``train_candidate`` tags the registered version with ``pipeline.run_key``; a retry finds that
  version and returns it instead of registering a second one;
* ``gate`` re-evaluates and rewrites the same tags; ``promote`` is a no-op when the version is
  already champion; a rejected candidate never reaches ``promote``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.retrain import RetrainConfig
from transact.config import load_config_file, resolve_config, with_overrides
from transact.errors import UserError


@dataclass
class PipelineConfig:
    """Settings of both DAGs."""

    #: the event dataset (``events/`` + ``items.parquet`` + ``meta.json``)
    dataset_dir: str = "artifacts/demo/synthetic"
    work_dir: str = "artifacts/pipeline"
    #: days of the newest events held out for the gate / validation
    test_days: int = 2
    val_days: int = 1
    #: the daily PinnerFormer job's output (its user embeddings feed the examples)
    embeddings_dir: str = "artifacts/pipeline/pinnerformer"
    #: where the training rows start: ``first_event`` (every impression; a zero batch
    #: embedding before the first embedding day: measured better, docs/model.md, Findings
    #: session 8) or ``first_embedding_day`` (only where the daily embedding exists)
    examples_start: str = "first_event"
    #: PinnerFormer job settings (``training.pinnerformer.PinnerFormerConfig`` fields)
    pinnerformer: dict[str, Any] = field(default_factory=dict)
    #: feature store profile (``embedded`` / ``production``) and root
    feature_profile: str = "embedded"
    feature_root: str = "artifacts/pipeline/features"
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    #: the serving endpoint told to reload after a promotion ("" = none)
    serving_url: str = ""
    serving_admin_token: str = ""

    def validate(self) -> PipelineConfig:
        if self.test_days < 1 or self.val_days < 1:
            raise UserError("test_days and val_days must be >= 1")
        if self.examples_start not in ("first_event", "first_embedding_day"):
            raise UserError("examples_start must be first_event or first_embedding_day, got "
                            f"{self.examples_start!r}")
        self.retrain.validate()
        return self


def load_pipeline_config(config_path: str | None = None,
                         overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Defaults <- ``config_path`` (JSON/YAML) <- ``overrides`` (dotted paths)."""
    cfg = resolve_config(PipelineConfig, Path(config_path) if config_path else None, {})
    return with_overrides(cfg, overrides or {}).validate()


def _examples_dir(cfg: PipelineConfig, run_key: str) -> Path:
    return Path(cfg.work_dir) / "examples" / run_key


def _retrain_config(cfg: PipelineConfig, run_key: str) -> RetrainConfig:
    return dataclasses.replace(cfg.retrain, examples_dir=str(_examples_dir(cfg, run_key)),
                               work_dir=str(Path(cfg.work_dir) / "retrain"))


# --- retrain_twice_weekly ------------------------------------------------------------------
def validate_events_step(cfg: PipelineConfig) -> dict[str, Any]:
    """Great Expectations events suite on the dataset; raises (the run stops) on failure."""
    from transact.data.dataset import read_events
    from transact.validation import validate_events

    report = validate_events(read_events(Path(cfg.dataset_dir)))
    report.raise_if_failed()
    return {"events_valid": True, "checks": len(report.checks), "rows": report.n_rows}


def build_training_set_step(cfg: PipelineConfig, run_key: str) -> dict[str, Any]:
    """Point-in-time examples of the dataset (with the daily embeddings), validated."""
    from training.pinnerformer import parse_day
    from transact.data.examples import ExampleConfig, build_examples, read_examples
    from transact.validation import validate_examples

    out = _examples_dir(cfg, run_key)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    user_emb = Path(cfg.embeddings_dir) / "user_embeddings"
    if not user_emb.is_dir():
        raise UserError(f"{user_emb} does not exist: run the daily_embeddings DAG (or "
                        f"`transact train pinnerformer`) first")
    days = sorted(p.name.removeprefix("date=") for p in user_emb.glob("date=*"))
    if not days:
        raise UserError(f"{user_emb} holds no dated embeddings (date=YYYY-MM-DD/)")
    first_day = parse_day(days[0]) if cfg.examples_start == "first_embedding_day" else None
    stats = build_examples(Path(cfg.dataset_dir), tmp, ExampleConfig(
        user_emb_path=user_emb, start_ms=first_day, test_days=cfg.test_days,
        val_days=cfg.val_days))
    for split in ("train", "val", "test"):
        validate_examples(read_examples(tmp, split)).raise_if_failed()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return {"examples_dir": str(out), "examples": stats.examples}


def _version_of_run(cfg: RetrainConfig, run_key: str) -> str | None:
    from transact.registry import ModelRegistry

    registry = ModelRegistry(cfg.registry)
    for version in registry.versions():
        if registry.version_tags(version).get("pipeline.run_key") == run_key:
            return version
    return None


def train_candidate_step(cfg: PipelineConfig, run_key: str) -> dict[str, Any]:
    """Train (plain or Ray, by ``retrain.backend``) and register; idempotent per run."""
    from training.retrain import train_candidate
    from transact.registry import ModelRegistry

    retrain = _retrain_config(cfg, run_key)
    existing = _version_of_run(retrain, run_key)
    if existing is not None:
        return {"version": existing, "reused": True}
    candidate = train_candidate(retrain)
    ModelRegistry(retrain.registry).set_version_tags(candidate.version,
                                                     {"pipeline.run_key": run_key})
    return {"version": candidate.version, "reused": False}


def gate_step(cfg: PipelineConfig, run_key: str, version: str) -> dict[str, Any]:
    """Candidate vs champion on the held-out window; the decision as a dict."""
    from training.retrain import gate_candidate

    outcome = gate_candidate(_retrain_config(cfg, run_key), version)
    return {"version": version, "promote": outcome.decision.promote,
            "champion_before": outcome.champion_before,
            "reason": outcome.decision.reason,
            "heads": [h.to_dict() for h in outcome.decision.heads]}


def promote_step(cfg: PipelineConfig, decision: dict[str, Any]) -> dict[str, Any]:
    """Move the aliases for a passed candidate (never called for a rejected one)."""
    from transact.registry import CHAMPION, ModelRegistry

    if not decision["promote"]:
        raise UserError(f"version {decision['version']} did not pass the gate")
    registry = ModelRegistry(cfg.retrain.registry)
    current = registry.get_alias(CHAMPION)
    if current == decision["version"]:
        return {"champion": current, "changed": False}
    if current != decision["champion_before"]:
        raise UserError(f"the champion moved from {decision['champion_before']} to {current} "
                        f"since the gate ran; rerun the gate")
    registry.promote(decision["version"], f"gate: {decision['reason']}")
    registry.set_version_tags(decision["version"], {"stage": "champion"})
    return {"champion": decision["version"], "previous": current, "changed": True}


def notify_serving_step(cfg: PipelineConfig, promoted: dict[str, Any]) -> dict[str, Any]:
    """Ask the serving endpoint to re-resolve its model alias (``POST /admin/reload``)."""
    if not cfg.serving_url:
        return {"notified": False, "why": "no serving_url configured (replicas also poll "
                                          "the alias)"}
    request = urllib.request.Request(
        cfg.serving_url.rstrip("/") + "/admin/reload", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {cfg.serving_admin_token}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (loopback)
            body = json.loads(response.read() or b"{}")
    except (urllib.error.URLError, TimeoutError) as err:
        raise RuntimeError(f"serving at {cfg.serving_url} did not accept the reload: "
                           f"{err}") from err
    return {"notified": True, "champion": promoted.get("champion"), "response": body}


# --- daily_embeddings ----------------------------------------------------------------------
def pinnerformer_step(cfg: PipelineConfig, day: str | None = None) -> dict[str, Any]:
    """The daily PinnerFormer job (all days through ``day``; reuses its checkpoint)."""
    from training.pinnerformer import PinnerFormerConfig, run_daily_embeddings

    pf_cfg = with_overrides(PinnerFormerConfig(), cfg.pinnerformer)
    out = Path(cfg.embeddings_dir)
    checkpoint = out / "model.pt"
    started = time.perf_counter()
    stats = run_daily_embeddings(Path(cfg.dataset_dir), out, pf_cfg,
                                 checkpoint=checkpoint if checkpoint.exists() else None,
                                 last_day=day)
    return {"days": [stats.days[0], stats.days[-1]] if stats.days else [],
            "rows": int(sum(stats.rows_per_day.values())),
            "seconds": round(time.perf_counter() - started, 1)}


def materialize_step(cfg: PipelineConfig) -> dict[str, Any]:
    """Stage the embeddings into Feast and materialise them to the online store."""
    from features.store import apply, load_profile, materialize_user_embeddings

    profile = load_profile(cfg.feature_profile, root=cfg.feature_root)
    apply(profile)
    summary = materialize_user_embeddings(profile, cfg.embeddings_dir)
    return json.loads(json.dumps(summary, default=str))


def config_file_text(cfg: PipelineConfig) -> str:
    """``cfg`` as JSON (what ``load_pipeline_config`` reads back)."""
    from transact.config import config_to_dict

    return json.dumps(config_to_dict(cfg), indent=1, default=str)


__all__ = ["PipelineConfig", "build_training_set_step", "config_file_text", "gate_step",
           "load_config_file", "load_pipeline_config", "materialize_step",
           "notify_serving_step", "pinnerformer_step", "promote_step", "train_candidate_step",
           "validate_events_step"]
