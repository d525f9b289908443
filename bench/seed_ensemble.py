"""How much of a variant's validation AUC is seed variance: single runs against the average of
their predictions.

Trains one variant (``--variant``, default ``transact``) with ``--config`` for ``--seeds``
seeds on an examples directory, always **without** the refit on train + validation (the
refitted model has seen the validation split), and scores the whole validation split. Reports
per seed the AUC of each head, their mean and standard deviation, and the AUC of the mean logit
of the first 2, 3, ... seeds (a seed ensemble). The gap between the two is the part of a
single run's error that averaging removes — what weight averaging (``ema_decay``) or a larger
model may recover, and what no feature can. By default the test split is not read.

    .venv/bin/python bench/seed_ensemble.py artifacts/demo_movielens/examples_movielens \\
        --config training/configs/movielens.yaml --seeds 3 --out /tmp/seed_ensemble.json

(``--set ema_decay=null`` trains without the config's weight averaging.)

``--split test`` is the final measurement of an ensemble chosen on validation: each run keeps
the config's refit on train + validation and the refitted model scores the test split.

Two single-threaded processes side by side (different ``--first-seed``) halve the wall time;
``--merge`` combines their JSON files (which keep the predictions in a ``.npz`` beside them).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import write_results  # noqa: E402


def logit(probs: np.ndarray) -> np.ndarray:
    """Elementwise log-odds of ``(N, H)`` probabilities, clipped away from 0 and 1."""
    clipped = np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped))


def head_aucs(labels: np.ndarray, scores: np.ndarray) -> list[float]:
    """ROC AUC per head of ``(N, H)`` labels and scores (NaN where a head has one class)."""
    from sklearn.metrics import roc_auc_score

    out = []
    for head in range(labels.shape[1]):
        column = labels[:, head]
        out.append(float("nan") if column.min() == column.max()
                   else round(float(roc_auc_score(column, scores[:, head])), 4))
    return out


def ensemble_report(labels: np.ndarray, probs_by_seed: dict[int, np.ndarray],
                    heads: list[str]) -> dict[str, object]:
    """Per-seed AUCs, their mean / std, and the AUC of the mean logit of the first n seeds
    (``probs_by_seed``: seed -> ``(N, H)`` validation probabilities)."""
    seeds = sorted(probs_by_seed)
    singles = {seed: head_aucs(labels, probs_by_seed[seed]) for seed in seeds}
    table = np.array([singles[seed] for seed in seeds])
    report: dict[str, object] = {
        "heads": heads, "seeds": seeds,
        "per_seed": {str(seed): values for seed, values in singles.items()},
        "single_mean": [round(float(v), 4) for v in table.mean(axis=0)],
        "single_std": [round(float(v), 4) for v in table.std(axis=0)],
    }
    for n in range(2, len(seeds) + 1):
        mean_logit = np.mean([logit(probs_by_seed[seed]) for seed in seeds[:n]], axis=0)
        report[f"ensemble_of_{n}"] = head_aucs(labels, mean_logit)
    return report


def train_seeds(examples_dir: Path, config: Path | None, variant_name: str, seeds: list[int],
                overrides: dict[str, object], split: str = "val"
                ) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, dict[str, object]]]:
    """The scored split's labels ``(N, H)`` (validation by default), per seed its probabilities
    ``(N, H)``, and per seed the run's course: the early-stopping step, the refit's steps and
    the validation AUC of each head at every evaluation (where each head peaks).

    ``split="test"``: the runs keep the config's refit on train + validation and the test
    split is scored instead (by the refitted model, with the item vectors it was refitted on):
    the final measurement of an ensemble chosen on validation, not a screen."""
    from training.experiments import select_variants
    from training.train import TrainConfig, load_training_data, predict_probs, train_model
    from transact.config import resolve_config

    # a null override (``--set ema_decay=null``) clears a top-level setting of the file,
    # which resolve_config's overrides (non-None only) cannot
    cleared = {key: None for key, value in overrides.items() if value is None}
    base = resolve_config(TrainConfig, config, overrides)
    base = dataclasses.replace(base, refit_on_val=base.refit_on_val and split == "test",
                               **cleared)
    base.validate()
    variant = next(v for v in select_variants([variant_name]) if v.name == variant_name)
    data = load_training_data(examples_dir, base.model.ranker.item_representation,
                              with_test=split == "test")
    scored = data.test if split == "test" else data.val
    assert scored is not None
    probs: dict[int, np.ndarray] = {}
    courses: dict[int, dict[str, object]] = {}
    for seed in seeds:
        started = time.perf_counter()
        cfg = dataclasses.replace(base, seed=seed,
                                  model=variant.apply(copy.deepcopy(base.model)))
        seed_data = data.with_items(cfg.model.ranker.item_representation)
        result = train_model(cfg, seed_data)
        item_table = (result.item_table if result.item_table is not None
                      else seed_data.item_table)
        probs[seed] = predict_probs(result.model, scored, item_table)
        print(f"seed {seed}: best step {result.best_step}, {split} AUC "
              f"{head_aucs(scored.labels, probs[seed])}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        courses[seed] = {"best_step": result.best_step, "steps": result.steps,
                         "refit_steps": result.refit_steps,
                         "seconds": round(time.perf_counter() - started, 1),
                         "history": [{"step": int(entry["step"]),
                                      **{key[len("val_"):]: round(float(value), 4)
                                         for key, value in entry.items()
                                         if key.startswith("val_auc_")}}
                                     for entry in result.history]}
    return scored.labels, probs, courses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("examples_dir", type=Path, nargs="?")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--variant", default="transact")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="TrainConfig override, e.g. --set ema_decay=0.99 (null clears a "
                        "top-level setting of the config file)")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="test: keep the config's refit and score the test split (the "
                        "final measurement of an ensemble chosen on validation)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="combine the .npz files of earlier runs instead of training")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/seed_ensemble.json"))
    args = parser.parse_args(argv)

    from transact.schema import HEADS

    if args.merge:
        probs: dict[int, np.ndarray] = {}
        labels = None
        splits = set()
        for path in args.merge:
            stored = np.load(path)
            labels = stored["labels"]
            splits.add(str(stored["split"]) if "split" in stored.files else "val")
            probs.update({int(k[len("seed"):]): stored[k] for k in stored.files
                          if k.startswith("seed")})
        assert labels is not None
        if len(splits) != 1:
            parser.error(f"--merge: the files score different splits {sorted(splits)}")
        split = splits.pop()
        source: dict[str, object] = {"merged": [str(p) for p in args.merge]}
    else:
        if args.examples_dir is None:
            parser.error("examples_dir is required unless --merge is given")
        overrides = {}
        for item in args.set:
            key, _, value = item.partition("=")
            overrides[key] = json.loads(value)
        split = args.split
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        labels, probs, courses = train_seeds(args.examples_dir, args.config, args.variant,
                                             seeds, overrides, args.split)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out.with_suffix(".npz"), labels=labels, split=args.split,
                            **{f"seed{seed}": p for seed, p in probs.items()})
        source = {"examples_dir": str(args.examples_dir),
                  "config": None if args.config is None else str(args.config),
                  "variant": args.variant, "overrides": overrides,
                  "courses": {str(seed): course for seed, course in courses.items()}}
    report = {**source, "split": split, **ensemble_report(labels, probs, list(HEADS))}
    print(json.dumps(report, indent=1))
    write_results("seed_ensemble", args, report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
