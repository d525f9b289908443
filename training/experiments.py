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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.train import (
    TrainConfig,
    TrainData,
    oracle_metrics,
    subsample_requests,
    train_model,
)
from transact.errors import UserError
from transact.metrics import HitAtK
from transact.model.config import ConfigError, ModelConfig
from transact.schema import HEAD_POLARITY, HEADS, HOUR_MS

BASELINE = "no_sequence"
ORACLE = "oracle"


_NO_REALTIME_ENC = {"kind": "none"}
_NO_REALTIME_RANKER = {"use_sequence_stats": False}
#: the published baselines have no candidate-similarity pool (TransAct's addition here)
_NO_POOL = {"similarity_pool": False}


@dataclass(frozen=True)
class Variant:
    """A named change of the base model: ``encoder`` / ``ranker`` map field names of
    :class:`EncoderConfig` / :class:`RankerConfig` to new values (a misspelt name is an
    error, not a silently added attribute)."""

    name: str
    group: str
    description: str
    encoder: dict[str, Any] = field(default_factory=dict)
    ranker: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)

    def apply(self, cfg: ModelConfig) -> ModelConfig:
        """A validated copy of ``cfg`` with this variant's changes."""
        try:
            encoder = dataclasses.replace(cfg.ranker.encoder, **self.encoder)
            ranker = dataclasses.replace(cfg.ranker, encoder=encoder, **self.ranker)
            loss = dataclasses.replace(cfg.loss, **self.loss)
        except TypeError as err:
            raise ConfigError(f"variant {self.name!r}: {err}") from err
        return dataclasses.replace(cfg, ranker=ranker, loss=loss).validate()


