"""``transact train ...``: fit one model, or run the offline experiment table.

The lead mounts :data:`app` as the ``train`` sub-command of the ``transact`` CLI.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from training.pinnerformer.cli import pinnerformer as pinnerformer_cmd
from transact.model.artifact import save_model
from transact.runtime import quiet_telemetry

app = typer.Typer(help="Train the ranking model and run offline experiments.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("pinnerformer")(pinnerformer_cmd)  # the daily batch user-embedding job


def _command_line() -> str:
    return "transact train " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "train" else " ".join(
            shlex.quote(a) for a in sys.argv)


ConfigOpt = typer.Option(None, "--config", help="TrainConfig as JSON/YAML (nested: model."
                         "ranker.encoder...); the dataclasses' defaults fill the rest, the "
                         "options given here override it. training/configs/paper.yaml is the "
                         "paper's configuration")


@app.command()
def fit(
    examples_dir: Path = typer.Argument(..., help="examples directory (train/ val/ test/ "
                                        "items.parquet) from `transact data examples`"),
    out: Path = typer.Option(Path("artifacts/model"), help="where to write the model artifact"),
    config: Path | None = ConfigOpt,
    encoder: str | None = typer.Option(None, help="none|avg|transformer|cnn|rnn|lstm"),
    fusion: str | None = typer.Option(None, help="concat (TransAct) or append (BST)"),
    seq_len: int | None = typer.Option(None, help="use the newest SEQ_LEN actions"),
    item_representation: str | None = typer.Option(
        None, help="content | graph | pinnerformer (item vectors of tokens and candidates)"),
    no_batch_emb: bool = typer.Option(False, help="drop the batch user embedding"),
    no_window_mask: bool = typer.Option(False, help="turn the random time-window mask off"),
    epochs: int | None = typer.Option(None, help="maximum passes over the training rows"),
    max_steps: int | None = typer.Option(None, help="cap on optimizer steps"),
    batch_size: int | None = typer.Option(None),
    lr: float | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    negative_keep_rate: float | None = typer.Option(
        None, help="keep rows without positives with this probability"),
    max_train_examples: int | None = typer.Option(None),
    max_eval_requests: int | None = typer.Option(None),
    user_weighting: str | None = typer.Option(None, help="uniform|inverse_sqrt_activity"),
    label_weights: str | None = typer.Option(
        None, help="3x3 JSON matrix M (heads x labels: click, save, hide)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Train one model; write the artifact and print validation/test metrics as JSON.

    Settings: TrainConfig's defaults (the model of the experiment table and the demo), then
    --config FILE, then the options given here."""
    quiet_telemetry()
    from training.train import TrainConfig, load_training_data, train_model
    from transact.config import resolve_config
    from transact.errors import UserError

    try:
        matrix = json.loads(label_weights) if label_weights else None
    except json.JSONDecodeError as err:
        raise UserError(f"--label-weights is not JSON: {err}") from err
    overrides = {
        "model.ranker.encoder.kind": encoder, "model.ranker.encoder.fusion": fusion,
        "model.ranker.encoder.seq_len": seq_len,
        "model.ranker.item_representation": item_representation,
        "model.ranker.use_batch_user_emb": False if no_batch_emb else None,
        "model.ranker.encoder.time_window_mask": False if no_window_mask else None,
        "model.loss.label_weights": matrix, "model.loss.user_weighting": user_weighting,
        "max_epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr,
        "seed": seed, "negative_keep_rate": negative_keep_rate,
        "max_train_examples": max_train_examples, "max_eval_requests": max_eval_requests,
        "progress": progress,
    }
    cfg = resolve_config(TrainConfig, config, overrides)
    data = load_training_data(examples_dir, cfg.model.ranker.item_representation)
    result = train_model(cfg, data)
    save_model(result.model, cfg.model, out, metadata={
        "examples_dir": str(examples_dir), "command": _command_line(), **result.summary()})
    typer.echo(json.dumps({"artifact": str(out), **result.summary()}, indent=1, default=float))


