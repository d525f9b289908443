"""The online simulator: simulated users of the synthetic world ask a ranker for slates, act on
them by the world's ground truth (interests drift over days), and their actions flow back into
their realtime sequences; a retraining schedule can retrain the model in simulated time.

Per simulated day ``d`` (after the training data), every simulated user has one session of
``requests_per_day`` requests. A request: ``n_candidates`` candidates (half drawn by item
popularity, half uniformly: a stand-in retrieval stage), scored by the ranker, the top
``slate_size`` by utility shown; :meth:`SyntheticWorld.respond` draws what the user does,
:meth:`SyntheticWorld.observe` updates the user's truth state, and the click / save / hide
actions enter the user's sequence (newest first, stamped just after the request). Everything
is logged as the serving log (:data:`monitoring.logs.SERVING_LOG_SCHEMA`) and the action
stream (:data:`transact.schema.EVENT_SCHEMA`, skips included).

Rankers: :class:`EngineRanker` (in-process, serving's :class:`~serving.engine.RankingEngine`,
the default: a 2-core machine cannot also carry an HTTP server per arm) and
:class:`HttpRanker` (the real endpoint: ``POST /rank`` then ``POST /events``).

Retraining (``retrain_weekdays``, e.g. Monday and Thursday as the DAG's cron): at the start of
such a day the model is retrained from scratch with the same configuration on the newest
``retrain_window_days`` of data (the original examples in that window plus the simulated
impressions, each with the sequence the ranker saw), and promoted at that simulated time.
This calls the training library in-process (``training.train.train_model``), not the Airflow
DAG: same library, no scheduler.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from monitoring.logs import serving_log_table
from transact.schema import DAY_MS, HEADS, HOUR_MS, SEQ_LEN, USER_EMB_DIM, ActionType

#: simulated time between two requests of one session
REQUEST_GAP_MS = HOUR_MS // 120

__all__ = ["EndpointError", "EngineRanker", "HttpRanker", "SimulationResult", "SimulatorConfig",
           "Slate", "UserSequences", "events_frame", "simulate"]

_SEQUENCE_CODES = (int(ActionType.CLICK), int(ActionType.SAVE), int(ActionType.HIDE))


@dataclass
class SimulatorConfig:
    """Size, schedule and seeds of one simulated run."""

    n_users: int = 150
    #: first simulated day (world day index); -1: the day after the world's data
    start_day: int = -1
    n_days: int = 10
    requests_per_day: int = 3
    n_candidates: int = 60
    slate_size: int = 8
    #: feed the realtime sequence to the ranker (False: always an empty sequence)
    realtime: bool = True
    #: weekdays (0 = Monday) on which the model is retrained before the day starts
    retrain_weekdays: list[int] = field(default_factory=list)
    retrain_window_days: int = 7
    retrain_max_rows: int = 40_000
    retrain_steps: int | None = None
    #: utility weights per head (the serving default)
    utility: dict[str, float] = field(
        default_factory=lambda: {"click": 1.0, "save": 2.0, "hide": -4.0})
    session_hour: float = 19.0
    seed: int = 0


class Ranker(Protocol):
    """Scores candidates for one request; ``version`` names the model that answered."""

    version: str

    def score(self, user_id: int, seq: tuple[np.ndarray, np.ndarray, np.ndarray],
              user_emb: np.ndarray, candidates: np.ndarray, request_time_ms: int,
              counts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray: ...


@dataclass
class EngineRanker:
    """In-process scoring with serving's engine: probabilities ``(C, H)``."""

    engine: Any
    version: str

    def score(self, user_id: int, seq: tuple[np.ndarray, np.ndarray, np.ndarray],
              user_emb: np.ndarray, candidates: np.ndarray, request_time_ms: int,
              counts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """``counts``: the candidates' ``(C, 4)`` and the user's ``(4,)`` engagement
        counters (what the online store would hold; read by a model that uses them)."""
        from serving.engine import RequestInputs

        item_counts, user_counts = counts if counts is not None else (None, None)
        return self.engine.score(RequestInputs(
            seq_item_ids=seq[0], seq_action_types=seq[1], seq_timestamps_ms=seq[2],
            request_time_ms=request_time_ms, user_emb=user_emb,
            candidate_item_ids=candidates, surface_id=1, item_counts=item_counts,
            user_counts=user_counts))


@dataclass
class Slate:
    """What one ranking request showed: the items in shown order, their per-head
    probabilities ``(k, H)`` and utilities, and the answering model; ``request_id`` and
    ``sequence_length`` when an endpoint answered (its own request id, the length of the
    realtime sequence it read from the online store)."""

    items: np.ndarray
    probs: np.ndarray
    utility: np.ndarray
    version: str
    request_id: int | None = None
    sequence_length: int | None = None


class EndpointError(RuntimeError):
    """The ranking endpoint answered an error (status and message in the text)."""


@dataclass
class HttpRanker:
    """The real endpoint (``transact serve``): :meth:`rank` is one ``POST {url}/rank`` with
    ``top_k = slate_size``, so the slate the server returns (and writes to its serving log) is
    exactly what the simulated user sees; :meth:`send_events` posts the user's outcomes —
    clicks, saves, hides *and* skips, with the server's request ids — to ``POST /events``
    (the stream → processor → online store feed the next ``/rank``).

    The realtime sequence and the batch embedding come from the server's online store: the
    ``seq`` / ``user_emb`` arguments are ignored."""

    url: str
    version: str = "http"
    timeout_s: float = 120.0
    requests: int = 0

    def _post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        import urllib.error

        req = urllib.request.Request(self.url.rstrip("/") + route, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as err:
            raise EndpointError(f"POST {route} answered {err.code}: "
                                f"{err.read()[:500].decode(errors='replace')}") from err

    def rank(self, user_id: int, candidates: np.ndarray, request_time_ms: int, k: int
             ) -> Slate:
        answer = self._post("/rank", {"user_id": int(user_id),
                                      "candidates": [int(c) for c in candidates],
                                      "request_time_ms": int(request_time_ms), "top_k": int(k)})
        self.requests += 1
        self.version = str(answer["model_version"])
        items = answer["items"]
        return Slate(items=np.array([int(it["item_id"]) for it in items], np.int64),
                     probs=np.array([[float(it["scores"][h]) for h in HEADS] for it in items],
                                    np.float32).reshape(len(items), len(HEADS)),
                     utility=np.array([float(it["utility"]) for it in items], np.float32),
                     version=self.version, request_id=int(answer["request_id"]),
                     sequence_length=int(answer["sequence_length"]))

    def score(self, user_id: int, seq: tuple[np.ndarray, np.ndarray, np.ndarray],
              user_emb: np.ndarray, candidates: np.ndarray, request_time_ms: int,
              counts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Probabilities ``(C, H)`` of every candidate (one ``/rank`` with all of them; the
        server reads the counters from its own online store)."""
        slate = self.rank(user_id, candidates, request_time_ms, len(candidates))
        by_item = {int(i): p for i, p in zip(slate.items, slate.probs, strict=True)}
        return np.array([by_item[int(c)] for c in candidates], np.float32)

    def send_events(self, events: pa.Table | pd.DataFrame, batch: int = 1000) -> int:
        """``POST /events`` in batches of ``batch`` (the server's ``max_events``); returns the
        number appended."""
        frame = events.to_pandas() if isinstance(events, pa.Table) else events
        cols = ["event_id", "user_id", "item_id", "action_type", "timestamp_ms", "surface",
                "request_id"]
        rows = [{c: (v if c == "surface" else int(v)) for c, v in zip(cols, row, strict=True)}
                for row in frame[cols].itertuples(index=False)]
        appended = 0
        for start in range(0, len(rows), batch):
            appended += int(self._post("/events", {"events": rows[start:start + batch]})
                            ["appended"])
        return appended


@dataclass
class UserSequences:
    """Each simulated user's realtime sequence ``(U, SEQ_LEN)`` (newest first, zero-padded)
    and frozen batch embedding ``(U, USER_EMB_DIM)``."""

    item_ids: np.ndarray
    action_types: np.ndarray
    timestamps_ms: np.ndarray
    user_emb: np.ndarray

    @classmethod
    def empty(cls, n_users: int) -> UserSequences:
        z = np.zeros((n_users, SEQ_LEN), np.int64)
        return cls(z, z.copy(), z.copy(), np.zeros((n_users, USER_EMB_DIM), np.float32))

    def push(self, row: int, items: np.ndarray, codes: np.ndarray, times: np.ndarray) -> None:
        """Prepend actions given oldest first."""
        keep = np.isin(codes, _SEQUENCE_CODES)
        items, codes, times = items[keep][::-1], codes[keep][::-1], times[keep][::-1]
        k = len(items)
        if k == 0:
            return
        for arr, new in ((self.item_ids, items), (self.action_types, codes),
                         (self.timestamps_ms, times)):
            arr[row] = np.concatenate([new.astype(np.int64), arr[row][:SEQ_LEN - k]])[:SEQ_LEN]


@dataclass
class EngagementTally:
    """The simulation's running engagement counters (what the stream processor keeps online):
    ``items`` ``(n_items + 1, 4)`` and ``users`` ``(U, 4)`` int64 in
    :data:`transact.data.counters.COUNTER_NAMES` order."""

    items: np.ndarray
    users: np.ndarray

    @classmethod
    def from_examples(cls, examples: Any, user_ids: np.ndarray, n_items: int) -> EngagementTally:
        """Start from the newest counters the examples carry (zeros where they carry none):
        per item the largest (counts only grow), per user its newest row's."""
        items = np.zeros((n_items + 1, 4), np.int64)
        users = np.zeros((len(user_ids), 4), np.int64)
        item_counts = np.asarray(examples.item_counts, np.int64)
        has = (item_counts >= 0).all(axis=1) & (examples.item_id <= n_items)
        if has.any():
            np.maximum.at(items, examples.item_id[has], item_counts[has])
        user_counts = np.asarray(examples.user_counts, np.int64)
        order = np.lexsort((examples.request_time_ms, examples.user_id))
        last = order[np.r_[examples.user_id[order][1:] != examples.user_id[order][:-1], True]]
        row_of = {int(u): int(r) for u, r in zip(examples.user_id[last], last, strict=True)}
        for i, user in enumerate(user_ids.tolist()):
            r = row_of.get(int(user))
            if r is not None and (user_counts[r] >= 0).all():
                users[i] = user_counts[r]
        return cls(items, users)

    def add(self, row: int, items: np.ndarray, codes: np.ndarray) -> None:
        """Count one user's impressions ``items`` ``(S,)`` with outcomes ``codes``."""
        for col, code in enumerate((None, ActionType.CLICK, ActionType.SAVE, ActionType.HIDE)):
            hit = np.ones(len(items), bool) if code is None else codes == int(code)
            np.add.at(self.items[:, col], items[hit], 1)
            self.users[row, col] += int(hit.sum())


@dataclass
class SimulationResult:
    """The run's serving log, action stream, promotions and per-request sequences."""

    shown: pa.Table
    events: pd.DataFrame
    promoted_at_ms: dict[str, int]
    seconds: float
    retrains: list[dict[str, Any]] = field(default_factory=list)
    #: per request: ``request_id, user_id, request_time_ms, sequence_length`` (the length the
    #: endpoint read from its online store; -1 in process)
    requests: pd.DataFrame = field(default_factory=pd.DataFrame)


def _initial_sequences(examples: Any, user_ids: np.ndarray) -> UserSequences:
    """The newest example row of each user gives its sequence and batch embedding."""
    seqs = UserSequences.empty(len(user_ids))
    order = np.lexsort((examples.request_time_ms, examples.user_id))
    last = order[np.r_[examples.user_id[order][1:] != examples.user_id[order][:-1], True]]
    row_of = {int(u): int(r) for u, r in zip(examples.user_id[last], last, strict=True)}
    for i, user in enumerate(user_ids.tolist()):
        r = row_of.get(int(user))
        if r is None:
            continue
        seqs.item_ids[i] = examples.seq_item_ids[r]
        seqs.action_types[i] = examples.seq_action_types[r]
        seqs.timestamps_ms[i] = examples.seq_timestamps_ms[r]
        seqs.user_emb[i] = examples.user_batch_emb[r]
    return seqs


#: ``scheduler(day, day_ms, events_so_far)``: called before each simulated day with the
#: action stream so far; returns ``None`` or a record of what ran (e.g. a DAG run) with
#: ``"promoted_version"`` / ``"promoted_at_ms"`` when a new model now serves
Scheduler = Callable[[int, int, pd.DataFrame], "dict[str, Any] | None"]


def simulate(cfg: SimulatorConfig, world: Any, ranker: Ranker, examples: Any,
             item_table_known: np.ndarray, start_ms: int,
             retrainer: Callable[[Any, int], Ranker] | None = None,
             progress: Callable[[str], None] | None = None, *,
             feedback: Callable[[pd.DataFrame], None] | None = None,
             scheduler: Scheduler | None = None,
             user_ids: np.ndarray | None = None) -> SimulationResult:
    """Run ``cfg`` on ``world`` (:class:`~transact.data.synthetic_world.SyntheticWorld`).

    ``examples`` (:class:`~transact.model.features.ExampleArrays`) give the simulated users
    (the ``n_users`` with the newest rows, or ``user_ids``) their starting sequence and batch
    embedding; ``item_table_known`` ``(n_items + 1,)`` bool marks items the ranker can score;
    ``start_ms`` is day 0 of the world (its ``start_date``). ``retrainer(rows, now_ms)``
    returns the new ranker on a retraining day (``rows``: the simulated impressions so far,
    as ``ExampleArrays``).

    A ranker with a ``rank(user_id, candidates, request_time_ms, k) -> Slate`` method (the
    endpoint, :class:`HttpRanker`) chooses the slate itself; otherwise the simulator takes the
    top ``slate_size`` of ``score`` by utility. ``feedback(events)`` receives each request
    round's outcomes (every impression, skips included, with the request ids) as soon as the
    users acted — the endpoint mode posts them to ``/events`` and runs the stream processor;
    ``scheduler`` runs before each day (the retraining DAG in simulated time).
    """
    from transact.model.features import ExampleArrays

    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    if user_ids is None:
        users_all = np.unique(examples.user_id)
        newest = pd.Series(examples.request_time_ms).groupby(examples.user_id).max()
        user_ids = (newest.sort_values(ascending=False).index.to_numpy()[: cfg.n_users]
                    if len(users_all) > cfg.n_users else users_all)
    user_ids = np.sort(np.asarray(user_ids)).astype(np.int64)
    seqs = _initial_sequences(examples, user_ids)
    tally = EngagementTally.from_examples(examples, user_ids, len(world.popularity) - 1)
    if not cfg.realtime:
        seqs = UserSequences(np.zeros_like(seqs.item_ids), np.zeros_like(seqs.action_types),
                             np.zeros_like(seqs.timestamps_ms), seqs.user_emb)
    first_day = world.cfg.n_days if cfg.start_day < 0 else cfg.start_day
    known = np.flatnonzero(item_table_known[: len(world.popularity)])
    known = known[known > 0]
    pop = world.popularity[known] / world.popularity[known].sum()
    weights = np.array([cfg.utility.get(h, 0.0) for h in HEADS], np.float32)
    state = world.new_state(user_ids, first_day)
    shown_cols: dict[str, list[Any]] = {n: [] for n in ("request_id", "user_id", "item_id",
                                                        "position", "utility", "model_version",
                                                        "request_time_ms", *(
                                                            f"score_{h}" for h in HEADS))}
    event_rows: list[np.ndarray] = []
    train_rows: list[dict[str, Any]] = []
    request_rows: list[tuple[int, int, int, int]] = []
    promoted = {ranker.version: start_ms + first_day * DAY_MS}
    retrains: list[dict[str, Any]] = []
    request_id, event_id = 10**12, 10**12
    start_date = dt.date.fromisoformat(str(world.cfg.start_date))
    for day in range(first_day, first_day + cfg.n_days):
        day_ms = start_ms + day * DAY_MS
        weekday = (start_date + dt.timedelta(days=day)).weekday()
        if scheduler is not None:
            so_far = events_frame(event_rows)
            record = scheduler(day, day_ms, so_far)
            if record is not None:
                retrains.append(record)
                if record.get("promoted_version"):
                    promoted.setdefault(str(record["promoted_version"]),
                                        int(record.get("promoted_at_ms", day_ms)))
        if retrainer is not None and weekday in cfg.retrain_weekdays and train_rows:
            t0 = time.perf_counter()
            rows = ExampleArrays.concat([r["rows"] for r in train_rows])
            ranker = retrainer(rows, day_ms)
            promoted.setdefault(ranker.version, day_ms)
            retrains.append({"day": day, "version": ranker.version,
                             "seconds": round(time.perf_counter() - t0, 1)})
            if progress:
                progress(f"  day {day}: retrained -> {ranker.version} "
                         f"({retrains[-1]['seconds']} s)")
        world.set_day(state, day)
        world.start_session(state, rng)
        for r in range(cfg.requests_per_day):
            now = day_ms + int(cfg.session_hour * HOUR_MS) + r * REQUEST_GAP_MS
            slates = np.zeros((len(user_ids), cfg.slate_size), np.int64)
            round_ids = np.zeros(len(user_ids), np.int64)
            for i, user in enumerate(user_ids.tolist()):
                n_pop = cfg.n_candidates // 2
                cands = np.unique(np.concatenate([
                    rng.choice(known, size=n_pop, p=pop),
                    rng.choice(known, size=cfg.n_candidates - n_pop)]))
                seq = (seqs.item_ids[i], seqs.action_types[i], seqs.timestamps_ms[i])
                if hasattr(ranker, "rank"):
                    slate: Slate = ranker.rank(user, cands, now, cfg.slate_size)
                else:
                    probs = np.asarray(ranker.score(
                        user, seq, seqs.user_emb[i], cands, now,
                        counts=(tally.items[cands], tally.users[i])), np.float32)
                    utility = probs @ weights
                    top = np.argsort(-utility, kind="stable")[: cfg.slate_size]
                    slate = Slate(cands[top], probs[top], utility[top], ranker.version)
                if len(slate.items) != cfg.slate_size:
                    raise EndpointError(f"the ranker returned {len(slate.items)} items, "
                                        f"expected {cfg.slate_size}")
                slates[i] = slate.items
                request_id += 1
                rid = request_id if slate.request_id is None else slate.request_id
                round_ids[i] = rid
                request_rows.append((rid, int(user), now, -1 if slate.sequence_length is None
                                     else slate.sequence_length))
                s = len(slate.items)
                shown_cols["request_id"] += [rid] * s
                shown_cols["user_id"] += [user] * s
                shown_cols["item_id"] += slate.items.tolist()
                shown_cols["position"] += list(range(s))
                shown_cols["utility"] += slate.utility.tolist()
                shown_cols["model_version"] += [slate.version] * s
                shown_cols["request_time_ms"] += [now] * s
                for j, h in enumerate(HEADS):
                    shown_cols[f"score_{h}"] += slate.probs[:, j].tolist()
                if retrainer is not None:
                    train_rows.append({"day": day, "user_row": i, "request_id": rid,
                                       "now": now, "items": slate.items, "seq": tuple(
                                           a.copy() for a in seq), "emb": seqs.user_emb[i],
                                       "item_counts": tally.items[slate.items],
                                       "user_counts": tally.users[i].copy()})
            actions = world.respond(state, slates, rng)
            world.observe(state, slates, actions)
            first_row = len(event_rows)
            for i, user in enumerate(user_ids.tolist()):
                times = now + 1_000 + np.arange(cfg.slate_size, dtype=np.int64)
                ids = event_id + np.arange(cfg.slate_size)
                event_id += cfg.slate_size
                event_rows.append(np.stack([ids, np.full(cfg.slate_size, user), slates[i],
                                            actions[i].astype(np.int64), times,
                                            np.full(cfg.slate_size, round_ids[i])], axis=1))
                tally.add(i, slates[i], actions[i].astype(np.int64))
                if cfg.realtime:
                    seqs.push(i, slates[i], actions[i].astype(np.int64), times)
                if retrainer is not None:
                    train_rows[-len(user_ids) + i]["actions"] = actions[i].astype(np.int64)
            if feedback is not None:
                feedback(events_frame(event_rows[first_row:]))
        # keep only the training rows a retrain can use, as compact example arrays
        _compact(train_rows, day - cfg.retrain_window_days + 1)
        if progress:
            progress(f"  day {day}: {len(user_ids) * cfg.requests_per_day} requests "
                     f"({time.perf_counter() - started:.0f} s)")
    n = len(shown_cols["request_id"])
    shown = serving_log_table({**{k: np.asarray(v) for k, v in shown_cols.items()
                                  if k not in ("model_version",)},
                               "position": np.asarray(shown_cols["position"], np.int32),
                               "model_version": shown_cols["model_version"],
                               "surface": ["homefeed"] * n})
    requests = pd.DataFrame(request_rows, columns=["request_id", "user_id", "request_time_ms",
                                                   "sequence_length"])
    return SimulationResult(shown, events_frame(event_rows), promoted,
                            time.perf_counter() - started, retrains, requests)


def events_frame(event_rows: list[np.ndarray]) -> pd.DataFrame:
    """The action stream (:data:`transact.schema.EVENT_SCHEMA` columns) of ``event_rows``."""
    ev = np.concatenate(event_rows) if event_rows else np.zeros((0, 6), np.int64)
    events = pd.DataFrame(ev, columns=["event_id", "user_id", "item_id", "action_type",
                                       "timestamp_ms", "request_id"])
    events["surface"] = "homefeed"
    return events


def _compact(train_rows: list[dict[str, Any]], oldest_day: int) -> None:
    """Turn finished request dicts into one ``ExampleArrays`` per day; drop days before
    ``oldest_day`` (in place)."""
    from transact.model.features import ExampleArrays

    raw = [r for r in train_rows if "actions" in r]
    done = [r for r in train_rows if "rows" in r and r["day"] >= oldest_day]
    if raw:
        s = len(raw[0]["items"])
        n = len(raw) * s
        labels = np.zeros((n, len(HEADS)), np.float32)
        acts = np.concatenate([r["actions"] for r in raw])
        for j, code in enumerate((ActionType.CLICK, ActionType.SAVE, ActionType.HIDE)):
            labels[:, j] = acts == int(code)
        rep = np.repeat
        rows = ExampleArrays(
            request_id=rep([r["request_id"] for r in raw], s).astype(np.int64),
            user_id=np.zeros(n, np.int64),
            item_id=np.concatenate([r["items"] for r in raw]).astype(np.int64),
            request_time_ms=rep([r["now"] for r in raw], s).astype(np.int64),
            surface_id=np.ones(n, np.int64), labels=labels,
            seq_item_ids=rep(np.stack([r["seq"][0] for r in raw]), s, axis=0),
            seq_action_types=rep(np.stack([r["seq"][1] for r in raw]), s, axis=0),
            seq_timestamps_ms=rep(np.stack([r["seq"][2] for r in raw]), s, axis=0),
            user_batch_emb=rep(np.stack([r["emb"] for r in raw]), s, axis=0),
            user_weight=np.ones(n, np.float32),
            item_counts=np.concatenate([r["item_counts"] for r in raw]).astype(np.int32),
            user_counts=rep(np.stack([r["user_counts"] for r in raw]), s,
                            axis=0).astype(np.int32))
        done.append({"day": raw[0]["day"], "rows": rows})
    train_rows[:] = done


def retrainer_for(model_config: Any, item_table: np.ndarray, item_representation: str,
                  base_examples: Any, cfg: SimulatorConfig, engine_cfg: Any = None,
                  seed: int = 0) -> Callable[[Any, int], EngineRanker]:
    """A retrainer: trains a fresh model of ``model_config`` on the newest
    ``retrain_window_days`` of ``base_examples`` + the simulated rows, validates on the newest
    10 % of requests, and returns an :class:`EngineRanker` named ``retrain-<day>``."""
    from serving.engine import RankingEngine
    from training.train import TrainConfig, TrainData, train_model

    def retrain(sim_rows: Any, now_ms: int) -> EngineRanker:
        from transact.model.features import ExampleArrays

        lo = now_ms - cfg.retrain_window_days * DAY_MS
        base = base_examples.take(np.flatnonzero((base_examples.request_time_ms >= lo)
                                                 & (base_examples.request_time_ms < now_ms)))
        rows = ExampleArrays.concat([base, sim_rows])
        rows = rows.take(np.argsort(rows.request_time_ms, kind="stable")[-cfg.retrain_max_rows:])
        requests = np.unique(rows.request_id)
        cut_time = np.quantile(rows.request_time_ms, 0.9)
        val_mask = rows.request_time_ms >= cut_time
        if val_mask.all() or not val_mask.any():
            val_mask = np.isin(rows.request_id, requests[-max(1, len(requests) // 10):])
        data = TrainData(train=rows.take(np.flatnonzero(~val_mask)),
                         val=rows.take(np.flatnonzero(val_mask)), test=None,
                         item_table=item_table, item_representation=item_representation)
        tcfg = TrainConfig(model=copy.deepcopy(model_config), seed=seed, max_epochs=1,
                           max_steps=cfg.retrain_steps, max_eval_requests=1_000)
        model = train_model(tcfg, data).model
        day = (now_ms // DAY_MS)
        return EngineRanker(RankingEngine(model, item_table, engine_cfg), f"retrain-{day}")

    return retrain


def read_world_examples(examples_dir: Path | str) -> Any:
    """Every split of an examples directory as one ``ExampleArrays`` (train, val, test)."""
    from transact.model.features import ExampleArrays, read_examples

    examples_dir = Path(examples_dir)
    return ExampleArrays.concat([read_examples(examples_dir / s) for s in ("train", "val", "test")
                                 if (examples_dir / s).is_dir()])