VARIANTS: tuple[Variant, ...] = (
    Variant(BASELINE, "baselines", "no realtime sequence encoder (batch user embedding and "
            "the sequence's count features)", encoder=_NO_REALTIME_ENC),
    Variant("wdl_avg", "baselines", "WDL + average-pooled sequence",
            encoder={"kind": "avg", **_NO_POOL}),
    Variant("bst_all", "baselines", "BST: append fusion + learned positions, all actions",
            encoder={"fusion": "append", "positional": "learned", **_NO_POOL}),
    Variant("bst_positive", "baselines", "BST, positive actions only (click/save)",
            encoder={"fusion": "append", "positional": "learned", "actions": "positive",
                     **_NO_POOL}),
    Variant("transact", "baselines", "TransAct (concat, 2 layers, K=10 + max pool, cos channel "
            "and similarity pool)"),
    Variant("no_realtime", "hybrid", "batch embedding only: no sequence encoder and no "
            "sequence count features", encoder=_NO_REALTIME_ENC, ranker=_NO_REALTIME_RANKER),
    Variant("no_batch_emb", "hybrid", "TransAct without the batch user embedding",
            ranker={"use_batch_user_emb": False}),
    Variant("no_realtime_no_batch", "hybrid", "neither realtime sequence nor batch embedding",
            encoder=_NO_REALTIME_ENC,
            ranker={**_NO_REALTIME_RANKER, "use_batch_user_emb": False}),
    Variant("append_fusion", "fusion", "TransAct with append instead of concat fusion",
            encoder={"fusion": "append"}),
    Variant("enc_cnn", "encoder", "CNN encoder (2 conv layers), concat tokens, K+max pool",
            encoder={"kind": "cnn"}),
    Variant("enc_lstm", "encoder", "LSTM encoder, concat tokens, K+max pool",
            encoder={"kind": "lstm"}),
    Variant("k_only", "compression", "first K=10 columns only",
            encoder={"max_pool": False, "first_k": 10}),
    Variant("k_and_maxpool", "compression", "first K=10 columns and the max pool (the "
            "default; the MovieLens config keeps the max pool only)",
            encoder={"max_pool": True, "first_k": 10}),
    Variant("maxpool_only", "compression", "max pool only", encoder={"first_k": 0}),
    Variant("seq_len_20", "length", "TransAct on the newest 20 actions",
            encoder={"seq_len": 20}),
    Variant("no_window_mask", "mask", "TransAct without the random time-window mask",
            encoder={"time_window_mask": False}),
    Variant("candidate_similarity", "tokens", "TransAct whose tokens also carry "
            "cos(item, candidate) (the default since 2026-12-01)",
            encoder={"candidate_similarity": True}),
    Variant("no_candidate_similarity", "tokens", "TransAct without the cos(item, candidate) "
            "token channel", encoder={"candidate_similarity": False}),
    Variant("similarity_pool_raw", "tokens", "TransAct whose similarity pool uses the plain "
            "cosine of the item vectors (no learned metric)",
            encoder={"similarity_pool": True, "similarity_pool_learned": False}),
    Variant("no_similarity_pool", "tokens", "TransAct without the pooled cos(item, "
            "candidate) features (the default until 2026-12-01, session 3)",
            encoder={"similarity_pool": False}),
    Variant("no_similarity_at_all", "tokens", "TransAct with neither the cos channel in the "
            "tokens nor the similarity pool: the paper's tokens",
            encoder={"similarity_pool": False, "candidate_similarity": False}),
    Variant("train_seq_len_32", "length", "TransAct trained on the newest 32 actions "
            "(evaluated on 100; the default until 2026-12-01)", encoder={"train_seq_len": 32}),
    Variant("action_age", "tokens", "TransAct whose tokens also carry a learned embedding of "
            "the action's age (bucketed request time - action time)",
            encoder={"action_age": True}),
    Variant("age_and_similarity", "tokens", "TransAct with both the action-age embedding and "
            "the cos(item, candidate) channel",
            encoder={"action_age": True, "candidate_similarity": True}),
    Variant("items_content", "items", "TransAct on the items' content vectors (not the "
            "graph-propagated ones)", ranker={"item_representation": "content"}),
    Variant("items_graph", "items", "TransAct on the co-engagement item vectors of "
            "item_graph.parquet (the default; the example builder's propagated ones unless "
            "`transact train item-embeddings --mode learned` replaced them)",
            ranker={"item_representation": "graph"}),
    Variant("items_pinnerformer", "items", "TransAct on the batch job's item tower vectors "
            "(the default until 2026-12-01)", ranker={"item_representation": "pinnerformer"}),
    Variant("items_content_and_batch", "items", "TransAct whose item vectors are the content "
            "vector and the batch job's item vector side by side (64-d)",
            encoder={"item_emb_dim": 64},
            ranker={"item_emb_dim": 64, "item_representation": "content+pinnerformer"}),
    Variant("hide_weight_5", "loss", "TransAct with hide positives weighted 5 in the loss "
            "(label-weight matrix M[hide, hide] = 5)",
            loss={"label_weights": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0]]}),
    Variant("engagement_counters", "counters", "TransAct with the point-in-time engagement "
            "counters of the item and the user (8 features; the MovieLens config's default)",
            ranker={"use_engagement_counters": True}),
    Variant("no_engagement_counters", "counters", "TransAct without the engagement counters",
            ranker={"use_engagement_counters": False}),
    Variant("window_mask_24h_drop", "mask", "the paper's mask: window U(0, 24 h), masked "
            "actions dropped from the sequence",
            encoder={"time_window_mask": True, "time_window_ms": 24 * HOUR_MS,
                     "time_window_mode": "drop"}),
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


