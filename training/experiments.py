"""Offline experiment runner: every model variant on the same data, seeds and budget.

Writes the paper-style table (HIT@3 per head, relative change vs the no-sequence baseline, AUC)
to ``docs/experiments_<source>.md`` together with the exact command that produced it.

Significance: the test HIT@3 of a variant and of the baseline are computed on the same counted
requests, so each relative change comes with a paired bootstrap over requests (1,000
resamples); ``*`` marks a change whose 95 % interval excludes 0. The bootstrap covers test-set
sampling noise only, not training-seed noise (use ``seeds > 1`` for that).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.train import TrainConfig, TrainData, train_model
from transact.errors import UserError
from transact.metrics import HitAtK
from transact.model.config import ModelConfig
from transact.schema import HEAD_POLARITY, HEADS

BASELINE = "no_sequence"


def _enc(**changes: Any) -> Callable[[ModelConfig], None]:
    def apply(cfg: ModelConfig) -> None:
        for key, value in changes.items():
            setattr(cfg.ranker.encoder, key, value)
    return apply


def _ranker(**changes: Any) -> Callable[[ModelConfig], None]:
    def apply(cfg: ModelConfig) -> None:
        for key, value in changes.items():
            setattr(cfg.ranker, key, value)
    return apply


def _both(*steps: Callable[[ModelConfig], None]) -> Callable[[ModelConfig], None]:
    def apply(cfg: ModelConfig) -> None:
        for step in steps:
            step(cfg)
    return apply


_NO_REALTIME = _both(_enc(kind="none"), _ranker(use_sequence_stats=False))


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    description: str
    apply: Callable[[ModelConfig], None]


VARIANTS: tuple[Variant, ...] = (
    Variant(BASELINE, "baselines", "no realtime sequence (batch user embedding only)",
            _NO_REALTIME),
    Variant("wdl_avg", "baselines", "WDL + average-pooled sequence", _enc(kind="avg")),
    Variant("bst_all", "baselines", "BST: append fusion + learned positions, all actions",
            _enc(fusion="append", positional="learned")),
    Variant("bst_positive", "baselines", "BST, positive actions only (click/save)",
            _enc(fusion="append", positional="learned", actions="positive")),
    Variant("transact", "baselines", "TransAct (concat, 2 layers, K=10 + max pool, window mask)",
            _enc()),
    Variant("no_batch_emb", "hybrid", "TransAct without the batch user embedding",
            _ranker(use_batch_user_emb=False)),
    Variant("no_realtime_no_batch", "hybrid", "neither realtime sequence nor batch embedding",
            _both(_NO_REALTIME, _ranker(use_batch_user_emb=False))),
    Variant("append_fusion", "fusion", "TransAct with append instead of concat fusion",
            _enc(fusion="append")),
    Variant("enc_cnn", "encoder", "CNN encoder (2 conv layers), concat tokens, K+max pool",
            _enc(kind="cnn")),
    Variant("enc_lstm", "encoder", "LSTM encoder, concat tokens, K+max pool", _enc(kind="lstm")),
    Variant("k_only", "compression", "first K=10 columns only", _enc(max_pool=False)),
    Variant("maxpool_only", "compression", "max pool only", _enc(first_k=0)),
    Variant("seq_len_20", "length", "TransAct on the newest 20 actions", _enc(seq_len=20)),
    Variant("no_window_mask", "mask", "TransAct without the random time-window mask",
            _enc(time_window_mask=False)),
)
VARIANT_NAMES: tuple[str, ...] = tuple(v.name for v in VARIANTS)
#: "batch embedding only (no realtime)" is the baseline itself (listed for the paper's table)
ALIASES: dict[str, str] = {"batch_emb_only": BASELINE, "enc_avg": "wdl_avg",
                           "enc_transformer": "transact"}

#: the paper's relative HIT@3 changes (repin = save, hide), for the comparison column
PAPER: dict[str, tuple[str, str]] = {
    "wdl_avg": ("+0.21%", "-1.61%"),
    "bst_all": ("+4.41%", "+2.33%"),
    "bst_positive": ("+7.34%", "n.s."),
    "transact": ("+9.40%", "-14.86%"),
}


def select_variants(names: list[str] | None) -> list[Variant]:
    """Variants by name (aliases allowed); the baseline is always included and run first."""
    if not names:
        return list(VARIANTS)
    wanted = {ALIASES.get(n, n) for n in names}
    unknown = sorted(wanted - set(VARIANT_NAMES))
    if unknown:
        raise UserError(f"unknown variants {unknown}; known: {list(VARIANT_NAMES)} "
                        f"(aliases: {sorted(ALIASES)})")
    wanted.add(BASELINE)
    return [v for v in VARIANTS if v.name in wanted]


def experiment_base_config() -> TrainConfig:
    """The default budget: small models that train in about a minute each on 2 CPU cores."""
    cfg = TrainConfig(batch_size=256, max_epochs=1, negative_keep_rate=0.25,
                      max_train_examples=150_000, max_eval_requests=2_000,
                      eval_every_steps=200, patience=2, lr=3e-3)
    cfg.model.ranker.n_cross_layers = 1
    cfg.model.ranker.mlp_dims = [128, 64]
    return cfg


@dataclass
class VariantResult:
    name: str
    test: dict[str, float]
    val: dict[str, float]
    train_seconds: float
    steps: int
    n_parameters: int
    hits: dict[str, HitAtK] = field(default_factory=dict, repr=False)


def run_variant(variant: Variant, base: TrainConfig, data: TrainData, seed: int) -> VariantResult:
    cfg = copy.deepcopy(base)
    cfg.seed = seed
    variant.apply(cfg.model)
    cfg.model.validate()
    result = train_model(cfg, data)
    return VariantResult(variant.name, result.test_metrics, result.val_metrics,
                         result.train_seconds, result.steps, result.n_parameters,
                         result.test_hits)


def paired_bootstrap(variant: HitAtK, baseline: HitAtK, n_boot: int = 1000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Relative change of the mean hit (variant vs baseline) and its 95 % bootstrap interval."""
    same = np.array_equal(variant.request_ids, baseline.request_ids)
    if not same or not len(variant.per_request):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(variant.per_request), size=(n_boot, len(variant.per_request)))
    base_means = baseline.per_request[idx].mean(axis=1)
    rel = (variant.per_request[idx].mean(axis=1) - base_means) / np.maximum(base_means, 1e-12)
    point = (variant.value - baseline.value) / max(baseline.value, 1e-12)
    low, high = np.percentile(rel, [2.5, 97.5])
    return float(point), float(low), float(high)


