"""``transact features ...``: apply definitions, feed and run the stream, materialise, read.

Heavy imports (Feast, Redis) happen inside the commands so ``transact --help`` stays fast.
Every command takes ``--profile embedded|production`` and ``--root`` (local files; default
``$TRANSACT_FEATURES_ROOT`` or ``data/features``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from features.names import ProfileKind  # light: no Feast import

app = typer.Typer(
    help="Feature platform: Feast definitions, realtime stream processor, online reads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class ReadMode(StrEnum):
    auto = "auto"
    feast = "feast"
    direct = "direct"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


ProfileOpt = typer.Option(ProfileKind.EMBEDDED.value, "--profile",
                          help="embedded (no server) or production")
ConfigOpt = typer.Option(None, "--config", exists=False,
                         help="JSON or YAML file of settings; options given here override it")
LogLevelOpt = typer.Option(LogLevel.info, "--log-level", help="logging level (stderr)")
RootOpt = typer.Option(None, "--root", help="local directory of the profile")
RedisDbOpt = typer.Option(None, "--redis-db", help="Redis database number (production)")
PrefixOpt = typer.Option(None, "--key-prefix", help="Redis key prefix of the stream/state")
ProjectOpt = typer.Option(None, "--project", help="Feast project name")
SchemaOpt = typer.Option(None, "--pg-schema", help="PostgreSQL schema (production)")


def _setup_logging(level: LogLevel) -> None:
    logging.basicConfig(level=getattr(logging, level.value.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def _profile(profile: ProfileKind | str, root: Path | None, redis_db: int | None = None,
             key_prefix: str | None = None, project: str | None = None,
             pg_schema: str | None = None) -> Any:
    from transact.runtime import quiet_telemetry

    quiet_telemetry()
    from features.store import load_profile

    overrides: dict[str, Any] = {}
    if redis_db is not None:
        overrides["redis_db"] = redis_db
    if key_prefix is not None:
        overrides["key_prefix"] = key_prefix
    if project is not None:
        overrides["project"] = project
    if pg_schema is not None:
        overrides["pg_schema"] = pg_schema
    return load_profile(ProfileKind(profile).value, root, **overrides)


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@app.command("apply")
def apply_cmd(profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
              redis_db: int | None = RedisDbOpt, project: str | None = ProjectOpt,
              pg_schema: str | None = SchemaOpt) -> None:
    """Register entities and feature views in the profile's registry (feast apply)."""
    from features.store import apply

    names = apply(_profile(profile, root, redis_db, None, project, pg_schema))
    _print({"applied": names})


@app.command("stage")
def stage_cmd(
    items: Path | None = typer.Option(None, help="items.parquet or a dataset directory"),
    user_embeddings: Path | None = typer.Option(
        None, help="Parquet file/dir of (user_id, event_timestamp, user_emb[32])"),
    profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
    redis_db: int | None = RedisDbOpt,
    project: str | None = ProjectOpt, pg_schema: str | None = SchemaOpt,
) -> None:
    """Write item embeddings and/or daily user embeddings into the offline sources."""
    from features.store import stage_items, stage_user_embeddings
    from transact.errors import UserError

    if items is None and user_embeddings is None:
        raise UserError("nothing to stage: pass --items and/or --user-embeddings")
    prof = _profile(profile, root, redis_db, None, project, pg_schema)
    out: dict[str, int] = {}
    if items is not None:
        out["item_content_rows"] = stage_items(prof, items)
    if user_embeddings is not None:
        out["user_batch_embedding_rows"] = stage_user_embeddings(prof, user_embeddings)
    _print(out)


@app.command("materialize")
def materialize_cmd(profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
                    redis_db: int | None = RedisDbOpt, project: str | None = ProjectOpt,
                    pg_schema: str | None = SchemaOpt) -> None:
    """Load item content and batch user embeddings into the online store."""
    from features.store import materialize

    _print(materialize(_profile(profile, root, redis_db, None, project, pg_schema)))