def _graph_mode(data: TrainData) -> str:
    """`` (mode ...)`` of the examples' ``graph`` item vectors, read from what the builder or
    the item-embedding job wrote beside them (empty when unknown)."""
    if data.item_representation != "graph" or data.examples_dir is None:
        return ""
    summary = Path(data.examples_dir) / "item_graph.json"
    try:
        mode = json.loads(summary.read_text())["config"]["mode"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" (mode `{mode}`, `{summary.name}` beside the examples)"


def experiment_base_config() -> TrainConfig:
    """The experiment budget and model: :class:`TrainConfig`'s defaults, the same
    configuration ``transact train fit`` and the demo use (one source of truth)."""
    return TrainConfig()


@dataclass
class VariantResult:
    name: str
    test: dict[str, float]
    val: dict[str, float]
    train_seconds: float
    steps: int
    n_parameters: int
    hits: dict[str, HitAtK] = field(default_factory=dict, repr=False)
    #: steps of the refit on train + val (``TrainConfig.refit_on_val``), 0 without one
    refit_steps: int = 0


def run_variant(variant: Variant, base: TrainConfig, data: TrainData, seed: int) -> VariantResult:
    cfg = dataclasses.replace(base, seed=seed, model=variant.apply(copy.deepcopy(base.model)))
    result = train_model(cfg, data.with_items(cfg.model.ranker.item_representation))
    return VariantResult(variant.name, result.test_metrics, result.val_metrics,
                         result.train_seconds, result.steps, result.n_parameters,
                         result.test_hits, result.refit_steps)


def hardware_line() -> str:
    """Where a table was made: CPUs, platform, accelerator, torch."""
    import os
    import platform

    import torch

    gpu = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
    return (f"{os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}), {gpu}, "
            f"torch {torch.__version__}; each run single-threaded (`num_threads`), `--jobs` "
            f"runs side by side.")


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
    jobs: int = 1,
) -> list[VariantResult]:
    """Train the chosen variants (seeds ``0..seeds-1``), write the table, return the results
    of seed 0. Where the data carry the oracle's probabilities (the synthetic world), the table
    has an ``oracle`` row per seed's evaluation subset and each model's share of the AUC gap
    from the baseline to the oracle. ``jobs > 1`` trains that many runs side by side in
    forked worker processes (each with ``base.num_threads`` threads; results do not depend on
    ``jobs``)."""
    base = base or experiment_base_config()
    chosen = select_variants(variants)
    results: dict[str, list[VariantResult]] = {}
    oracle = _oracle_runs(data, base, seeds)
    started = time.perf_counter()
    bar = _bar(progress, len(chosen) * seeds)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tasks = [(variant, seed) for variant in chosen for seed in range(seeds)]
    by_task: dict[tuple[str, int], VariantResult] = {}
    for (variant, seed), result in _run_tasks(tasks, base, data, jobs):
        by_task[(variant.name, seed)] = result
        if bar is not None:
            bar[0].advance(bar[1])
        # rewrite after every finished variant: a long run that is stopped keeps its results
        results = {v.name: [by_task[(v.name, s)] for s in range(seeds)] for v in chosen
                   if all((v.name, s) in by_task for s in range(seeds))}
        done = [v for v in chosen if v.name in results]
        if BASELINE not in results:  # the table is relative to the baseline
            continue
        _write(out_path, results, done, source, command, base, data, seeds,
               time.perf_counter() - started, complete=len(done) == len(chosen), oracle=oracle)
    if bar is not None:
        bar[0].stop()
    return [runs[0] for runs in results.values()]


_WORKER_DATA: TrainData | None = None


def _worker_run(variant: Variant, base: TrainConfig, seed: int) -> VariantResult:
    assert _WORKER_DATA is not None  # set before the fork
    return run_variant(variant, base, _WORKER_DATA, seed)


def _run_tasks(tasks: list[tuple[Variant, int]], base: TrainConfig, data: TrainData, jobs: int):
    """Yield ``((variant, seed), result)`` as runs finish (in task order when ``jobs == 1``)."""
    if jobs <= 1:
        for variant, seed in tasks:
            yield (variant, seed), run_variant(variant, base, data, seed)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    global _WORKER_DATA
    _WORKER_DATA = data  # inherited by the forked workers, never pickled
    try:
        with ProcessPoolExecutor(max_workers=jobs,
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(_worker_run, variant, base, seed): (variant, seed)
                       for variant, seed in tasks}
            for future in as_completed(futures):
                yield futures[future], future.result()
    finally:
        _WORKER_DATA = None