def run_experiments(
    data: TrainData,
    source: str,
    out_path: Path | str,
    command: str,
    variants: list[str] | None = None,
    base: TrainConfig | None = None,
    seeds: int = 1,
    progress: bool = False,
) -> list[VariantResult]:
    """Train the chosen variants (seeds ``0..seeds-1``), write the table, return the results.

    With several seeds the table shows the mean over seeds and the bootstrap uses seed 0.
    """
    base = base or experiment_base_config()
    chosen = select_variants(variants)
    results: dict[str, list[VariantResult]] = {}
    started = time.perf_counter()
    bar = _bar(progress, len(chosen) * seeds)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for variant in chosen:
        for seed in range(seeds):
            results.setdefault(variant.name, []).append(run_variant(variant, base, data, seed))
            if bar is not None:
                bar[0].advance(bar[1])
        # rewrite after every variant: a long run that is stopped keeps what it finished
        done = [v for v in chosen if len(results.get(v.name, [])) == seeds]
        _write(out_path, results, done, source, command, base, data, seeds,
               time.perf_counter() - started, complete=len(done) == len(chosen))
    if bar is not None:
        bar[0].stop()
    return [runs[0] for runs in results.values()]


def _write(out_path: Path, results: dict[str, list[VariantResult]], done: list[Variant],
           source: str, command: str, base: TrainConfig, data: TrainData, seeds: int,
           elapsed: float, complete: bool) -> None:
    finished = {v.name: results[v.name] for v in done}
    text = render_table(finished, done, source, command, base, data, seeds, elapsed)
    if not complete:
        text = text.replace("\nGenerated by:", f"\n**In progress: {len(done)} variants done.**"
                            "\n\nGenerated by:", 1)
    out_path.write_text(text)
    out_path.with_suffix(".json").write_text(json.dumps(
        {name: [{"test": r.test, "val": r.val, "train_seconds": r.train_seconds,
                 "steps": r.steps, "n_parameters": r.n_parameters} for r in runs]
         for name, runs in finished.items()}, indent=1, default=float))


