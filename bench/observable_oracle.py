"""How much of the synthetic oracle's lead can any model reach? An oracle without the intent.

The experiment tables' oracle scores every impression with the world's true probabilities,
which depend on the session's intent topics: drawn when the session starts, before any action
of it, and never logged. No model can know them; it can only infer them from the session's
outcomes so far. This diagnostic replays the demo world (same seed, same draws, same events)
and scores every impression three ways:

* ``oracle``: the true probabilities (the tables' ceiling);
* ``filtered``: the exact Bayesian posterior mean over the session's intent given everything
  else of the true state (topics, mixture, dislikes, satiation, recent engagements) and the
  outcomes of every earlier impression of the session: the best any model can do that knows
  the rest of the world perfectly, i.e. an upper bound for a realtime-sequence model;
* ``prior``: the same without the session's outcomes (the intent prior only).

Hides do not depend on the intent, so the three agree on the hide head. The engagement
probability with an intent boost ``b`` follows from the intent-free one:
``p_engage(b) = (1 - p_hide) * sigmoid(logit0 + b)`` with the save share unchanged, and the
likelihood of a request's outcomes under the hypothesis (primary ``p``, secondary ``s``) is
``const + A[p] + B[s]`` with per-topic sums, so the (T x (T + 1)) joint posterior updates by
broadcasting.

Run: ``python bench/observable_oracle.py [--users 1500 --days 14 --seed 0 --test-days 2]``
(about a minute); writes ``docs/bench/observable_oracle.json``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from transact.data.synthetic import simulate_chunk
from transact.data.synthetic_world import SyntheticWorld, UserState, WorldConfig
from transact.metrics import ranking_metrics
from transact.schema import DAY_MS, ActionType

HEADS = ("click", "save", "hide")


@dataclass
class FilteredState(UserState):
    """A :class:`UserState` with the log posterior over the session's intent,
    ``(B, T, T + 1)``: primary topic x secondary topic (the last column: none); ``log_post_eng``
    is the same posterior updated by the session's engagements only (skips ignored: what a
    sequence of engagements, ours and the paper's, can tell)."""

    log_post: np.ndarray | None = None
    log_post_eng: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> FilteredState:
        return FilteredState(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


class FilteringWorld(SyntheticWorld):
    """The same world; it also keeps every impression's intent-filtered probabilities."""

    def __init__(self, cfg: WorldConfig) -> None:
        super().__init__(cfg)
        self.records: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.boosts = np.array([0.0, cfg.secondary_intent_strength, cfg.intent_strength])

    def new_state(self, user_ids, day, params=None) -> FilteredState:
        base = super().new_state(user_ids, day, params)
        values = {f.name: getattr(base, f.name) for f in fields(base)}
        n_topics = self.n_topics
        shape = (len(base), n_topics, n_topics + 1)
        return FilteredState(**values, log_post=np.zeros(shape), log_post_eng=np.zeros(shape))

    def intent_prior(self, state: UserState) -> np.ndarray:
        """``(B, T, T + 1)`` prior over (primary, secondary | none) of a new session."""
        cfg = self.cfg
        liked = (~state.disliked).astype(np.float64)
        tempered = state.mixture ** cfg.intent_temperature
        primary = (cfg.intent_explore * liked / liked.sum(axis=1, keepdims=True)
                   + (1 - cfg.intent_explore) * tempered / tempered.sum(axis=1, keepdims=True))
        n_topics = self.n_topics
        others = np.repeat(tempered[:, None, :], n_topics, axis=1)  # (B, p, s)
        others[:, np.arange(n_topics), np.arange(n_topics)] = 0.0
        others += 1e-12 * liked[:, None, :]
        secondary = others / others.sum(axis=2, keepdims=True)
        joint = np.empty((len(state), n_topics, n_topics + 1))
        joint[:, :, :n_topics] = cfg.second_intent_prob * secondary
        joint[:, :, n_topics] = 1.0 - cfg.second_intent_prob
        return primary[:, :, None] * joint

    def start_session(self, state: FilteredState, rng) -> None:
        super().start_session(state, rng)
        state.log_post = np.log(np.maximum(self.intent_prior(state), 1e-300))
        state.log_post_eng = state.log_post.copy()

    def _boosted(self, state: UserState, item_ids: np.ndarray) -> np.ndarray:
        """``(3, B, S, 4)`` outcome probabilities with intent boost 0 / secondary / primary."""
        saved = state.intent_topics.copy()
        state.intent_topics[:] = -1
        base = super().engagement_probs(state, item_ids)
        state.intent_topics[:] = saved
        p_hide = base[..., 3]
        p_engage = base[..., 1] + base[..., 2]
        save_share = base[..., 2] / np.maximum(p_engage, 1e-300)
        logit0 = _logit(p_engage / np.maximum(1.0 - p_hide, 1e-300))
        out = []
        for boost in self.boosts:
            engage = (1.0 - p_hide) / (1.0 + np.exp(-(logit0 + boost)))
            save = engage * save_share
            out.append(np.stack([1.0 - p_hide - engage, engage - save, save, p_hide], -1))
        return np.stack(out)

    def engagement_probs(self, state: FilteredState, item_ids: np.ndarray) -> np.ndarray:
        truth = super().engagement_probs(state, item_ids)
        boosted = self._boosted(state, item_ids)  # (3, B, S, 4)
        topics = self.item_topic[np.asarray(item_ids, dtype=np.int64)]  # (B, S)
        rows = np.arange(len(state))[:, None]
        for name, log_post in (("filtered", state.log_post),
                               ("filtered_engagements", state.log_post_eng),
                               ("prior", np.log(np.maximum(self.intent_prior(state), 1e-300)))):
            post = np.exp(log_post - log_post.max(axis=(1, 2), keepdims=True))
            post /= post.sum(axis=(1, 2), keepdims=True)
            p_primary = post.sum(axis=2)[rows, topics]  # (B, S)
            p_secondary = post[:, :, : self.n_topics].sum(axis=1)[rows, topics]
            mean = (p_primary[..., None] * boosted[2] + p_secondary[..., None] * boosted[1]
                    + (1.0 - p_primary - p_secondary)[..., None] * boosted[0])
            # float32 like the recorded truth (p_hide has many exact ties; AUC counts them)
            setattr(state, f"_{name}", mean[..., 1:].astype(np.float32))
        state._pending = (topics, boosted)
        return truth

    def observe(self, state: FilteredState, item_ids: np.ndarray, actions: np.ndarray) -> None:
        topics, boosted = state._pending
        outcome = np.select([actions == ActionType.SKIP, actions == ActionType.CLICK,
                             actions == ActionType.SAVE], [0, 1, 2], 3)
        loglik = np.log(np.maximum(np.take_along_axis(
            boosted, np.broadcast_to(outcome[None, ..., None], boosted.shape[:-1] + (1,)),
            axis=-1)[..., 0], 1e-300))  # (3, B, S)
        n_users, n_topics = topics.shape[0], self.n_topics
        flat = (np.arange(n_users)[:, None] * n_topics + topics).ravel()
        engaged = (outcome != 0).astype(np.float64)  # (B, S)
        for log_post, weight in ((state.log_post, 1.0), (state.log_post_eng, engaged)):
            gain_primary = np.bincount(flat, ((loglik[2] - loglik[0]) * weight).ravel(),
                                       minlength=n_users * n_topics).reshape(n_users, n_topics)
            gain_secondary = np.bincount(flat, ((loglik[1] - loglik[0]) * weight).ravel(),
                                         minlength=n_users * n_topics).reshape(n_users,
                                                                               n_topics)
            log_post[:, :, :] += gain_primary[:, :, None]
            log_post[:, :, :n_topics] += gain_secondary[:, None, :]
        self.records.append((state.user_ids.copy(), state._filtered, state._prior,
                             state._filtered_engagements))
        super().observe(state, item_ids, actions)


def run(users: int, days: int, seed: int, test_days: int) -> dict[str, dict[str, float]]:
    cfg = WorldConfig(n_users=users, n_days=days, seed=seed).validate()
    world = FilteringWorld(cfg)
    scored: dict[str, list[np.ndarray]] = {"oracle": [], "filtered": [], "prior": [],
                                           "filtered_engagements": []}
    labels, requests, times = [], [], []
    next_request = 0
    for chunk in range(-(-cfg.n_users // cfg.users_per_chunk)):
        first = 1 + chunk * cfg.users_per_chunk
        user_ids = np.arange(first, min(first + cfg.users_per_chunk, cfg.n_users + 1))
        world.records = []
        events = simulate_chunk(world, user_ids, np.random.default_rng([cfg.seed, 2, chunk]),
                                record_truth=True)
        # simulate_chunk orders requests by (user, time): a stable sort of the step order
        step_users = np.concatenate([r[0] for r in world.records])
        order = np.argsort(step_users, kind="stable")
        scored["oracle"].append(events.true_probs)
        for k, name in ((1, "filtered"), (2, "prior"), (3, "filtered_engagements")):
            scored[name].append(np.concatenate([r[k] for r in world.records])[order]
                                .reshape(-1, 3))
        labels.append(np.stack([events.action_types == ActionType.CLICK,
                                events.action_types == ActionType.SAVE,
                                events.action_types == ActionType.HIDE], 1).astype(np.int8))
        requests.append(next_request + events.request_index)
        next_request += int(events.request_index[-1]) + 1
        times.append(events.timestamps_ms)
    when = np.concatenate(times)
    test = when >= cfg.start_ms + (days - test_days) * DAY_MS
    label = np.concatenate(labels)[test]
    request = np.concatenate(requests)[test]
    results = {}
    for name, parts in scored.items():
        probs = np.concatenate(parts)[test]
        metrics = ranking_metrics(request, probs, label)
        results[name] = {k: round(float(v), 4) for k, v in metrics.items()
                         if k.startswith(("auc_", "hit3_"))}
    results["test_impressions"] = {"n": int(test.sum())}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-days", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/observable_oracle.json"))
    args = parser.parse_args()
    results = run(args.users, args.days, args.seed, args.test_days)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, metrics in results.items():
        print(name, metrics)


if __name__ == "__main__":
    main()