def _oracle_runs(data: TrainData, base: TrainConfig, seeds: int) -> list[VariantResult]:
    """The oracle's test metrics on each seed's evaluation subset ([] without a truth)."""
    if data.test is None:
        return []
    runs = []
    for seed in range(seeds):
        test = subsample_requests(data.test, base.max_test_requests, seed)
        val = subsample_requests(data.val, base.max_eval_requests, seed)
        test_metrics, val_metrics = oracle_metrics(test, base.utility), oracle_metrics(
            val, base.utility)
        if test_metrics is None or val_metrics is None:
            return []
        runs.append(VariantResult(ORACLE, test_metrics[0], val_metrics[0], 0.0, 0, 0,
                                  test_metrics[1]))
    return runs


def _write(out_path: Path, results: dict[str, list[VariantResult]], done: list[Variant],
           source: str, command: str, base: TrainConfig, data: TrainData, seeds: int,
           elapsed: float, complete: bool, oracle: list[VariantResult] | None = None) -> None:
    finished = {v.name: results[v.name] for v in done}
    text = render_table(finished, done, source, command, base, data, seeds, elapsed,
                        oracle or [])
    if not complete:
        text = text.replace("\nGenerated by:", f"\n**In progress: {len(done)} variants done.**"
                            "\n\nGenerated by:", 1)
    out_path.write_text(text)
    payload = {name: [{"seed": seed, "test": r.test, "val": r.val,
                       "train_seconds": r.train_seconds, "steps": r.steps,
                       "refit_steps": r.refit_steps, "n_parameters": r.n_parameters}
                      for seed, r in enumerate(runs)]
               for name, runs in finished.items()}
    if oracle:
        payload[ORACLE] = [{"seed": seed, "test": r.test, "val": r.val}
                           for seed, r in enumerate(oracle)]
    out_path.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=float))


def _bar(enabled: bool, total: int):  # noqa: ANN202 - rich types are optional here
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("experiments"), BarColumn(), MofNCompleteColumn())
    bar.start()
    return bar, bar.add_task("variants", total=total)


def _values(runs: list[VariantResult], key: str) -> np.ndarray:
    return np.array([r.test.get(key, float("nan")) for r in runs], dtype=np.float64)


def _mean(runs: list[VariantResult], key: str) -> float:
    return float(np.mean(_values(runs, key)))


