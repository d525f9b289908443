"""``transact train pinnerformer DATASET_DIR OUT_DIR``: the daily batch user-embedding job.

Registered by :mod:`training.cli` as a verb of ``transact train``. Settings: the defaults of
:class:`~training.pinnerformer.config.PinnerFormerConfig`, then ``--config FILE`` (JSON or YAML,
the towers nested under ``model:``), then the options given here. Progress lines go to stderr,
the run's summary (:class:`~training.pinnerformer.job.DailyEmbeddingStats` plus the resolved
config) to stdout as JSON. Exit codes (:mod:`transact_cli.errors`): 2 for a user's mistake (a
missing dataset, a bad day or setting, a checkpoint that would leak the future), 3 for a corrupt
checkpoint or an internal fault.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path

import typer


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def pinnerformer(
    dataset_dir: Path = typer.Argument(..., help="dataset directory (events/ items.parquet)"),
    out_dir: Path = typer.Argument(..., help="output directory: user_embeddings/date=*/, "
                                   "model.pt, item_embeddings.parquet, stats.json"),
    first_day: str | None = typer.Option(
        None, "--first-day", help="first YYYY-MM-DD day to embed (default: the config's "
        "train_fraction of the dataset, or the checkpoint's horizon)"),
    last_day: str | None = typer.Option(
        None, "--last-day", help="last YYYY-MM-DD day to embed (default: the day after the "
        "last event with include_next_day, else the last event's day)"),
    day: list[str] | None = typer.Option(
        None, "--day", help="a YYYY-MM-DD day to embed (repeat; instead of the range)"),
    checkpoint: Path | None = typer.Option(
        None, help="reuse this model.pt instead of training (refused when trained past the "
        "first day)"),
    config: Path | None = typer.Option(
        None, "--config", help="PinnerFormerConfig as JSON/YAML (nested model: for the towers); "
        "the options given here override it"),
    train_steps: int | None = typer.Option(None, help="PinnerFormerConfig train_steps"),
    history_len: int | None = typer.Option(None, help="PinnerFormerConfig history_len"),
    window_days: int | None = typer.Option(None, help="PinnerFormerConfig window_days"),
    warmup_days: int | None = typer.Option(None, help="PinnerFormerConfig warmup_days"),
    batch_size: int | None = typer.Option(None, help="PinnerFormerConfig batch_size"),
    seed: int | None = typer.Option(None, help="PinnerFormerConfig seed"),
    threads: int | None = typer.Option(None, help="PinnerFormerConfig num_threads"),
    progress: bool = typer.Option(False, help="show progress bars (log lines are printed "
                                  "either way)"),
    log_level: LogLevel = typer.Option(LogLevel.info, "--log-level", help="logging level "
                                       "(stderr)"),
) -> None:
    """Train (or reuse a checkpoint) and write the dated daily user embeddings.

    Re-running a day overwrites that day's file. Stage and materialise the result with
    `transact features materialize-embeddings OUT_DIR`."""
    from transact.runtime import quiet_telemetry

    quiet_telemetry()
    from training.pinnerformer.config import PinnerFormerConfig
    from training.pinnerformer.job import run_daily_embeddings
    from transact.config import resolve_config

    logging.basicConfig(level=getattr(logging, log_level.value.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    cfg = resolve_config(PinnerFormerConfig, config, {
        "train_steps": train_steps, "history_len": history_len, "window_days": window_days,
        "warmup_days": warmup_days, "batch_size": batch_size, "seed": seed,
        "num_threads": threads})
    stats = run_daily_embeddings(dataset_dir, out_dir, cfg, days=day or None, progress=progress,
                                 checkpoint=checkpoint, first_day=first_day, last_day=last_day)
    summary = asdict(stats)
    summary["config"] = asdict(cfg)
    typer.echo(json.dumps(summary, indent=2, default=str))