def _bar(enabled: bool, total: int):  # noqa: ANN202 - rich types are optional here
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("experiments"), BarColumn(), MofNCompleteColumn())
    bar.start()
    return bar, bar.add_task("variants", total=total)


def _mean(runs: list[VariantResult], key: str) -> float:
    return float(np.mean([r.test.get(key, float("nan")) for r in runs]))


def _fmt_rel(point: float, low: float, high: float) -> str:
    if not np.isfinite(point):
        return "n/a"
    star = "*" if np.isfinite(low) and (low > 0 or high < 0) else ""
    return f"{point * 100:+.1f}%{star}"


def render_table(results: dict[str, list[VariantResult]], chosen: list[Variant], source: str,
                 command: str, base: TrainConfig, data: TrainData, seeds: int,
                 elapsed: float) -> str:
    baseline = results[BASELINE]
    budget = {k: v for k, v in dataclasses.asdict(base).items() if k != "model"}
    lines = [
        f"# Offline experiments: {source}",
        "",
        "Generated by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Data: {len(data.train):,} train / {len(data.val):,} val / "
        f"{len(data.test) if data.test is not None else 0:,} test examples. "
        f"Seeds: {seeds}. Wall time: {elapsed / 60:.1f} min.",
        "",
        f"Budget (same for every variant): `{json.dumps(budget)}`; ranker: "
        f"{base.model.ranker.n_cross_layers} full-rank cross layer(s), MLP "
        f"{base.model.ranker.mlp_dims}.",
        "",
        "HIT@3 (test): candidates of a request ranked by p_click + p_save - p_hide; per label "
        "the share of its positives (capped at 3) that reach the top 3, over requests with >= 4 "
        "candidates and >= 1 positive (see `transact/metrics.py`). Higher is better for click "
        "and save, **lower is better for hide**. Relative changes are vs `no_sequence`; `*` = "
        "the paired bootstrap 95 % interval over test requests excludes 0.",
        "",
        "| variant | group | HIT@3 click | HIT@3 save | HIT@3 hide | Δ click | Δ save | Δ hide "
        "| AUC click | AUC save | AUC hide | paper Δ save / hide | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in chosen:
        runs = results[variant.name]
        rel = []
        for head in HEADS:
            if variant.name == BASELINE:
                rel.append("—")
                continue
            if seeds == 1:
                rel.append(_fmt_rel(*paired_bootstrap(runs[0].hits[head], baseline[0].hits[head])))
            else:
                b, v = _mean(baseline, f"hit3_{head}"), _mean(runs, f"hit3_{head}")
                rel.append(f"{(v - b) / b * 100:+.1f}%" if b else "n/a")
        paper = PAPER.get(variant.name)
        lines.append(
            f"| `{variant.name}` | {variant.group} | "
            + " | ".join(f"{_mean(runs, f'hit3_{h}'):.4f}" for h in HEADS) + " | "
            + " | ".join(rel) + " | "
            + " | ".join(f"{_mean(runs, f'auc_{h}'):.4f}" for h in HEADS) + " | "
            + (f"{paper[0]} / {paper[1]}" if paper else "") + " | "
            + f"{np.mean([r.train_seconds for r in runs]):.0f} |")
    lines += ["", "Variants:", ""]
    lines += [f"- `{v.name}`: {v.description}" for v in chosen]
    lines += ["", "Direction check (our run): " + _direction_summary(results)]
    return "\n".join(lines) + "\n"


def _direction_summary(results: dict[str, list[VariantResult]]) -> str:
    if "transact" not in results:
        return "TransAct was not run."
    parts = []
    for name in results:
        if name in ("transact", BASELINE):
            continue
        verdicts = []
        for head, polarity in zip(HEADS, HEAD_POLARITY, strict=True):
            t, o = _mean(results["transact"], f"hit3_{head}"), _mean(results[name], f"hit3_{head}")
            better = (t - o) * polarity > 0
            verdicts.append(f"{head} {'better' if better else 'not better'}")
        parts.append(f"TransAct vs `{name}`: " + ", ".join(verdicts))
    return "; ".join(parts) + "."
