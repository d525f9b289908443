"""The online simulator's mechanics with stand-in rankers (no model training): logs and actions
line up, sequences grow from the actions, retraining happens on its weekdays, and a narrow
ranker measures less diverse than a varied one."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.config import MonitoringConfig
from monitoring.logs import join_actions
from monitoring.pipeline import ItemCatalogue, run_monitoring
from monitoring.simulator import SimulatorConfig, simulate
from transact.data.synthetic_world import SyntheticWorld, WorldConfig
from transact.model.features import ExampleArrays
from transact.schema import HEADS, SEQ_LEN, USER_EMB_DIM, ActionType


def starting_examples(n_users: int, t_ms: int) -> ExampleArrays:
    n = n_users
    z = np.zeros((n, SEQ_LEN), np.int64)
    return ExampleArrays(
        request_id=np.arange(n, dtype=np.int64), user_id=np.arange(1, n + 1, dtype=np.int64),
        item_id=np.ones(n, np.int64), request_time_ms=np.full(n, t_ms, np.int64),
        surface_id=np.ones(n, np.int64), labels=np.zeros((n, len(HEADS)), np.float32),
        seq_item_ids=z, seq_action_types=z.copy(), seq_timestamps_ms=z.copy(),
        user_batch_emb=np.zeros((n, USER_EMB_DIM), np.float32),
        user_weight=np.ones(n, np.float32))


class TopicRanker:
    """Scores items of ``topics`` high (ties broken by a fixed random score)."""

    def __init__(self, world: SyntheticWorld, topics: list[int], version: str) -> None:
        self.world, self.topics, self.version = world, topics, version
        self.noise = np.random.default_rng(0).random(len(world.item_topic))
        self.calls = 0
        self.sequence_lengths: list[int] = []

    def score(self, user_id, seq, user_emb, candidates, request_time_ms, counts=None) -> np.ndarray:
        self.calls += 1
        self.sequence_lengths.append(int((seq[1] > 0).sum()))
        assert (seq[2][seq[1] > 0] < request_time_ms).all()  # never a future action
        good = np.isin(self.world.item_topic[candidates], self.topics)
        p = 0.02 + 0.3 * good + 0.01 * self.noise[candidates]
        return np.stack([p, p / 2, np.full_like(p, 0.001)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(n_users=40, n_items=400, n_topics=8, n_days=3, seed=3))


def test_simulation_logs_actions_sequences_and_retrains_on_schedule(world) -> None:
    cfg = SimulatorConfig(n_users=12, n_days=5, requests_per_day=2, n_candidates=30,
                          retrain_weekdays=[3], seed=1)  # days 3..7: Wed..Sun; Thu = day 4
    known = np.ones(len(world.item_topic), bool)
    retrained_at: list[int] = []

    def retrainer(rows: ExampleArrays, now_ms: int) -> TopicRanker:
        retrained_at.append(now_ms)
        assert len(rows) == 12 * 2 * cfg.slate_size  # the one day before, with labels
        assert set(np.unique(rows.labels.sum(axis=1))) <= {0.0, 1.0}
        return TopicRanker(world, list(range(8)), "v2")

    ranker = TopicRanker(world, [0, 1], "v1")
    result = simulate(cfg, world, ranker, starting_examples(12, world.cfg.start_ms),
                      known, world.cfg.start_ms, retrainer)
    day_ms = 86_400_000
    assert retrained_at == [world.cfg.start_ms + 4 * day_ms]
    assert result.promoted_at_ms == {"v1": world.cfg.start_ms + 3 * day_ms,
                                     "v2": world.cfg.start_ms + 4 * day_ms}
    shown = result.shown.to_pandas()
    assert len(shown) == 12 * 5 * 2 * cfg.slate_size
    assert set(shown["model_version"]) == {"v1", "v2"}
    assert (shown.groupby("request_id")["position"].apply(list)
            .map(lambda p: p == list(range(cfg.slate_size))).all())
    assert len(result.events) == len(shown)  # one outcome per impression, skips included
    joined = join_actions(shown, result.events, attribution_window_ms=60_000)
    outcome = result.events.set_index(["request_id", "item_id"])["action_type"]
    expect = outcome.loc[list(zip(joined["request_id"], joined["item_id"], strict=True))]
    assert (joined["clicked"].to_numpy() == (expect.to_numpy() == int(ActionType.CLICK))).all()
    # the sequences grow with the users' click / save / hide actions
    assert ranker.sequence_lengths[0] == 0 and max(ranker.sequence_lengths) > 0


def test_a_narrow_ranker_is_measured_less_diverse(world, tmp_path) -> None:
    cfg = SimulatorConfig(n_users=12, n_days=2, requests_per_day=3, n_candidates=60, seed=2)
    known = np.ones(len(world.item_topic), bool)
    catalogue = ItemCatalogue(world.content_emb, world.item_topic)
    figures = {}
    for name, topics in (("narrow", [0]), ("varied", list(range(8)))):
        result = simulate(cfg, world, TopicRanker(world, topics, name),
                          starting_examples(12, world.cfg.start_ms), known, world.cfg.start_ms)
        mon = MonitoringConfig(metrics_url=f"sqlite:///{tmp_path}/{name}.db")
        report = run_monitoring(mon, result.shown, result.events, catalogue,
                                result.promoted_at_ms, origin_ms=world.cfg.start_ms)
        figures[name] = report.windows.mean(numeric_only=True)
    assert figures["narrow"]["topic_entropy"] < figures["varied"]["topic_entropy"] - 1.0
    assert figures["narrow"]["intra_list_diversity"] < figures["varied"]["intra_list_diversity"]