@app.command()
def experiments(
    examples_dir: Path = typer.Argument(..., help="examples directory of one data source"),
    source: str = typer.Option(..., help="data source name, used in the table file name"),
    config: Path | None = ConfigOpt,
    out: Path | None = typer.Option(None, help="table path (default docs/experiments_"
                                    "<source>.md)"),
    variants: str | None = typer.Option(None, help="comma-separated subset (default: all)"),
    seeds: int = typer.Option(1, help="training seeds per variant"),
    jobs: int = typer.Option(1, help="runs trained side by side (one process each)"),
    item_representation: str | None = typer.Option(
        None, help="content | graph | pinnerformer (default: TrainConfig's)"),
    max_train_examples: int | None = typer.Option(None, help="override the budget"),
    epochs: int | None = typer.Option(None, help="override the budget"),
    progress: bool = typer.Option(True),
) -> None:
    """Train every variant on the same data, seeds and budget; write the paper-style table."""
    quiet_telemetry()
    from training.experiments import experiment_base_config, run_experiments
    from training.train import load_training_data
    from transact.config import resolve_config

    base = resolve_config(type(experiment_base_config()), config, {
        "max_train_examples": max_train_examples, "max_epochs": epochs,
        "model.ranker.item_representation": item_representation})
    out = out or Path("docs") / f"experiments_{source}.md"
    chosen = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    results = run_experiments(load_training_data(examples_dir,
                                                 base.model.ranker.item_representation), source,
                              out, _command_line(), variants=chosen, base=base, seeds=seeds,
                              progress=progress, jobs=jobs)
    typer.echo(f"wrote {out} ({len(results)} variants)")


@app.command("item-embeddings")
def item_embeddings(
    dataset_dir: Path = typer.Argument(..., help="dataset directory (events/ items.parquet)"),
    examples_dir: Path = typer.Argument(..., help="examples built from it; the vectors are "
                                        "learned on its training window and written there"),
    config: Path | None = typer.Option(None, "--config", help="ItemGraphConfig as JSON/YAML"),
    epochs: int | None = typer.Option(None, help="override ItemGraphConfig.epochs"),
    seed: int | None = typer.Option(None, help="override ItemGraphConfig.seed"),
    mode: str | None = typer.Option(
        None, help="learned | propagated | spectral | spectral_propagated | clustered "
        "(ItemGraphConfig.mode)"),
) -> None:
    """Learn PinSage-style item vectors from the training window's co-engagements.

    Settings: ItemGraphConfig's defaults, then --config FILE, then the options given here."""
    quiet_telemetry()
    from training.item_embeddings import run_item_embeddings
    from transact.config import resolve_config
    from transact.model.item_graph import ItemGraphConfig

    cfg = resolve_config(ItemGraphConfig, config, {"epochs": epochs, "seed": seed,
                                                   "mode": mode})
    summary = run_item_embeddings(dataset_dir, examples_dir, cfg)
    typer.echo(json.dumps(summary, indent=1, default=float))


@app.command()
def retrain(
    examples_dir: Path = typer.Argument(..., help="examples directory (train/ val/ test/)"),
    config: Path | None = typer.Option(None, "--config", help="RetrainConfig as JSON/YAML "
                                       "(train, ray, registry, gate sections)"),
    backend: str | None = typer.Option(None, help="plain | ray"),
    workers: int | None = typer.Option(None, help="Ray Train workers"),
    registry_root: str | None = typer.Option(None, help="registry directory"),
    registry_profile: str | None = typer.Option(None, help="embedded | production"),
    margin: float | None = typer.Option(None, help="required relative HIT@3 gain"),
    seed: int | None = typer.Option(None),
) -> None:
    """One retraining cycle: train, register, gate against the champion, promote or not."""
    quiet_telemetry()
    from training.retrain import RetrainConfig, run_retraining
    from transact.config import resolve_config

    cfg = resolve_config(RetrainConfig, config, {
        "examples_dir": str(examples_dir), "backend": backend, "ray.num_workers": workers,
        "registry.root": registry_root, "registry.profile": registry_profile,
        "gate.margin": margin, "train.seed": seed})
    outcome = run_retraining(cfg, log=lambda line: typer.echo(line, err=True))
    typer.echo(json.dumps({"version": outcome.version, "promote": outcome.decision.promote,
                           "champion": outcome.champion_after,
                           "reason": outcome.decision.reason}, indent=1))