@app.command("ingest")
def ingest_cmd(
    dataset: Path = typer.Argument(..., help="dataset directory whose events to publish"),
    limit: int | None = typer.Option(None, help="publish at most this many events"),
    profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
    redis_db: int | None = RedisDbOpt,
    key_prefix: str | None = PrefixOpt,
) -> None:
    """Publish a dataset's events to the stream in time order (a replay)."""
    from features.processor import open_stream
    from features.replay import replay_events
    from transact.data.dataset import read_events

    prof = _profile(profile, root, redis_db, key_prefix)
    events = read_events(dataset)
    if limit is not None:
        events = events.sort_by([("timestamp_ms", "ascending"), ("event_id", "ascending")])
        events = events.slice(0, limit)
    n = replay_events(open_stream(prof), events)
    _print({"published": n})


@app.command("process")
def process_cmd(
    profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
    redis_db: int | None = RedisDbOpt,
    key_prefix: str | None = PrefixOpt, project: str | None = ProjectOpt,
    config: Path | None = ConfigOpt,
    batch_size: int | None = typer.Option(None, help="messages per read (ProcessorConfig "
                                          "batch_size)"),
    state_cache_users: int | None = typer.Option(
        None, help="users whose last committed sequence stays in memory (0: none; "
        "ProcessorConfig state_cache_users)"),
    lateness_s: float | None = typer.Option(
        None, help="allowed lateness in seconds, -1 unbounded (ProcessorConfig "
        "allowed_lateness_ms)"),
    future_check: bool | None = typer.Option(
        None, "--future-check/--no-future-check",
        help="dead-letter events too far in the future (ProcessorConfig max_future_ms)"),
    follow: bool = typer.Option(False, help="keep running (else stop when the stream is idle)"),
    feast_online: bool = typer.Option(True, help="embedded: write the Feast online store"),
    ready_file: Path | None = typer.Option(None, help="touch this file once started"),
    progress: bool = typer.Option(False, help="show progress"),
    log_level: LogLevel = LogLevelOpt,
) -> None:
    """Run the stream processor (exactly-once effect; safe to kill and restart).

    Settings: ProcessorConfig's defaults, then --config FILE, then the options given here."""
    from features.processor import ProcessorConfig, open_processor
    from transact.config import resolve_config

    _setup_logging(log_level)
    overrides: dict[str, Any] = {"batch_size": batch_size,
                                 "state_cache_users": state_cache_users}
    cfg = resolve_config(ProcessorConfig, config, overrides)
    if lateness_s is not None:
        cfg.allowed_lateness_ms = None if lateness_s < 0 else int(lateness_s * 1000)
    if future_check is False:
        cfg.max_future_ms = None
    elif future_check and cfg.max_future_ms is None:
        from transact.config import default_of

        cfg.max_future_ms = default_of(ProcessorConfig, "max_future_ms")
    cfg.validate()
    prof = _profile(profile, root, redis_db, key_prefix, project)
    proc = open_processor(prof, cfg, feast_online=feast_online)
    if ready_file is not None:
        ready_file.write_text(str(proc.epoch))
    total = proc.run(until_idle=not follow, progress=progress)
    _print({"messages": total.messages, "accepted": total.accepted,
            "engagements": total.engagements, "duplicates": total.duplicates,
            "dead_letters": total.dead, "users_updated": total.users_updated})


@app.command("materialize-embeddings")
def materialize_embeddings_cmd(
    embeddings: Path = typer.Argument(..., help="output directory of `transact train "
                                      "pinnerformer` (or its user_embeddings/)"),
    with_items: bool = typer.Option(False, help="also materialise the staged item content"),
    profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
    redis_db: int | None = RedisDbOpt, project: str | None = ProjectOpt,
    pg_schema: str | None = SchemaOpt,
) -> None:
    """Stage the daily user embeddings (every dated day written) and materialise them into the
    online store: the step after `transact train pinnerformer`."""
    from features.store import materialize_user_embeddings

    prof = _profile(profile, root, redis_db, None, project, pg_schema)
    with contextlib.redirect_stdout(sys.stderr):  # Feast's own progress: stdout stays JSON
        done = materialize_user_embeddings(prof, embeddings, include_items=with_items)
    _print(done)


