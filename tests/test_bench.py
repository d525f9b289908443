"""Benchmarks check what they claim and leave their raw results as JSON (no timing asserted)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
TINY = ["--candidates", "8", "--repeats", "1", "--train-steps", "1", "--batch-size", "8"]


@pytest.fixture
def bench_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


def test_model_bench_writes_its_raw_results(bench_module, tmp_path):
    bench_model = bench_module("bench_model")
    out = tmp_path / "model.json"
    assert bench_model.main([*TINY, "--json-out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["benchmark"] == "model" and record["arguments"]["candidates"] == 8
    assert isinstance(record["commit"], str) and record["machine"]["cpus"] >= 1
    result = record["result"]
    assert result["parity_ok"] and set(result["max_abs_diff"]) == {"plain", "shared"}
    assert set(result["latency_ms"]) == {"ours", "plain", "shared"}
    assert set(result["train_examples_per_s"]) == {"full_100", "uniform_0_100"}


def test_model_bench_fails_when_the_formulations_disagree(bench_module, tmp_path, monkeypatch,
                                                          capsys):
    bench_model = bench_module("bench_model")
    forward = bench_model.PlainTransformerEncoder.forward
    monkeypatch.setattr(bench_model.PlainTransformerEncoder, "forward",
                        lambda self, *args: forward(self, *args) + 0.01)
    out = tmp_path / "model.json"
    assert bench_model.main([*TINY, "--json-out", str(out)]) == 1
    result = json.loads(out.read_text())["result"]
    assert not result["parity_ok"] and result["parity_failures"][0].startswith("plain:")
    assert result["latency_ms"] == {}  # no latencies of models that compute something else
    assert "PARITY FAILED" in capsys.readouterr().err


def test_parity_failures_name_each_formulation_over_the_tolerance(bench_module):
    bench_model = bench_module("bench_model")
    assert bench_model.parity_failures({"plain": 1e-6, "shared": 0.0}, 1e-4) == []
    failures = bench_model.parity_failures({"plain": 1e-6, "shared": float("nan")}, 1e-4)
    assert len(failures) == 1 and failures[0].startswith("shared:")


@pytest.mark.slow
def test_threads_bench_measures_each_thread_count_and_load(bench_module, tmp_path):
    bench_threads = bench_module("bench_threads")
    out = tmp_path / "threads.json"
    assert bench_threads.main(["--threads", "1", "2", "--busy", "0", "1", "--train-steps", "1",
                               "--batch-size", "8", "--json-out", str(out)]) == 0
    rows = json.loads(out.read_text())["result"]["rows"]
    assert [(r["busy_processes"], r["threads"]) for r in rows] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert all(r["step_s"] > 0 for r in rows)
    assert [r["slowdown_vs_fewest_threads"] for r in rows][::2] == [1.0, 1.0]


def test_observable_oracle_replays_the_same_world_and_orders_the_ceilings(bench_module):
    """The filtering replay draws exactly the world's events; the oracle that knows the
    session's intent beats the one that infers it, which beats the intent prior; hides do not
    depend on the intent."""
    import numpy as np

    from transact.data.synthetic import simulate_chunk
    from transact.data.synthetic_world import SyntheticWorld, WorldConfig

    oracle = bench_module("observable_oracle")
    cfg = WorldConfig(n_users=300, n_days=4, seed=5).validate()
    users = np.arange(1, 301)
    plain = simulate_chunk(SyntheticWorld(cfg), users, np.random.default_rng(1),
                           record_truth=True)
    replay = simulate_chunk(oracle.FilteringWorld(cfg), users, np.random.default_rng(1),
                            record_truth=True)
    np.testing.assert_array_equal(plain.item_ids, replay.item_ids)
    np.testing.assert_array_equal(plain.action_types, replay.action_types)
    np.testing.assert_array_equal(plain.true_probs, replay.true_probs)

    results = oracle.run(users=600, days=6, seed=5, test_days=2)
    for head in ("click", "save"):
        key = f"auc_{head}"
        assert results["oracle"][key] > results["filtered"][key] > results["prior"][key]
        # the session's skips are evidence too: engagements alone infer less of the intent
        assert results["filtered"][key] > results["filtered_engagements"][key] > \
            results["prior"][key]
    assert results["oracle"]["auc_hide"] == results["filtered"]["auc_hide"]


def test_cluster_purity_is_one_for_separated_topics_and_low_for_noise(bench_module):
    cluster_purity = bench_module("cluster_purity")
    rng = np.random.default_rng(0)
    topic = np.repeat(np.arange(4), 50)
    centres = np.eye(8)[:4] * 5.0
    separated = centres[topic] + rng.normal(scale=0.1, size=(200, 8))
    shown = rng.integers(1, 10, size=200).astype(float)
    assert cluster_purity.purity(separated, topic, shown, 4, 3, 100) == (1.0, 1.0)
    plain, weighted = cluster_purity.purity(rng.normal(size=(200, 8)), topic, shown, 4, 3, 100)
    assert plain < 0.6 and weighted < 0.6


def test_hide_breakdown_measures_what_it_names(bench_module):
    """The hide analysis: bucket AUCs split the rows, the leave-one-out bias score ranks a
    split whose hides are a per-user trait, and the user bootstrap spreads around the AUC."""
    hide = bench_module("hide_breakdown")
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60), 20)
    items = rng.integers(0, 30, len(users))
    harsh = users % 3 == 0  # a third of the users hide half of what they see
    labels = (rng.random(len(users)) < np.where(harsh, 0.5, 0.05)).astype(np.float64)
    assert hide.bias_ceiling(labels, users, items) > 0.75
    shuffled = rng.permutation(labels)  # no user trait left: the same score ranks at chance
    assert abs(hide.bias_ceiling(shuffled, users, items) - 0.5) < 0.1

    scores = labels + rng.normal(0, 1.0, len(labels))
    earlier = np.tile(np.arange(20) * 10, 60)
    buckets = hide.auc_by_history(labels, scores, earlier)
    assert [b["from"] for b in buckets] == [0, 1, 20, 100]
    assert abs(sum(b["share"] for b in buckets) - 1.0) < 1e-3
    spread = hide.user_bootstrap(labels, scores, users, draws=50, seed=0)
    whole = hide.auc(labels, scores)
    assert spread["low"] < whole < spread["high"] and 0 < spread["std"] < 0.1


def test_seed_ensemble_averages_away_seed_noise(bench_module):
    """Runs that each add independent noise to the same signal: every single run ranks
    worse than the average of their logits, and the report says so per head."""
    ensemble = bench_module("seed_ensemble")
    rng = np.random.default_rng(0)
    labels = (rng.random((4000, 2)) < 0.3).astype(np.float32)
    signal = labels * 1.0
    probs = {seed: 1 / (1 + np.exp(-(signal + rng.normal(0, 1.5, signal.shape))))
             for seed in range(4)}
    report = ensemble.ensemble_report(labels, probs, ["a", "b"])
    assert report["seeds"] == [0, 1, 2, 3] and set(report["per_seed"]) == {"0", "1", "2", "3"}
    for head in range(2):
        assert report["ensemble_of_4"][head] > max(v[head] for v in report["per_seed"].values())
        assert report["ensemble_of_4"][head] > report["ensemble_of_2"][head]
    assert all(0 < s < 0.05 for s in report["single_std"])
    one_class = np.zeros((10, 1), np.float32)
    assert np.isnan(ensemble.head_aucs(one_class, np.random.default_rng(1).random((10, 1)))[0])
