"""The synthetic world exhibits every phenomenon of SYNTHETIC_WORLD.md, measured on its data.

One module-scoped world (about 1,500 users x 10 days, ~0.35M events) is generated once; each
test measures one phenomenon on the written events with the ground truth from
:class:`SyntheticWorld` where a test needs it (true mixtures, disliked topics).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from transact.data.dataset import DatasetMeta, event_parts, read_events, read_items
from transact.data.synthetic import SyntheticWorld, WorldConfig, generate_world
from transact.errors import UserError
from transact.schema import DAY_MS, EVENT_SCHEMA, HOUR_MS, ITEM_SCHEMA, ActionType

SESSION_GAP_MS = 30 * 60 * 1000
REPO_ROOT = Path(__file__).resolve().parents[2]

WORLD_CFG = WorldConfig(n_users=1500, n_items=3000, n_topics=20, n_days=10, seed=7,
                        users_per_chunk=600)


@dataclass
class World:
    cfg: WorldConfig
    truth: SyntheticWorld
    meta: DatasetMeta
    dir: Path
    events: pd.DataFrame  # sorted (user, time, event_id) with topic/day/session/positive
    items: pd.DataFrame


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    out = tmp_path_factory.mktemp("synthetic") / "world"
    meta = generate_world(out, WORLD_CFG)
    truth = SyntheticWorld(WORLD_CFG)
    return World(WORLD_CFG, truth, meta, out, annotate(read_events(out).to_pandas(), truth),
                 read_items(out).to_pandas())


def annotate(events: pd.DataFrame, truth: SyntheticWorld) -> pd.DataFrame:
    """Add topic, day, session (30-minute gap), positive and hide columns to raw events."""
    events = events.sort_values(["user_id", "timestamp_ms", "event_id"]).reset_index(drop=True)
    user = events["user_id"].to_numpy()
    ts = events["timestamp_ms"].to_numpy()
    events["topic"] = truth.item_topic[events["item_id"].to_numpy()]
    events["day"] = (ts - truth.cfg.start_ms) // DAY_MS
    new_session = np.ones(len(events), dtype=bool)
    new_session[1:] = (user[1:] != user[:-1]) | (ts[1:] - ts[:-1] > SESSION_GAP_MS)
    events["session"] = np.cumsum(new_session)
    action = events["action_type"].to_numpy()
    events["positive"] = (action == ActionType.CLICK) | (action == ActionType.SAVE)
    events["hide"] = action == ActionType.HIDE
    return events


def mean_request_auc(events: pd.DataFrame, score: np.ndarray, label: np.ndarray) -> float:
    """Mean over requests (with a positive and a negative) of the AUC of ``score`` for
    ``label`` among the request's items; ties count one half."""
    frame = pd.DataFrame({"request": events["request_id"].to_numpy(), "score": score,
                          "label": label.astype(np.int64)})
    frame["rank"] = frame.groupby("request")["score"].rank(method="average")
    grouped = frame.groupby("request")
    n_pos = grouped["label"].sum()
    n_all = grouped["label"].size()
    rank_pos = frame["rank"].where(frame["label"] == 1, 0.0).groupby(frame["request"]).sum()
    n_neg = n_all - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    auc = (rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(auc[valid].mean())


def last_positive_index(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each event, the index (into the positives, in time order) of the user's latest
    positive engagement in the same session at an earlier request; -1 when none.

    Returns ``(index, positive_rows)`` where ``positive_rows`` are the event rows of positives.
    """
    positive_rows = np.flatnonzero(events["positive"].to_numpy())
    session = events["session"].to_numpy()
    ts = events["timestamp_ms"].to_numpy()
    key = session.astype(np.int64) * (1 << 40) + (ts - ts.min())
    idx = np.searchsorted(key[positive_rows], key, side="left") - 1
    valid = idx >= 0
    valid[valid] = session[positive_rows[idx[valid]]] == session[valid]
    return np.where(valid, idx, -1), positive_rows


def recent_topic_share(events: pd.DataFrame, window: int = 3) -> np.ndarray:
    """Share of the user's last ``window`` positive engagements in the same session (strictly
    before the event's request) whose topic equals the event's topic; (N,)."""
    idx, positive_rows = last_positive_index(events)
    session = events["session"].to_numpy()
    topic = events["topic"].to_numpy()
    hits = np.zeros(len(events))
    counts = np.zeros(len(events))
    for back in range(window):  # a loop over the window length, not over events
        j = idx - back
        valid = (idx >= 0) & (j >= 0)
        valid[valid] = session[positive_rows[j[valid]]] == session[valid]
        counts += valid
        hits[valid] += topic[positive_rows[j[valid]]] == topic[valid]
    return np.divide(hits, counts, out=np.zeros_like(hits), where=counts > 0)


def true_mixture_score(events: pd.DataFrame, truth: SyntheticWorld,
                       day: np.ndarray | int) -> np.ndarray:
    """Each event item's share in its user's true long-term mixture on ``day``; (N,)."""
    users, inverse = np.unique(events["user_id"].to_numpy(), return_inverse=True)
    days = np.broadcast_to(np.asarray(day), (len(events),))
    out = np.empty(len(events))
    for one_day in np.unique(days):  # few distinct days
        rows = np.flatnonzero(days == one_day)
        mixtures = truth.long_term_mixture(users, int(one_day))
        out[rows] = mixtures[inverse[rows], events["topic"].to_numpy()[rows]]
    return out


# --------------------------------------------------------------------------- phenomenon 1
def test_content_embeddings_cluster_by_topic_but_do_not_reveal_it(world: World) -> None:
    emb = np.stack(world.items["content_emb"].to_numpy()).astype(np.float64)
    topic = world.items["topic"].to_numpy()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(emb), (2, 20_000))
    distance = np.linalg.norm(emb[a] - emb[b], axis=1)
    same = topic[a] == topic[b]
    assert distance[same & (a != b)].mean() < 0.95 * distance[~same].mean()

    # nearest-centroid classifier fitted on half of the items, scored on the other half
    train = rng.random(len(emb)) < 0.5
    n_topics = world.cfg.n_topics
    centroids = np.stack([emb[train & (topic == t)].mean(axis=0) for t in range(n_topics)])
    predicted = np.argmin(((emb[~train, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float((predicted == topic[~train]).mean())
    chance = float(np.bincount(topic).max() / len(topic))
    assert accuracy > 3 * chance, accuracy
    assert accuracy < 0.9, f"embeddings reveal the topic almost exactly ({accuracy:.3f})"


# --------------------------------------------------------------------------- phenomenon 2
def test_long_term_mixture_beats_popularity_on_next_day(world: World) -> None:
    events = world.events
    last_day = world.cfg.n_days - 1
    history = events[events["day"] < last_day]
    target = events[events["day"] == last_day]
    popularity = np.bincount(history["item_id"], weights=history["positive"],
                             minlength=world.cfg.n_items + 1)
    label = target["positive"].to_numpy()
    auc_popularity = mean_request_auc(target, popularity[target["item_id"]], label)
    auc_mixture = mean_request_auc(
        target, true_mixture_score(target, world.truth, last_day - 1), label)
    assert auc_popularity > 0.5  # popularity is a real signal ...
    assert auc_mixture > auc_popularity + 0.05, (auc_mixture, auc_popularity)


# --------------------------------------------------------------------------- phenomenon 3
def test_recent_engagements_predict_the_next_engagement_beyond_the_mixture(
        world: World) -> None:
    events = world.events
    share = recent_topic_share(events)
    idx, _ = last_positive_index(events)
    has_recent = idx >= 0
    mixture = true_mixture_score(events, world.truth, events["day"].to_numpy())
    long_term = np.log(world.cfg.n_topics * mixture + 0.05)
    subset = events[has_recent]
    label = subset["positive"].to_numpy()
    auc_long_term = mean_request_auc(subset, long_term[has_recent], label)
    auc_with_recent = mean_request_auc(subset, long_term[has_recent] + 3.0 * share[has_recent],
                                       label)
    assert auc_with_recent > auc_long_term + 0.02, (auc_with_recent, auc_long_term)

    # intent changes between sessions: the last session's topics predict less than this one's
    positives = events[events["positive"]]
    first_topic = positives.groupby("session")["topic"].first()
    last_topic = positives.groupby("session")["topic"].last()
    users = positives.groupby("session")["user_id"].first()
    same_user_next = users.to_numpy()[1:] == users.to_numpy()[:-1]
    within = float((first_topic.to_numpy() == last_topic.to_numpy()).mean())
    across = float((last_topic.to_numpy()[:-1] == first_topic.to_numpy()[1:])[same_user_next]
                   .mean())
    assert within > across + 0.05, (within, across)


# --------------------------------------------------------------------------- phenomenon 4
def test_hides_concentrate_on_disliked_topics_and_follow_earlier_hides(world: World) -> None:
    events = world.events
    users, inverse = np.unique(events["user_id"].to_numpy(), return_inverse=True)
    disliked = world.truth.disliked_topics(users)[inverse, events["topic"].to_numpy()]
    hide = events["hide"].to_numpy()
    share_of_hides = float(disliked[hide].mean())
    share_of_impressions = float(disliked.mean())
    assert share_of_hides > 3 * share_of_impressions, (share_of_hides, share_of_impressions)
    positive = events["positive"].to_numpy()
    assert positive[disliked].mean() < 0.5 * positive[~disliked].mean()

    # earlier hides of the same topic in the same session (strictly earlier requests)
    per_request = (events.groupby(["session", "topic", "timestamp_ms"], sort=True)["hide"]
                   .sum().rename("request_hides").reset_index())
    per_request["earlier_hides"] = (per_request.groupby(["session", "topic"])["request_hides"]
                                    .cumsum() - per_request["request_hides"])
    merged = events.merge(per_request, on=["session", "topic", "timestamp_ms"], how="left")
    after_hide = merged["earlier_hides"].to_numpy() > 0
    assert after_hide.sum() > 200
    p_hide = float(hide.mean())
    p_hide_after = float(merged["hide"].to_numpy()[after_hide].mean())
    assert p_hide_after > 2 * p_hide, (p_hide_after, p_hide)
    # not only because the topic is disliked: within disliked topics too
    p_disliked = float(hide[disliked].mean())
    p_disliked_after = float(merged["hide"].to_numpy()[after_hide & disliked].mean())
    assert p_disliked_after > 1.3 * p_disliked, (p_disliked_after, p_disliked)


# --------------------------------------------------------------------------- phenomenon 5
def test_action_rates_are_realistic(world: World) -> None:
    action = world.events["action_type"].to_numpy()
    rate = {a: float((action == a).mean()) for a in ActionType if a is not ActionType.PAD}
    assert 0.82 <= rate[ActionType.SKIP] <= 0.92, rate
    assert 0.05 <= rate[ActionType.CLICK] <= 0.11, rate
    assert 0.01 <= rate[ActionType.SAVE] < rate[ActionType.CLICK], rate
    assert 0.005 <= rate[ActionType.HIDE] < rate[ActionType.SAVE], rate
    assert rate[ActionType.HIDE] <= 0.025, rate


# --------------------------------------------------------------------------- phenomenon 6
def test_satiation_lowers_engagement_after_a_run_of_same_topic_engagements(
        world: World) -> None:
    """Logged data: engagement rate with an item whose topic matches the current run of k
    consecutive same-topic engagements (same session). Users who reach long runs are the most
    interested ones, so the raw curve first rises (k = 1 -> 2, selection); from its peak on it
    must fall steadily and far."""
    events = world.events
    idx, positive_rows = last_positive_index(events)
    topic = events["topic"].to_numpy()
    session = events["session"].to_numpy()
    # streak: how many positives in a row (same session) share the topic, ending at each one
    pos_topic = topic[positive_rows]
    pos_session = session[positive_rows]
    continues = np.zeros(len(positive_rows), dtype=bool)
    continues[1:] = (pos_topic[1:] == pos_topic[:-1]) & (pos_session[1:] == pos_session[:-1])
    run_id = np.cumsum(~continues)
    streak = np.arange(len(positive_rows)) - np.flatnonzero(~continues)[run_id - 1] + 1
    has_last = idx >= 0
    same_topic = np.zeros(len(events), dtype=bool)
    same_topic[has_last] = pos_topic[idx[has_last]] == topic[has_last]
    k = np.where(same_topic, np.minimum(streak[np.maximum(idx, 0)], 5), 0)
    positive = events["positive"].to_numpy()
    rates = [float(positive[k == n].mean()) for n in range(1, 6)]  # k = 1, 2, 3, 4, 5+
    counts = [int((k == n).sum()) for n in range(1, 6)]
    assert min(counts) > 200, counts
    peak = int(np.argmax(rates))
    assert peak <= 1, rates
    assert all(np.diff(rates[peak:]) < 0), rates
    assert rates[-1] < 0.6 * rates[peak], rates


def test_an_over_narrow_ranking_loses_engagement_over_a_session(world: World) -> None:
    """The rabbit hole, with the response model a simulator uses: serve every user slates of
    its session's intent topic only (narrow) or of its liked topics in turn (diverse); the
    narrow feed starts higher and then loses engagement request after request."""
    truth = world.truth
    users = np.arange(1, 1001)
    rng = np.random.default_rng(1)
    n_requests, slate = 10, world.cfg.slate_size
    topic_items = [np.flatnonzero(truth.item_topic == t) for t in range(world.cfg.n_topics)]

    def run(narrow: bool) -> np.ndarray:
        state = truth.new_state(users, day=3)
        truth.start_session(state, rng)
        liked_order = np.argsort(-state.mixture, axis=1)[:, :5]  # top-5 liked topics
        rates = []
        for request in range(n_requests):
            topics = state.intent_topics[:, 0] if narrow else liked_order[:, request % 5]
            slates = np.stack([rng.choice(topic_items[t], slate, replace=False)
                               for t in topics])  # test harness: one slate per user
            actions = truth.respond(state, slates, rng)
            truth.observe(state, slates, actions)
            positive = (actions == ActionType.CLICK) | (actions == ActionType.SAVE)
            rates.append(positive.mean())
        return np.array(rates)

    narrow, diverse = run(True), run(False)
    assert narrow[0] > 2 * diverse[0], (narrow, diverse)  # the intent topic is the best bet
    assert narrow[-3:].mean() < 0.5 * narrow[:2].mean(), narrow  # ... but it satiates
    assert narrow[-3:].mean() < diverse[-3:].mean(), (narrow, diverse)  # below diverse at last
    assert diverse[-3:].mean() > 0.6 * diverse[:2].mean(), diverse


def test_simulator_api_serves_a_batch_request_by_request(world: World) -> None:
    truth = world.truth
    users = np.array([3, 1400, 77, 3])  # any order, repeats allowed
    state = truth.new_state(users, day=0)
    truth.set_day(state, 5)
    assert np.allclose(state.mixture, truth.long_term_mixture(users, 5))
    rng = np.random.default_rng(5)
    truth.start_session(state, rng)
    assert (state.intent_topics[:, 0] >= 0).all()
    assert not state.disliked[np.arange(4), state.intent_topics[:, 0]].any()
    for _ in range(3):
        slate = truth.logging_slate(state, rng)
        assert slate.shape == (4, world.cfg.slate_size)
        probs = truth.engagement_probs(state, slate)
        assert np.allclose(probs.sum(-1), 1.0) and (probs >= 0).all()
        actions = truth.respond(state, slate, rng)
        assert set(np.unique(actions)) <= {1, 2, 3, 4}
        truth.observe(state, slate, actions)
    # a hide makes the next item of its topic likelier to be hidden (fatigue)
    item = np.array([[1]] * 4)
    before = truth.engagement_probs(state, item)[..., 3]
    truth.observe(state, item, np.full((4, 1), ActionType.HIDE, dtype=np.int8))
    assert (truth.engagement_probs(state, item)[..., 3] > before).all()
    with pytest.raises(UserError):
        truth.long_term_mixture(np.array([world.cfg.n_users + 1]), 0)


def test_satiation_in_the_response_model_alone(world: World) -> None:
    truth = world.truth
    state = truth.new_state(np.arange(1, 65), day=0)
    truth.start_session(state, np.random.default_rng(0))
    items = np.tile(np.arange(1, 9), (64, 1))
    fresh = truth.engagement_probs(state, items)[..., 1:3].sum(-1)
    state.satiation += 3.0
    tired = truth.engagement_probs(state, items)[..., 1:3].sum(-1)
    assert (tired < fresh).all()


# --------------------------------------------------------------------------- phenomenon 7
def test_interests_drift_and_an_early_model_decays(world: World) -> None:
    users = np.arange(1, world.cfg.n_users + 1)
    start = world.truth.long_term_mixture(users, 0)
    end = world.truth.long_term_mixture(users, world.cfg.n_days - 1)
    total_variation = 0.5 * np.abs(start - end).sum(axis=1)
    assert total_variation.mean() > 0.3, total_variation.mean()

    events = world.events
    fit = events[events["day"] <= 2]
    n_topics = world.cfg.n_topics
    counts = np.bincount(fit["user_id"] * n_topics + fit["topic"], weights=fit["positive"],
                         minlength=(world.cfg.n_users + 1) * n_topics)
    preference = (counts.reshape(-1, n_topics) + 0.1)
    preference /= preference.sum(axis=1, keepdims=True)

    def auc_on(days: list[int]) -> float:
        target = events[events["day"].isin(days)]
        score = preference[target["user_id"], target["topic"]]
        return mean_request_auc(target, score, target["positive"].to_numpy())

    last = world.cfg.n_days - 1
    early, late = auc_on([3, 4]), auc_on([last - 1, last])
    assert early > late + 0.02, (early, late)


# --------------------------------------------------------------------------- phenomenon 8
def test_events_are_sorted_unique_and_valid(world: World) -> None:
    meta = world.meta
    assert meta.source == "synthetic"
    assert meta.n_parts == -(-world.cfg.n_users // world.cfg.users_per_chunk)
    assert DatasetMeta.read(world.dir) == meta
    assert pq.read_schema(world.dir / "items.parquet").remove_metadata().equals(ITEM_SCHEMA)
    assert world.items["item_id"].tolist() == list(range(1, world.cfg.n_items + 1))
    assert (world.items["topic"].to_numpy() == world.truth.item_topic[1:]).all()
    seen_users: set[int] = set()
    n_events = 0
    for part in event_parts(world.dir):
        table = pq.read_table(part)
        assert table.schema.remove_metadata().equals(EVENT_SCHEMA)
        frame = table.to_pandas()
        n_events += len(frame)
        keys = frame[["user_id", "timestamp_ms", "event_id"]].to_numpy()
        order = np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0]))
        assert (order == np.arange(len(frame))).all(), "part not sorted"
        users = set(np.unique(frame["user_id"]).tolist())
        assert not users & seen_users, "a user spans two parts"
        seen_users |= users
    events = world.events
    assert n_events == meta.n_events == len(events)
    assert events["event_id"].is_unique
    assert set(np.unique(events["action_type"])) == {1, 2, 3, 4}
    assert events["item_id"].between(1, world.cfg.n_items).all()
    assert set(events["surface"].unique()) <= {"homefeed", "related", "search"}
    assert (events["surface"] == "homefeed").mean() > 0.7
    per_request = events.groupby("request_id").agg(
        users=("user_id", "nunique"), times=("timestamp_ms", "nunique"),
        size=("item_id", "size"), distinct=("item_id", "nunique"))
    assert (per_request["users"] == 1).all() and (per_request["times"] == 1).all()
    assert (per_request["size"] == world.cfg.slate_size).all()
    assert (per_request["distinct"] == per_request["size"]).all(), "repeated item in a slate"
    # the next request of a session comes seconds later
    request_times = events.groupby("request_id")[["user_id", "timestamp_ms", "session"]].first()
    gaps = np.diff(request_times["timestamp_ms"].to_numpy())
    same_session = np.diff(request_times["session"].to_numpy()) == 0
    assert gaps[same_session].min() >= 1000
    assert np.median(gaps[same_session]) < 60_000
    start, end = world.cfg.start_ms, world.cfg.start_ms + (world.cfg.n_days + 1) * DAY_MS
    assert events["timestamp_ms"].between(start, end).all()
    hours = (events["timestamp_ms"] // HOUR_MS) % 24
    assert hours.isin([19, 20, 21]).mean() > 2 * hours.isin([2, 3, 4]).mean()


def _digest(directory: Path) -> dict[str, str]:
    files = [directory / "items.parquet", *event_parts(directory)]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_same_seed_same_bytes_other_seed_other_world(tmp_path: Path) -> None:
    cfg = WorldConfig(n_users=300, n_items=500, n_days=3, users_per_chunk=128, seed=3)
    generate_world(tmp_path / "a", cfg)
    generate_world(tmp_path / "b", cfg)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    other = WorldConfig(**{**cfg.__dict__, "seed": 4})
    generate_world(tmp_path / "c", other)
    first, third = _digest(tmp_path / "a"), _digest(tmp_path / "c")
    assert all(first[name] != third[name] for name in first)
    # a user's truth depends on the seed and its id only, not on the chunking
    rechunked = SyntheticWorld(WorldConfig(**{**cfg.__dict__, "users_per_chunk": 7}))
    users = np.array([5, 130, 299])
    assert np.array_equal(rechunked.long_term_mixture(users, 2),
                          SyntheticWorld(cfg).long_term_mixture(users, 2))


_MEMORY_PROBE = """
import json, resource, sys
from transact.data.synthetic import WorldConfig, generate_world
cfg = WorldConfig(n_users=int(sys.argv[2]), n_items=3000, n_days=7, users_per_chunk=2500)
meta = generate_world(sys.argv[1], cfg)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "events": meta.n_events}))
"""


@pytest.mark.slow
def test_peak_memory_is_set_by_the_chunk_not_the_user_count(tmp_path: Path) -> None:
    def probe(n_users: int) -> dict[str, float]:
        done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(tmp_path / str(n_users)),
                               str(n_users)], capture_output=True, text=True, check=True,
                              cwd=REPO_ROOT, timeout=300)
        return json.loads(done.stdout.strip().splitlines()[-1])

    small, large = probe(2_500), probe(10_000)
    assert large["events"] > 3.5 * small["events"]
    # holding all events would add ~60 B x 3 x (large - small events), i.e. > 100 MB here
    assert large["rss_mb"] < small["rss_mb"] * 1.15 + 10, (small, large)


# ---------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("change", [
    {"n_users": 0}, {"n_items": 5, "n_topics": 20}, {"slate_size": 0}, {"n_topics": 1},
    {"drift_rate": -0.1}, {"embedding_noise": float("nan")}, {"second_intent_prob": 1.5},
    {"start_date": "01/11/2026"}, {"users_per_chunk": 2.5}, {"n_disliked_topics": 19},
    {"policy_popularity": 0.0, "policy_interest": 0.0, "policy_recent": 0.0,
     "policy_random": 0.0}, {"requests_per_session": 0.5}, {"seed": -1},
])
def test_bad_configs_raise_user_errors(change: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError):
        generate_world(tmp_path / "w", WorldConfig(**change))
    assert not (tmp_path / "w").exists()


def test_unknown_config_fields_are_named() -> None:
    with pytest.raises(UserError, match="n_user"):
        WorldConfig.from_dict({"n_user": 10})


# --------------------------------------------------------------------------- the oracle
def test_truth_holds_each_impressions_probabilities_and_they_predict_outcomes(
        world: World, tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    truth = pd.concat([pd.read_parquet(p) for p in sorted((world.dir / "truth").glob("*.parquet"))])
    events = world.events
    assert len(truth) == len(events)
    joined = events.merge(truth, on=["request_id", "item_id"], how="left", validate="1:1")
    probs = joined[["p_click", "p_save", "p_hide"]].to_numpy()
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs.sum(axis=1) <= 1 + 1e-6).all()
    # the outcomes were drawn from these probabilities: they rank them far above chance
    for column, action in (("p_click", ActionType.CLICK), ("p_save", ActionType.SAVE),
                           ("p_hide", ActionType.HIDE)):
        assert roc_auc_score(joined["action_type"] == int(action), joined[column]) > 0.7
    # recording the truth does not change the world
    quiet = generate_world(tmp_path / "no_truth",
                           WorldConfig.from_dict({**asdict(WORLD_CFG), "record_truth": False}))
    assert not (tmp_path / "no_truth" / "truth").exists()
    assert quiet.n_events == world.meta.n_events
    assert read_events(tmp_path / "no_truth").equals(read_events(world.dir))