@app.command("status")
def status_cmd(profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
               redis_db: int | None = RedisDbOpt, key_prefix: str | None = PrefixOpt) -> None:
    """Backlog, counters and dead letters by reason."""
    from features.processor import open_stream

    prof = _profile(profile, root, redis_db, key_prefix)
    stream = open_stream(prof)
    dead = stream.dead_letters()
    reasons: dict[str, int] = {}
    for reason in dead.column("reason").to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    out: dict[str, Any] = {"backlog": stream.backlog()}
    if prof.kind == "production":
        stats = {k.decode(): int(v) for k, v in
                 prof.redis_client().hgetall(f"{prof.key_prefix}stats").items()}
    else:
        has_stats = stream.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'stats'").fetchone()
        stats = ({k: int(v) for k, v in stream.conn.execute("SELECT key, value FROM stats")}
                 if has_stats else {})
    if not stats:
        out["note"] = "no processor has committed on this stream yet"
    out.update({"counters": stats, "dead_letters": reasons})
    _print(out)


@app.command("check")
def check_cmd(profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
              redis_db: int | None = RedisDbOpt, key_prefix: str | None = PrefixOpt) -> None:
    """Great Expectations checks: the offline log passes the events suite; dead letters have
    known reasons and agree with the suite. Exit code 1 when a check fails."""
    from features.quality import check_dead_letters, check_offline_log

    prof = _profile(profile, root, redis_db, key_prefix)
    reports = [check_offline_log(prof), check_dead_letters(prof)]
    _print([{"check": r.name, "ok": r.ok, "counts": r.counts, "problems": r.problems}
            for r in reports])
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


@app.command("read")
def read_cmd(
    user_id: int = typer.Argument(...),
    candidates: str = typer.Option("", help="comma-separated candidate item ids"),
    mode: ReadMode = typer.Option(ReadMode.auto, help="auto, feast or direct"),
    profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
    redis_db: int | None = RedisDbOpt,
    project: str | None = ProjectOpt,
) -> None:
    """Print one user's online ranking features."""
    from features.online import open_reader
    from transact.errors import UserError

    try:
        cands = [int(c) for c in candidates.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--candidates must be comma-separated integers, got {candidates!r}")
    prof = _profile(profile, root, redis_db, None, project)
    feats = open_reader(prof, ReadMode(mode).value).get_ranking_features(user_id, cands)
    n = feats.seq_len
    _print({
        "user_id": feats.user_id, "seq_len": n,
        "seq_item_ids": feats.seq_item_ids[:n].tolist(),
        "seq_action_types": feats.seq_action_types[:n].tolist(),
        "seq_timestamps_ms": feats.seq_timestamps_ms[:n].tolist(),
        "user_emb_found": feats.user_emb_found,
        "items_found": int(feats.item_found.sum()), "candidates": len(cands),
    })


@app.command("teardown")
def teardown_cmd(profile: ProfileKind = ProfileOpt, root: Path | None = RootOpt,
                 redis_db: int | None = RedisDbOpt, key_prefix: str | None = PrefixOpt,
                 project: str | None = ProjectOpt, pg_schema: str | None = SchemaOpt,
                 yes: bool = typer.Option(False, "--yes", help="really delete")) -> None:
    """Delete the profile's stream, state, online keys, PostgreSQL schema and local files."""
    from features.store import teardown
    from transact.errors import UserError

    if not yes:
        raise UserError("teardown deletes the profile's data; pass --yes to confirm")
    teardown(_profile(profile, root, redis_db, key_prefix, project, pg_schema))
    _print({"teardown": "done"})


if __name__ == "__main__":  # python -m features.cli ...
    from transact_cli.errors import run_cli

    sys.exit(run_cli(app))
