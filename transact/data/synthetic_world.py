"""The ground truth of the synthetic Pinterest-like world: items, users and how users respond.

Everything the generator (:func:`transact.data.synthetic.generate_world`) and a later online
simulator need lives here, so both use the same mechanics:

* :class:`WorldConfig` — every knob of the world, validated (bad values raise
  :class:`~transact.errors.UserError`).
* :class:`SyntheticWorld` — the truth: item topics, content vectors and quality; each user's
  long-term topic mixture on any day (deterministic per user id, computed in fixed blocks of
  users so nothing scales with ``n_users``); the logging policy; the response model.
* :class:`UserState` — the per-user state the response model reads (long-term mixture of the
  day, session intent, recent engagement topics, satiation, in-session hides, disliked topics).

A simulator serves a batch of users request by request::

    world = SyntheticWorld(cfg)
    state = world.new_state(user_ids, day=np.full(len(user_ids), 10))
    rng = np.random.default_rng(0)
    world.start_session(state, rng)
    for _ in range(n_requests):
        slate = my_ranker(state.user_ids)                 # (B, S) item ids
        actions = world.respond(state, slate, rng)        # (B, S) ActionType codes
        world.observe(state, slate, actions)              # updates intent/satiation/hides

The mechanics (all documented in ``docs/synthetic_world.md``):

* Items belong to topics; ``content_emb = centroid[topic] + noise`` (32-d), so the embedding
  clusters by topic without revealing it exactly. Item quality ``q ~ N(0, 1)`` sets a heavy-tailed
  (log-normal) popularity ``exp(popularity_sigma * q)``.
* Users hold two Dirichlet mixtures over topics, ``theta_start`` and ``theta_end``; the long-term
  mixture on day ``d`` is ``(1 - w_d) theta_start + w_d theta_end`` with
  ``w_d = 1 - exp(-drift_rate * d)``: new topics rise, old ones fade. Each user dislikes
  ``n_disliked_topics`` topics, which hold no interest mass.
* A session leans to one or two intent topics drawn from the day's mixture (or, with
  ``intent_explore``, any liked topic); intent changes between sessions.
* An impression's outcome (skip / click / save / hide) is drawn from logits that add the
  long-term affinity, the session intent, the share of the last ``recent_window`` positive
  engagements in the item's topic, item quality, minus satiation (recent same-topic engagements)
  and in-session hides of the topic; the hide logit rises on disliked topics and after a hide of
  the same topic in the session (fatigue).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from transact.errors import UserError
from transact.schema import DAY_MS, HOUR_MS, ITEM_EMB_DIM, ActionType

#: Users' ground-truth parameters are drawn in fixed blocks of this many consecutive user ids,
#: so the truth of any user is computable without generating all users before it.
USER_BLOCK = 1024

#: Names of the first topics (more topics are called ``topic-NN``).
TOPIC_NAMES: tuple[str, ...] = (
    "recipes", "home decor", "fashion", "travel", "diy crafts", "gardening", "fitness",
    "hair & beauty", "weddings", "art", "photography", "cars", "tattoos", "quotes", "kids",
    "pets", "architecture", "tech", "humor", "makeup", "baking", "camping", "nails", "anime",
)

#: Relative number of sessions starting in each UTC hour (a daily rhythm with morning, lunch
#: and evening peaks; little at night).
HOUR_PROFILE = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 3.2, 2.6, 2.2, 2.4,
     3.0, 2.6, 2.2, 2.2, 2.4, 2.8, 3.4, 4.2, 4.6, 4.2, 3.0, 1.8],
    dtype=np.float64,
)

#: Surfaces a request can come from, with the share of requests.
SURFACE_NAMES: tuple[str, ...] = ("homefeed", "related", "search")


def topic_name(topic: int) -> str:
    return TOPIC_NAMES[topic] if topic < len(TOPIC_NAMES) else f"topic-{topic:02d}"


@dataclass
class WorldConfig:
    """Knobs of the synthetic world. Defaults give a small demo world (about 0.5M events)."""

    n_users: int = 2_000
    n_items: int = 5_000
    n_topics: int = 20
    n_days: int = 14
    #: first day of the world, ``YYYY-MM-DD`` (UTC midnight)
    start_date: str = "2026-11-01"
    seed: int = 0

    # --- activity -------------------------------------------------------------------------
    #: mean sessions per user per day (per-user activity varies log-normally around it)
    sessions_per_day: float = 0.8
    max_sessions_per_day: int = 4
    #: mean requests per session (1 + Poisson(mean - 1), capped)
    requests_per_session: float = 4.0
    max_requests_per_session: int = 12
    #: items per request (impressions per request)
    slate_size: int = 8
    #: log-normal sigma of per-user activity
    activity_sigma: float = 0.5
    #: seconds between requests in a session: min + exponential(mean)
    min_request_gap_s: float = 4.0
    mean_request_gap_s: float = 20.0
    #: share of requests from the "related" and "search" surfaces (the rest: homefeed)
    related_share: float = 0.10
    search_share: float = 0.05

    # --- items ----------------------------------------------------------------------------
    #: norm of the per-item noise added to the unit-norm topic centroid
    embedding_noise: float = 2.2
    #: Dirichlet concentration of topic sizes (large = equal topic sizes)
    topic_size_concentration: float = 5.0
    #: log-normal sigma of item popularity (heavy tail)
    popularity_sigma: float = 1.3

    # --- users ----------------------------------------------------------------------------
    #: Dirichlet concentration of users' topic mixtures (small = few topics per user)
    interest_concentration: float = 0.25
    #: speed at which the long-term mixture moves from its start to its end point, per day
    drift_rate: float = 0.12
    #: number of topics each user dislikes (hides concentrate there)
    n_disliked_topics: int = 2

    # --- response model (logits) ----------------------------------------------------------
    base_logit: float = -3.4
    affinity_weight: float = 0.35
    quality_weight: float = 0.25
    #: logit boost of the session's primary / secondary intent topic
    intent_strength: float = 2.4
    secondary_intent_strength: float = 1.2
    #: probability that a session has a second intent topic
    second_intent_prob: float = 0.5
    #: probability that a session's primary intent is any liked topic (exploration)
    intent_explore: float = 0.15
    #: intent topics are drawn from ``mixture ** intent_temperature`` (< 1 spreads sessions
    #: over more of the user's topics than the long-term mixture itself)
    intent_temperature: float = 0.35
    #: logit boost times the share of the last ``recent_window`` positive engagements in the topic
    recent_strength: float = 1.2
    recent_window: int = 5
    #: logit penalty per unit of satiation of the item's topic (satiation grows by 1 per
    #: engagement of the topic and decays per request / session)
    satiation_strength: float = 1.2
    #: satiation below this level costs nothing (one engagement does not tire a user)
    satiation_free: float = 1.5
    satiation_decay_request: float = 0.9
    satiation_decay_session: float = 0.25
    #: logit of a save (vs a click) given an engagement
    save_logit: float = -1.5
    save_affinity_weight: float = 0.35
    hide_base_logit: float = -5.6
    #: hide logit boost on the user's disliked topics
    hide_dislike_boost: float = 3.6
    #: hide logit boost per earlier hide of the same topic in the session (capped at 2 hides)
    hide_fatigue_boost: float = 1.4
    #: hide logit boost when the item's topic has little long-term affinity
    hide_low_affinity_boost: float = 0.8
    #: engagement logit penalty on disliked topics and per in-session hide of the topic
    dislike_engage_penalty: float = 2.5
    hide_engage_penalty: float = 1.0

    # --- logging policy (shares of the slate) ---------------------------------------------
    policy_popularity: float = 0.25
    policy_interest: float = 0.40
    policy_recent: float = 0.15
    policy_random: float = 0.20

    # --- streaming ------------------------------------------------------------------------
    users_per_chunk: int = 10_000
    #: also write every impression's true click / save / hide probabilities
    #: (``truth/part-*.parquet``): the oracle that experiment tables report as the ceiling
    record_truth: bool = True

    def validate(self) -> WorldConfig:
        """Raise :class:`UserError` naming the first bad value; return ``self`` when all fine."""
        positive_ints = ("n_users", "n_items", "n_topics", "n_days", "max_sessions_per_day",
                         "max_requests_per_session", "slate_size", "users_per_chunk",
                         "recent_window")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise UserError(f"WorldConfig.{name} must be a positive integer, got {value!r}")
        if self.n_topics < 2:
            raise UserError(f"WorldConfig.n_topics must be at least 2, got {self.n_topics}")
        if self.n_items < self.n_topics:
            raise UserError(f"WorldConfig.n_items ({self.n_items}) must be at least n_topics "
                            f"({self.n_topics}) so every topic has an item")
        if self.slate_size > self.n_items:
            raise UserError(f"WorldConfig.slate_size ({self.slate_size}) exceeds n_items "
                            f"({self.n_items}); a slate holds distinct items")
        if not 0 <= self.n_disliked_topics <= self.n_topics - 2:
            raise UserError(f"WorldConfig.n_disliked_topics must be in [0, n_topics - 2] "
                            f"= [0, {self.n_topics - 2}], got {self.n_disliked_topics}")
        non_negative = ("sessions_per_day", "activity_sigma", "min_request_gap_s",
                        "mean_request_gap_s", "embedding_noise", "popularity_sigma",
                        "drift_rate", "intent_strength", "secondary_intent_strength",
                        "recent_strength", "satiation_strength", "hide_dislike_boost",
                        "hide_fatigue_boost", "policy_popularity", "policy_interest",
                        "policy_recent", "policy_random", "related_share", "search_share")
        for name in non_negative:
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise UserError(f"WorldConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("topic_size_concentration", "interest_concentration"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise UserError(f"WorldConfig.{name} must be > 0, got {value!r}")
        if self.requests_per_session < 1:
            raise UserError(f"WorldConfig.requests_per_session is a mean number of requests and "
                            f"must be >= 1, got {self.requests_per_session}")
        for name in ("second_intent_prob", "intent_explore", "satiation_decay_request",
                     "satiation_decay_session"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"WorldConfig.{name} is a probability/factor in [0, 1], "
                                f"got {value!r}")
        if self.related_share + self.search_share > 1:
            raise UserError("WorldConfig.related_share + search_share must be <= 1")
        policy = (self.policy_popularity + self.policy_interest + self.policy_recent
                  + self.policy_random)
        if policy <= 0:
            raise UserError("WorldConfig.policy_* shares are all zero; give the logging policy "
                            "at least one source of items")
        if not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise UserError(f"WorldConfig.seed must be a non-negative integer, got {self.seed!r}")
        _ = self.start_ms  # parses the date or raises
        longest_session_s = self.max_requests_per_session * (self.min_request_gap_s
                                                             + 20 * self.mean_request_gap_s)
        if self.max_sessions_per_day * longest_session_s > 0.5 * DAY_MS / 1000:
            raise UserError("WorldConfig: max_sessions_per_day x max_requests_per_session x "
                            "request gaps do not fit in a day; lower one of them")
        return self

    @property
    def start_ms(self) -> int:
        """Epoch ms of UTC midnight of ``start_date``."""
        try:
            day = _dt.date.fromisoformat(str(self.start_date))
        except ValueError:
            raise UserError(f"WorldConfig.start_date must be YYYY-MM-DD, got {self.start_date!r}")
        start = _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.UTC)
        return int(start.timestamp() * 1000)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WorldConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown WorldConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values).validate()


@dataclass
class UserParams:
    """Ground-truth parameters of a batch of ``B`` users over ``T`` topics."""

    theta_start: np.ndarray  # (B, T) float64 long-term mixture on day 0
    theta_end: np.ndarray  # (B, T) float64 the point the mixture drifts towards
    disliked: np.ndarray  # (B, T) bool
    activity: np.ndarray  # (B,) float64 multiplier of sessions per day


@dataclass
class UserState:
    """What the response model reads for a batch of ``B`` users (``T`` topics, window ``W``).

    The generator and an online simulator hold one of these per batch of users and update it
    with :meth:`SyntheticWorld.start_session` and :meth:`SyntheticWorld.observe`.
    """

    user_ids: np.ndarray  # (B,) int64
    day: np.ndarray  # (B,) int64 day index since start_date
    mixture: np.ndarray  # (B, T) float64 long-term mixture on ``day``
    disliked: np.ndarray  # (B, T) bool
    intent_topics: np.ndarray  # (B, 2) int64 primary/secondary intent, -1 = none
    recent_topics: np.ndarray  # (B, W) int64 topics of the latest positive engagements, newest
    # first, -1 = padding
    satiation: np.ndarray  # (B, T) float64
    session_hides: np.ndarray  # (B, T) float64 hides per topic in the current session

    def take(self, rows: np.ndarray) -> UserState:
        """A copy holding the users at ``rows``."""
        return UserState(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def put(self, rows: np.ndarray, part: UserState) -> None:
        """Write ``part`` (as returned by :meth:`take`) back at ``rows``."""
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(part, f.name)

    def __len__(self) -> int:
        return len(self.user_ids)


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit))


def _sample_rows(cum_probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Categorical draws: ``cum_probs`` (B, K) row-wise cumulative, ``uniforms`` (B, N) → (B, N)."""
    totals = cum_probs[:, -1:]
    scaled = uniforms * totals
    picks = (scaled[:, :, None] >= cum_probs[:, None, :]).sum(axis=2)
    return np.minimum(picks, cum_probs.shape[1] - 1)