def seed_test(variant: np.ndarray, baseline: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test between per-seed values (NaN below 2 seeds each)."""
    from scipy.stats import ttest_ind

    if len(variant) < 2 or len(baseline) < 2:
        return float("nan")
    if np.std(variant) == 0 and np.std(baseline) == 0:
        return 0.0 if np.mean(variant) != np.mean(baseline) else 1.0
    return float(ttest_ind(variant, baseline, equal_var=False).pvalue)


def _fmt_rel(point: float, low: float, high: float) -> str:
    if not np.isfinite(point):
        return "n/a"
    star = "*" if np.isfinite(low) and (low > 0 or high < 0) else ""
    return f"{point * 100:+.1f}%{star}"


def _cell(runs: list[VariantResult], key: str) -> str:
    values = _values(runs, key)
    if len(values) > 1:
        return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
    return f"{values.mean():.4f}"


def render_table(results: dict[str, list[VariantResult]], chosen: list[Variant], source: str,
                 command: str, base: TrainConfig, data: TrainData, seeds: int,
                 elapsed: float, oracle: list[VariantResult] | None = None) -> str:
    oracle = oracle or []
    baseline = results[BASELINE]
    budget = {k: v for k, v in dataclasses.asdict(base).items() if k != "model"}
    significance = (
        "`*` = Welch's t-test across the seeds' values gives p < 0.05" if seeds > 1 else
        "`*` = the paired bootstrap 95 % interval over test requests excludes 0 (one seed: "
        "test-set noise only, not training noise)")
    lines = [
        f"# Offline experiments: {source}",
        "",
        verdict(results),
        "",
        "Generated by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Data: {len(data.train):,} train / {len(data.val):,} val / "
        f"{len(data.test) if data.test is not None else 0:,} test examples; item vectors: "
        f"`{data.item_representation}`{_graph_mode(data)}. Seeds: {seeds} (0..{seeds - 1}). "
        f"Wall time: "
        f"{elapsed / 60:.1f} min.",
        "",
        f"Hardware: {hardware_line()}",
        "",
        f"Budget (same for every variant): `{json.dumps(budget, default=str)}`.",
        "",
        *(["Refit (`refit_on_val`): every run is early-stopped on the validation split, then "
           "trained afresh on train + validation for its best step count scaled by the rows "
           "added; validation columns are the early-stopped model's, test columns the "
           "refitted one's, `train s` counts both runs.", ""] if base.refit_on_val else []),
        f"Base model: `{json.dumps(dataclasses.asdict(base.model.ranker), default=str)}`.",
        "",
        "HIT@3 (test): candidates of a request ranked by p_click + p_save - p_hide; per label "
        "the share of its positives (capped at 3) that reach the top 3, over requests with >= 4 "
        "candidates and >= 1 positive (see `transact/metrics.py`). Higher is better for click "
        "and save, **lower is better for hide**. Cells are mean ± std over seeds. Relative "
        f"changes are vs `{BASELINE}`; {significance}.",
        "",
    ]
    head_cols = " | ".join(f"HIT@3 {h}" for h in HEADS)
    delta_cols = " | ".join(f"Δ {h}" for h in HEADS)
    auc_cols = " | ".join(f"AUC {h}" for h in HEADS)
    gap_cols = (" | " + " | ".join(f"gap closed {h}" for h in HEADS)) if oracle else ""
    n_cols = 2 + 3 * len(HEADS) + (len(HEADS) if oracle else 0) + 2
    lines += [f"| variant | group | {head_cols} | {delta_cols} | {auc_cols}{gap_cols} "
              "| paper Δ save / hide | train s |", "|" + "---|" * n_cols]
    rows = [(v.name, v.group) for v in chosen]
    if oracle:
        rows.append((ORACLE, "ceiling"))
    for name, group in rows:
        runs = oracle if name == ORACLE else results[name]
        rel = []
        for head in HEADS:
            if name == BASELINE:
                rel.append("—")
                continue
            if seeds == 1:
                rel.append(_fmt_rel(*paired_bootstrap(runs[0].hits[head], baseline[0].hits[head])))
            else:
                key = f"hit3_{head}"
                b, v = _mean(baseline, key), _mean(runs, key)
                star = "*" if seed_test(_values(runs, key), _values(baseline, key)) < 0.05 else ""
                rel.append(f"{(v - b) / b * 100:+.1f}%{star}" if b else "n/a")
        gaps = []
        if oracle:
            for head in HEADS:
                key = f"auc_{head}"
                b, o, v = _mean(baseline, key), _mean(oracle, key), _mean(runs, key)
                gaps.append("—" if name in (BASELINE, ORACLE) or o <= b
                            else f"{(v - b) / (o - b) * 100:.0f}%")
        paper = PAPER.get(name)
        seconds = "" if name == ORACLE else f"{np.mean([r.train_seconds for r in runs]):.0f}"
        lines.append(
            f"| `{name}` | {group} | "
            + " | ".join(_cell(runs, f"hit3_{h}") for h in HEADS) + " | "
            + " | ".join(rel) + " | "
            + " | ".join(_cell(runs, f"auc_{h}") for h in HEADS)
            + ((" | " + " | ".join(gaps)) if oracle else "") + " | "
            + (f"{paper[0]} / {paper[1]}" if paper else "") + f" | {seconds} |")
    lines += ["", "Variants:", ""]
    lines += [f"- `{v.name}`: {v.description}" for v in chosen]
    if oracle:
        lines.append(f"- `{ORACLE}`: the synthetic world's true outcome probabilities of every "
                     "impression (never a model input); 'gap closed' = (AUC − baseline AUC) / "
                     "(oracle AUC − baseline AUC)")
    lines += ["", "TransAct against each other variant (mean difference over seeds; p: Welch's "
              "t-test across seeds, where there are >= 2 seeds):", ""]
    lines += _transact_comparison(results)
    return "\n".join(lines) + "\n"


#: the paper's baselines TransAct must beat (the table's verdict line)
PAPER_BASELINES: tuple[str, ...] = (BASELINE, "wdl_avg", "bst_all", "bst_positive")


def verdict(results: dict[str, list[VariantResult]]) -> str:
    """One line for the top of a table: does TransAct win, and where to read on."""
    if "transact" not in results:
        return "**Verdict**: TransAct was not run in this table."
    ours = results["transact"]
    rivals = [name for name in PAPER_BASELINES if name in results]
    wins, total, losses = 0, 0, []
    for name in rivals:
        for metric in ("hit3", "auc"):
            for head, polarity in zip(HEADS, HEAD_POLARITY, strict=True):
                key = f"{metric}_{head}"
                sign = polarity if metric == "hit3" else 1
                diff = (_mean(ours, key) - _mean(results[name], key)) * sign
                p = seed_test(_values(ours, key), _values(results[name], key))
                total += 1
                if diff > 0 and p < 0.05:
                    wins += 1
                elif diff < 0:
                    losses.append(f"{metric.upper()} {head} vs `{name}`"
                                  + (" (p < 0.05)" if p < 0.05 else ""))
    if not rivals:
        return "**Verdict**: no baseline in this table."
    seeds = len(ours)
    if seeds < 2:
        ahead = total - len(losses)
        return (f"**Verdict (one seed, no significance test)**: TransAct is ahead on {ahead} of "
                f"{total} comparisons with {', '.join(f'`{r}`' for r in rivals)}"
                + (f"; behind on: {', '.join(losses)}" if losses else "")
                + ". Read single-seed differences as noise-level; the seeded comparison and the "
                "next steps: `docs/model.md`, section Findings.")
    head = ("**Verdict: TransAct wins**" if wins == total else
            "**Verdict: TransAct does not win this table**")
    lost = f"; numerically behind on {len(losses)}: " + ", ".join(losses) if losses else ""
    return (f"{head}: significantly ahead (p < 0.05 over {seeds} seeds) on {wins} of {total} "
            f"comparisons with {', '.join(f'`{r}`' for r in rivals)}{lost}. Why, and the next "
            "steps: `docs/model.md`, section Findings.")


def _transact_comparison(results: dict[str, list[VariantResult]]) -> list[str]:
    if "transact" not in results:
        return ["TransAct was not run."]
    ours = results["transact"]
    lines = []
    for name, runs in results.items():
        if name == "transact":
            continue
        parts = []
        for metric in ("hit3", "auc"):
            for head, polarity in zip(HEADS, HEAD_POLARITY, strict=True):
                key = f"{metric}_{head}"
                # AUC is higher-is-better for every head; HIT@3 of hide is lower-is-better
                sign = polarity if metric == "hit3" else 1
                diff = _mean(ours, key) - _mean(runs, key)
                p = seed_test(_values(ours, key), _values(runs, key))
                verdict = "better" if diff * sign > 0 else "worse"
                p_text = f", p={p:.3f}" if np.isfinite(p) else ""
                parts.append(f"{metric.upper()} {head} {diff:+.4f} ({verdict}{p_text})")
        lines.append(f"- vs `{name}`: " + "; ".join(parts))
    return lines