class SyntheticWorld:
    """The ground truth of a world built from a :class:`WorldConfig` (deterministic by seed).

    Item arrays are indexed by item id (row 0 is padding): ``item_topic`` (n_items + 1,) int64
    (-1 at 0), ``content_emb`` (n_items + 1, 32) float32, ``item_quality`` and
    ``popularity`` (n_items + 1,) float64. ``topic_centroids`` is (T, 32).
    """

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg.validate()
        self.n_topics = cfg.n_topics
        rng = np.random.default_rng([cfg.seed, 0])
        n_items, n_topics = cfg.n_items, cfg.n_topics

        centroids = rng.standard_normal((n_topics, ITEM_EMB_DIM))
        self.topic_centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        # topic sizes: every topic gets one item, the rest by a Dirichlet share
        shares = rng.dirichlet(np.full(n_topics, cfg.topic_size_concentration))
        sizes = 1 + rng.multinomial(n_items - n_topics, shares)
        topics = rng.permutation(np.repeat(np.arange(n_topics), sizes))
        self.item_topic = np.concatenate([[-1], topics]).astype(np.int64)
        noise = rng.standard_normal((n_items, ITEM_EMB_DIM)) * (
            cfg.embedding_noise / np.sqrt(ITEM_EMB_DIM))
        emb = self.topic_centroids[topics] + noise
        self.content_emb = np.zeros((n_items + 1, ITEM_EMB_DIM), dtype=np.float32)
        self.content_emb[1:] = emb
        quality = rng.standard_normal(n_items)
        self.item_quality = np.concatenate([[0.0], quality])
        self.popularity = np.concatenate([[0.0], np.exp(cfg.popularity_sigma * quality)])

        # samplers: global popularity CDF; per-topic popularity CDFs laid out so that
        # searchsorted(topic + u) finds an item of ``topic`` proportional to its popularity
        self._pop_cdf = np.cumsum(self.popularity[1:]) / self.popularity[1:].sum()
        by_topic = np.lexsort((np.arange(n_items), topics))
        self._topic_sorted_items = by_topic + 1
        sorted_topics = topics[by_topic]
        sorted_pop = self.popularity[1:][by_topic]
        topic_totals = np.bincount(sorted_topics, weights=sorted_pop, minlength=n_topics)
        within = np.cumsum(sorted_pop) - np.concatenate(
            [[0.0], np.cumsum(topic_totals)[:-1]])[sorted_topics]
        self._topic_keys = sorted_topics + within / topic_totals[sorted_topics]
        self._topic_keys[np.r_[np.flatnonzero(np.diff(sorted_topics)), n_items - 1]] = (
            np.arange(n_topics) + 1.0)  # exact 1.0 at each topic's last item
        self._hour_cdf = np.cumsum(HOUR_PROFILE) / HOUR_PROFILE.sum()

    # ----------------------------------------------------------------------------- users
    def user_params(self, user_ids: np.ndarray) -> UserParams:
        """Ground-truth parameters of ``user_ids`` (B,) → :class:`UserParams` with (B, T) arrays.

        Users are drawn in blocks of :data:`USER_BLOCK` ids with a generator seeded by
        ``(seed, 1, block)``, so a user's truth depends only on the seed and its id.
        """
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if user_ids.size and (user_ids.min() < 1 or user_ids.max() > self.cfg.n_users):
            raise UserError(f"user ids must be in [1, {self.cfg.n_users}]")
        blocks = (user_ids - 1) // USER_BLOCK
        out = UserParams(
            theta_start=np.empty((len(user_ids), self.n_topics)),
            theta_end=np.empty((len(user_ids), self.n_topics)),
            disliked=np.empty((len(user_ids), self.n_topics), dtype=bool),
            activity=np.empty(len(user_ids)),
        )
        for block in np.unique(blocks):  # a loop over blocks of 1024 users, not over users
            rows = np.flatnonzero(blocks == block)
            params = self._block_params(int(block))
            offsets = (user_ids[rows] - 1) % USER_BLOCK
            out.theta_start[rows] = params.theta_start[offsets]
            out.theta_end[rows] = params.theta_end[offsets]
            out.disliked[rows] = params.disliked[offsets]
            out.activity[rows] = params.activity[offsets]
        return out

    def _block_params(self, block: int) -> UserParams:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1, block])
        alpha = np.full(self.n_topics, cfg.interest_concentration)
        theta_start = rng.dirichlet(alpha, size=USER_BLOCK)
        theta_end = rng.dirichlet(alpha, size=USER_BLOCK)
        # disliked topics: random among the topics with the least start interest
        keys = rng.random((USER_BLOCK, self.n_topics)) + 4.0 * theta_start
        order = np.argsort(keys, axis=1)
        disliked = np.zeros((USER_BLOCK, self.n_topics), dtype=bool)
        np.put_along_axis(disliked, order[:, : cfg.n_disliked_topics], True, axis=1)
        theta_start = self._renormalise(theta_start, disliked)
        theta_end = self._renormalise(theta_end, disliked)
        activity = np.exp(cfg.activity_sigma * rng.standard_normal(USER_BLOCK)
                          - 0.5 * cfg.activity_sigma**2)
        return UserParams(theta_start, theta_end, disliked, activity)

    @staticmethod
    def _renormalise(theta: np.ndarray, disliked: np.ndarray) -> np.ndarray:
        theta = np.where(disliked, 0.0, theta + 1e-4)
        return theta / theta.sum(axis=1, keepdims=True)

    def drift_weight(self, day: np.ndarray | int) -> np.ndarray:
        """Weight of the end mixture on ``day``: ``1 - exp(-drift_rate * day)``."""
        return 1.0 - np.exp(-self.cfg.drift_rate * np.asarray(day, dtype=np.float64))

    def mixture_from_params(self, params: UserParams, day: np.ndarray | int) -> np.ndarray:
        """Long-term mixtures (B, T) on ``day`` (scalar or (B,)) from :class:`UserParams`."""
        weight = np.broadcast_to(self.drift_weight(day), params.activity.shape)[:, None]
        return (1.0 - weight) * params.theta_start + weight * params.theta_end

    def long_term_mixture(self, user_ids: np.ndarray, day: np.ndarray | int) -> np.ndarray:
        """The true long-term topic mixture (B, T) of ``user_ids`` (B,) on ``day``."""
        return self.mixture_from_params(self.user_params(user_ids), day)

    def disliked_topics(self, user_ids: np.ndarray) -> np.ndarray:
        """(B, T) bool: the topics each user dislikes."""
        return self.user_params(user_ids).disliked

    def new_state(self, user_ids: np.ndarray, day: np.ndarray | int,
                  params: UserParams | None = None) -> UserState:
        """A fresh :class:`UserState` (no intent, history or satiation) on ``day``."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        params = self.user_params(user_ids) if params is None else params
        n_users = len(user_ids)
        day_arr = np.broadcast_to(np.asarray(day, dtype=np.int64), (n_users,)).copy()
        return UserState(
            user_ids=user_ids,
            day=day_arr,
            mixture=self.mixture_from_params(params, day_arr),
            disliked=params.disliked.copy(),
            intent_topics=np.full((n_users, 2), -1, dtype=np.int64),
            recent_topics=np.full((n_users, self.cfg.recent_window), -1, dtype=np.int64),
            satiation=np.zeros((n_users, self.n_topics)),
            session_hides=np.zeros((n_users, self.n_topics)),
        )

    def set_day(self, state: UserState, day: np.ndarray | int) -> None:
        """Move ``state`` to ``day`` (scalar or (B,)): the long-term mixtures drift with it."""
        state.day[:] = np.broadcast_to(np.asarray(day, dtype=np.int64), state.day.shape)
        state.mixture = self.long_term_mixture(state.user_ids, state.day)

    # -------------------------------------------------------------------------- sessions
    def start_session(self, state: UserState, rng: np.random.Generator) -> None:
        """Begin a session for every user of ``state``: new intent topics, hides forgotten,
        satiation mostly recovered. The caller sets ``state.day``/``state.mixture`` first."""
        cfg = self.cfg
        n_users = len(state)
        liked = (~state.disliked).astype(np.float64)
        explore = rng.random(n_users) < cfg.intent_explore
        tempered = state.mixture ** cfg.intent_temperature
        source = np.where(explore[:, None], liked, tempered)
        primary = _sample_rows(np.cumsum(source, axis=1), rng.random((n_users, 1)))[:, 0]
        # secondary: from the mixture without the primary topic
        others = tempered.copy()
        others[np.arange(n_users), primary] = 0.0
        others += 1e-12 * liked
        secondary = _sample_rows(np.cumsum(others, axis=1), rng.random((n_users, 1)))[:, 0]
        has_second = rng.random(n_users) < cfg.second_intent_prob
        state.intent_topics[:, 0] = primary
        state.intent_topics[:, 1] = np.where(has_second, secondary, -1)
        state.satiation *= cfg.satiation_decay_session
        state.session_hides[:] = 0.0

    # ---------------------------------------------------------------------- the response
    def engagement_probs(self, state: UserState, item_ids: np.ndarray) -> np.ndarray:
        """Outcome probabilities (B, S, 4) over (skip, click, save, hide) for slates (B, S).

        This is the single response model of the world; :meth:`respond` samples from it.
        """
        cfg = self.cfg
        item_ids = np.asarray(item_ids, dtype=np.int64)
        topics = self.item_topic[item_ids]  # (B, S)
        rows = np.arange(len(state))[:, None]
        share = state.mixture[rows, topics]  # (B, S)
        affinity = np.log(self.n_topics * share + 0.05)
        is_primary = topics == state.intent_topics[:, :1]
        is_secondary = topics == state.intent_topics[:, 1:2]
        recent_valid = state.recent_topics >= 0
        recent_share = (state.recent_topics[:, None, :] == topics[:, :, None]).sum(axis=2) / (
            np.maximum(recent_valid.sum(axis=1), 1)[:, None])
        disliked = state.disliked[rows, topics]
        hides = np.minimum(state.session_hides[rows, topics], 2.0)
        engage_logit = (cfg.base_logit
                        + cfg.affinity_weight * affinity
                        + cfg.quality_weight * self.item_quality[item_ids]
                        + cfg.intent_strength * is_primary
                        + cfg.secondary_intent_strength * is_secondary
                        + cfg.recent_strength * recent_share
                        - cfg.satiation_strength * np.maximum(
                            state.satiation[rows, topics] - cfg.satiation_free, 0.0)
                        - cfg.dislike_engage_penalty * disliked
                        - cfg.hide_engage_penalty * hides)
        hide_logit = (cfg.hide_base_logit
                      + cfg.hide_dislike_boost * disliked
                      + cfg.hide_fatigue_boost * hides
                      + cfg.hide_low_affinity_boost * (share < 0.2 / self.n_topics))
        save_share = _sigmoid(cfg.save_logit + cfg.save_affinity_weight * affinity
                              + 0.2 * self.item_quality[item_ids])
        p_hide = _sigmoid(hide_logit)
        p_engage = (1.0 - p_hide) * _sigmoid(engage_logit)
        p_save = p_engage * save_share
        p_click = p_engage - p_save
        p_skip = 1.0 - p_hide - p_engage
        return np.stack([p_skip, p_click, p_save, p_hide], axis=-1)

    def respond(self, state: UserState, item_ids: np.ndarray,
                rng: np.random.Generator, probs: np.ndarray | None = None) -> np.ndarray:
        """Sample outcomes (B, S) int8 :class:`ActionType` codes for slates ``item_ids`` (B, S).

        ``probs`` ``(B, S, 4)``: the slates' :meth:`engagement_probs` when the caller already
        has them (the generator keeps them as the oracle's truth); computed otherwise.
        """
        if probs is None:
            probs = self.engagement_probs(state, item_ids)
        cum = np.cumsum(probs[..., 1:], axis=-1)  # click, click+save, click+save+hide
        draws = rng.random(item_ids.shape)
        outcome = (draws[..., None] >= cum).sum(axis=-1)  # 0 click .. 3 skip
        codes = np.array([ActionType.CLICK, ActionType.SAVE, ActionType.HIDE, ActionType.SKIP],
                         dtype=np.int8)
        return codes[outcome]

    def observe(self, state: UserState, item_ids: np.ndarray, actions: np.ndarray) -> None:
        """Update ``state`` after a request: slate ``item_ids`` (B, S) got ``actions`` (B, S).

        Satiation decays by ``satiation_decay_request`` and grows by one per positive
        engagement of a topic; hides count per topic for the session; the positive engagements
        enter the recent-topic window (slate order, later positions newer).
        """
        cfg = self.cfg
        n_users, n_topics = len(state), self.n_topics
        topics = self.item_topic[np.asarray(item_ids, dtype=np.int64)]
        positive = (actions == ActionType.CLICK) | (actions == ActionType.SAVE)
        hidden = actions == ActionType.HIDE
        flat = (np.arange(n_users)[:, None] * n_topics + topics).ravel()
        size = n_users * n_topics
        state.satiation *= cfg.satiation_decay_request
        state.satiation += np.bincount(flat, weights=positive.ravel(), minlength=size).reshape(
            n_users, n_topics)
        state.session_hides += np.bincount(flat, weights=hidden.ravel(),
                                           minlength=size).reshape(n_users, n_topics)
        newest_first = np.where(positive, topics, -1)[:, ::-1]
        combined = np.concatenate([newest_first, state.recent_topics], axis=1)
        order = np.argsort(combined < 0, axis=1, kind="stable")
        state.recent_topics[:] = np.take_along_axis(combined, order, axis=1)[
            :, : cfg.recent_window]

    # ------------------------------------------------------------------- logging policy
    def logging_slate(self, state: UserState, rng: np.random.Generator) -> np.ndarray:
        """The logging policy's slates (B, S) of distinct item ids.

        Each slot comes from popularity, the user's long-term mixture, the topics of recent
        engagements (the long-term mixture when there are none) or uniform exploration, in
        the ``policy_*`` shares; items within a topic are drawn by popularity.
        """
        cfg = self.cfg
        n_users, slate = len(state), cfg.slate_size
        shares = np.array([cfg.policy_popularity, cfg.policy_interest, cfg.policy_recent,
                           cfg.policy_random])
        channel = _sample_rows(np.cumsum(shares)[None, :], rng.random((1, n_users * slate)))
        channel = channel.reshape(n_users, slate)
        items = np.empty((n_users, slate), dtype=np.int64)

        pop = channel == 0
        items[pop] = self._popular_items(rng, int(pop.sum()))
        rand = channel == 3
        items[rand] = rng.integers(1, cfg.n_items + 1, size=int(rand.sum()))
        # interest and recent channels pick a topic, then an item of it by popularity
        interest_topics = _sample_rows(np.cumsum(state.mixture, axis=1),
                                       rng.random((n_users, slate)))
        recent_valid = state.recent_topics >= 0
        n_recent = recent_valid.sum(axis=1)
        pick = (rng.random((n_users, slate)) * np.maximum(n_recent, 1)[:, None]).astype(np.int64)
        recent_topics = np.take_along_axis(state.recent_topics, pick, axis=1)
        recent_topics = np.where(n_recent[:, None] > 0, recent_topics, interest_topics)
        topical = (channel == 1) | (channel == 2)
        chosen_topics = np.where(channel == 2, recent_topics, interest_topics)[topical]
        items[topical] = self._topic_items(rng, chosen_topics)
        return self._dedupe(items, rng)

    def _popular_items(self, rng: np.random.Generator, n: int) -> np.ndarray:
        idx = np.searchsorted(self._pop_cdf, rng.random(n), side="right")
        return np.minimum(idx, self.cfg.n_items - 1) + 1

    def _topic_items(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        keys = topics + rng.random(len(topics))
        idx = np.searchsorted(self._topic_keys, keys, side="right")
        return self._topic_sorted_items[np.minimum(idx, self.cfg.n_items - 1)]

    def _dedupe(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Replace repeated items within each slate by uniform random items until none repeat."""
        while True:
            order = np.argsort(items, axis=1, kind="stable")
            ranked = np.take_along_axis(items, order, axis=1)
            repeated = ranked[:, 1:] == ranked[:, :-1]
            if not repeated.any():
                return items
            rows, cols = np.nonzero(repeated)
            positions = order[rows, cols + 1]
            items[rows, positions] = rng.integers(1, self.cfg.n_items + 1, size=len(rows))

    # ----------------------------------------------------------------------------- time
    def sample_session_starts(self, rng: np.random.Generator, n_sessions: np.ndarray,
                              n_slots: int) -> np.ndarray:
        """Session start times in ms after midnight, (B, n_slots) int64, following
        :data:`HOUR_PROFILE`: the first ``n_sessions[b]`` entries of row ``b`` are its sessions
        in time order (the rest are a day later than any session and unused)."""
        shape = (len(n_sessions), n_slots)
        hours = np.searchsorted(self._hour_cdf, rng.random(shape), side="right")
        offset = (np.minimum(hours, 23) * HOUR_MS
                  + (rng.random(shape) * HOUR_MS).astype(np.int64))
        offset[np.arange(n_slots)[None, :] >= n_sessions[:, None]] = DAY_MS
        return np.sort(offset, axis=1)
