"""Model configuration: the TransAct sequence encoder, the Pinnability ranker and its loss.

Every config is a plain dataclass that round-trips through JSON (``to_dict`` / ``from_dict``) so
a saved model describes itself (see :mod:`transact.model.artifact`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from transact.errors import UserError
from transact.schema import HEADS, HOUR_MS, ITEM_EMB_DIM, SEQ_LEN, SURFACES, USER_EMB_DIM

EncoderKind = Literal["none", "avg", "transformer", "cnn", "rnn", "lstm"]
Fusion = Literal["concat", "append"]
Positional = Literal["none", "learned"]
SequenceActions = Literal["all", "positive"]
UserWeighting = Literal["uniform", "inverse_sqrt_activity"]
WindowMode = Literal["drop", "keys"]
InputNorm = Literal["none", "layer", "block"]
ItemRepresentation = Literal["content", "graph", "pinnerformer", "content+pinnerformer"]

ENCODER_KINDS: tuple[str, ...] = get_args(EncoderKind)
FUSIONS: tuple[str, ...] = get_args(Fusion)
POSITIONAL: tuple[str, ...] = get_args(Positional)
SEQUENCE_ACTION_FILTERS: tuple[str, ...] = get_args(SequenceActions)
USER_WEIGHTINGS: tuple[str, ...] = get_args(UserWeighting)
WINDOW_MODES: tuple[str, ...] = get_args(WindowMode)
INPUT_NORMS: tuple[str, ...] = get_args(InputNorm)
#: item vectors of tokens and candidates: the items' content embeddings, the PinSage-style
#: co-engagement vectors of the item-embedding job, or the batch (PinnerFormer) job's item
#: tower, the space its user embeddings live in
ITEM_REPRESENTATIONS: tuple[str, ...] = get_args(ItemRepresentation)

#: Default time window of the random mask: 24 hours, as in the paper.
DEFAULT_WINDOW_MS = 24 * HOUR_MS
#: upper edges (minutes) of the action-age buckets of ``EncoderConfig.action_age``; ages at
#: or above the last edge share the last bucket
ACTION_AGE_EDGES_MIN: tuple[float, ...] = (1, 3, 10, 30, 60, 180, 720, 1440, 4320, 10080)
#: columns of ``EncoderConfig.similarity_pool``: 3 action types x 2 scopes x 3 statistics
SIMILARITY_POOL_DIM = 18


class ConfigError(UserError):
    """A model / training configuration value is out of range or unknown."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {list(choices)}")


@dataclass
class EncoderConfig:
    """The realtime-sequence encoder (TransAct by default; baselines via ``kind``/``fusion``).

    * ``kind``: ``transformer`` (TransAct), ``avg`` (mean of the tokens, the WDL baseline),
      ``cnn``, ``rnn``, ``lstm`` or ``none`` (no sequence at all).
    * ``fusion``: ``concat`` - every token is ``[action emb, item emb, candidate emb]`` (TransAct's
      early fusion); ``append`` - tokens are ``[action emb, item emb]`` plus one extra candidate
      token ``[0, candidate emb]`` (BST).
    * ``seq_len``: keep only the newest ``seq_len`` usable actions (the sequence-length ablation).
    * ``actions``: ``all`` or ``positive`` (click/save only: the "BST positive" baseline).
    * ``first_k`` / ``max_pool``: output compression; the output has ``first_k + max_pool``
      columns of width ``d_model`` (``(K+1)*d`` by default). ``avg`` ignores them (it is a pool).
    * ``time_window_ms`` / ``time_window_mask``: the random time-window mask (training only).
    """

    kind: EncoderKind = "transformer"
    fusion: Fusion = "concat"
    action_emb_dim: int = 32
    item_emb_dim: int = ITEM_EMB_DIM
    seq_len: int = SEQ_LEN
    actions: SequenceActions = "all"
    num_layers: int = 2
    num_heads: int = 1
    ffn_dim: int = 32
    dropout: float = 0.1
    positional: Positional = "none"
    max_positions: int = SEQ_LEN + 1
    first_k: int = 10
    max_pool: bool = True
    time_window_mask: bool = True
    time_window_ms: int = DEFAULT_WINDOW_MS
    #: ``drop``: actions in the window are removed from the sequence (as if they had not
    #: happened); ``keys``: they stay in the sequence but no token attends to them (the
    #: public reference's semantics; the newest action always stays a key; transformer only)
    time_window_mode: WindowMode = "keys"
    #: training only: encode just the newest ``train_seq_len`` usable actions (cheaper steps;
    #: evaluation and serving still use ``seq_len``). ``None`` (the default): ``seq_len``
    #: everywhere; a shorter training sequence starves the max pool of the older hides it
    #: sees at evaluation (docs/model.md, Findings 2026-12-01)
    train_seq_len: int | None = None
    #: concat fusion only: each token also carries ``cos(e_i, e_cand)``, the similarity of
    #: its item to the candidate (one more channel; not in the paper; on by default, measured)
    candidate_similarity: bool = True
    #: std of the action-type embedding's N(0, std) init (1.0 = PyTorch's default)
    action_emb_std: float = 1.0
    #: each token's action channels also carry a learned embedding of the action's age
    #: (``request_time - action_time``, bucketed at :data:`ACTION_AGE_EDGES_MIN` minutes),
    #: added to the action-type embedding (width unchanged; not in the paper, which has no
    #: time in its tokens: without it a same-topic action of a minute ago and one of last week
    #: look alike)
    action_age: bool = False
    cnn_kernel: int = 3
    #: candidate-aware pooled features beside the encoder output (not in the paper): per
    #: action type (click, save, hide) and scope (every visible action; those younger than
    #: ``similarity_recent_ms``), the max, the mean and ``log1p`` of the summed positive part
    #: of ``cos(e_i, e_cand)`` - :data:`SIMILARITY_POOL_DIM` columns (see
    #: :func:`transact.model.encoder.similarity_pool`; on by default, measured: docs/model.md)
    similarity_pool: bool = True
    similarity_recent_ms: int = 30 * 60_000
    #: the pool's cosine is taken after a learned linear map ``P`` (``E x E``, identity at
    #: init) of both vectors: ``cos(P e_i, P e_cand)``, a learned similarity metric
    similarity_pool_learned: bool = True
    #: sharper counts beside the pool's own: for each threshold ``t`` (in [0, 1)), per scope
    #: and action type, ``log1p`` of the summed ``relu(cos - t) / (1 - t)`` (a count of the
    #: *close* actions) and that sum over the matching actions' number (their share):
    #: ``4 x 3`` columns per threshold. A learned metric cannot sharpen the pool's own
    #: kernel (a cosine ignores scale): these count same-topic actions, not loosely related ones
    similarity_pool_thresholds: tuple[float, ...] = ()

    @property
    def d_model(self) -> int:
        """Width of one token: ``A + 2E`` for concat fusion, ``A + E`` for append."""
        base = self.action_emb_dim + self.item_emb_dim
        if self.fusion != "concat":
            return base
        return base + self.item_emb_dim + int(self.candidate_similarity)

    @property
    def similarity_pool_dim(self) -> int:
        """Columns of the similarity pool (0 when it is off)."""
        if not self.similarity_pool:
            return 0
        return SIMILARITY_POOL_DIM + 12 * len(self.similarity_pool_thresholds)

    @property
    def output_dim(self) -> int:
        if self.kind == "none":
            return 0
        pool = self.similarity_pool_dim
        if self.kind == "avg":
            return self.d_model + pool
        return (self.first_k + int(self.max_pool)) * self.d_model + pool

    def validate(self) -> EncoderConfig:
        _check_choice("encoder.kind", self.kind, ENCODER_KINDS)
        _check_choice("encoder.fusion", self.fusion, FUSIONS)
        _check_choice("encoder.positional", self.positional, POSITIONAL)
        _check_choice("encoder.actions", self.actions, SEQUENCE_ACTION_FILTERS)
        if self.seq_len < 1:
            raise ConfigError(f"encoder.seq_len must be >= 1, got {self.seq_len}")
        if self.kind not in ("none", "avg") and self.first_k + int(self.max_pool) == 0:
            raise ConfigError("output compression is empty: set first_k >= 1 or max_pool=true")
        if self.first_k < 0:
            raise ConfigError(f"encoder.first_k must be >= 0, got {self.first_k}")
        if self.positional == "learned" and self.max_positions < self.seq_len + 1:
            raise ConfigError("encoder.max_positions must be >= seq_len + 1 for learned positions")
        if self.d_model % self.num_heads:
            raise ConfigError(f"d_model {self.d_model} is not divisible by num_heads "
                              f"{self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"encoder.dropout must be in [0, 1), got {self.dropout}")
        if self.time_window_ms < 0:
            raise ConfigError("encoder.time_window_ms must be >= 0")
        if self.train_seq_len is not None and self.train_seq_len < 1:
            raise ConfigError(f"encoder.train_seq_len must be >= 1, got {self.train_seq_len}")
        _check_choice("encoder.time_window_mode", self.time_window_mode, WINDOW_MODES)
        if self.action_emb_std <= 0:
            raise ConfigError(f"encoder.action_emb_std must be > 0, got {self.action_emb_std}")
        if self.similarity_recent_ms <= 0:
            raise ConfigError("encoder.similarity_recent_ms must be > 0")
        self.similarity_pool_thresholds = tuple(float(t) for t in self.similarity_pool_thresholds)
        if any(not 0.0 <= t < 1.0 for t in self.similarity_pool_thresholds):
            raise ConfigError(f"encoder.similarity_pool_thresholds must lie in [0, 1), got "
                              f"{list(self.similarity_pool_thresholds)}")
        return self


@dataclass
class LossConfig:
    """Point-wise multi-task BCE with a label-weight matrix ``M`` and a per-user weight ``w_u``.

    ``label_weights[h][l]`` (heads x labels, both in :data:`transact.schema.HEADS` order) says how
    much label ``l`` counts as a positive for head ``h``; ``None`` means the identity. See
    :func:`transact.model.loss.multitask_loss` for exactly how it enters. ``user_weighting``:
    ``uniform`` (``w_u = 1``) or ``inverse_sqrt_activity`` (``w_u`` proportional to
    ``1/sqrt(#training examples of u)``, normalised to mean 1 over the training rows, so heavy
    users do not dominate).
    """

    label_weights: list[list[float]] | None = None
    user_weighting: UserWeighting = "uniform"

    def matrix(self) -> list[list[float]]:
        if self.label_weights is None:
            return [[float(h == lab) for lab in range(len(HEADS))] for h in range(len(HEADS))]
        return [list(map(float, row)) for row in self.label_weights]

    def validate(self) -> LossConfig:
        _check_choice("loss.user_weighting", self.user_weighting, USER_WEIGHTINGS)
        m = self.matrix()
        if len(m) != len(HEADS) or any(len(row) != len(HEADS) for row in m):
            raise ConfigError(f"loss.label_weights must be {len(HEADS)}x{len(HEADS)} "
                              f"(heads x labels, order {list(HEADS)})")
        if any(v < 0 for row in m for v in row):
            raise ConfigError("loss.label_weights entries must be >= 0")
        for h, row in enumerate(m):
            if not any(v > 0 for v in row):
                raise ConfigError(f"head {HEADS[h]!r} has no positive label in label_weights")
        return self


@dataclass
class RankerConfig:
    """The Pinnability ranker: features -> full-rank DCN v2 cross layers -> MLP -> head logits."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    use_batch_user_emb: bool = True
    #: numeric features derived from the realtime sequence (counts, recency); off for the
    #: "no realtime" variants so that they see nothing of the realtime sequence
    use_sequence_stats: bool = True
    #: point-in-time engagement counters of the candidate item and of the user (impressions,
    #: clicks, saves, hides before the request; :mod:`transact.data.counters`) as 8 numeric
    #: features (the item's rating bias on MovieLens, its quality on the synthetic world). The
    #: stream processor keeps the same counters online (``features.processor``), so serving
    #: reads them per request; examples built without them cannot train such a model
    use_engagement_counters: bool = True
    user_emb_dim: int = USER_EMB_DIM
    item_emb_dim: int = ITEM_EMB_DIM
    n_surfaces: int = len(SURFACES)
    surface_emb_dim: int = 8
    item_id_buckets: int = 4096
    item_id_emb_dim: int = 16
    hour_emb_dim: int = 8
    #: normalise x0 before the cross layers: ``none``, ``layer`` (one LayerNorm over x0) or
    #: ``block`` (a LayerNorm per feature block: categorical, numeric, encoder output, batch
    #: user embedding, candidate; so a 1,056-wide encoder block cannot drown a 32-wide one)
    input_norm: InputNorm = "layer"
    #: which item vectors the tokens and the candidate carry (:data:`ITEM_REPRESENTATIONS`):
    #: ``content`` (``items.parquet``), ``graph`` (co-engagement vectors: by default the
    #: content vectors propagated over the training window's co-engagement graph, written
    #: by the example builder; or the learned job ``transact train item-embeddings``) or
    #: ``pinnerformer`` (the batch job's item tower). ``graph`` is the measured default
    #: (docs/model.md, Findings 2026-12-01: the only vectors from which the sequence model
    #: can tell an item's topic)
    item_representation: ItemRepresentation = "graph"
    n_cross_layers: int = 1
    mlp_dims: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    heads: list[str] = field(default_factory=lambda: list(HEADS))

    def validate(self) -> RankerConfig:
        self.encoder.validate()
        if list(self.heads) != list(HEADS):
            raise ConfigError(f"heads must be {list(HEADS)} (the label columns of the examples)")
        _check_choice("ranker.input_norm", self.input_norm, INPUT_NORMS)
        _check_choice("ranker.item_representation", self.item_representation,
                      ITEM_REPRESENTATIONS)
        if self.encoder.item_emb_dim != self.item_emb_dim:
            raise ConfigError(f"encoder.item_emb_dim ({self.encoder.item_emb_dim}) must equal "
                              f"item_emb_dim ({self.item_emb_dim}): tokens and candidates "
                              f"carry the same item vectors")
        if self.n_cross_layers < 0 or any(d < 1 for d in self.mlp_dims):
            raise ConfigError("n_cross_layers must be >= 0 and every mlp_dims entry >= 1")
        if self.item_id_buckets < 1:
            raise ConfigError("item_id_buckets must be >= 1")
        return self


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model: the ranker (with its encoder) and the loss."""

    ranker: RankerConfig = field(default_factory=RankerConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self) -> ModelConfig:
        self.ranker.validate()
        self.loss.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            ranker = dict(data.get("ranker", {}))
            encoder = EncoderConfig(**_known(EncoderConfig, ranker.pop("encoder", {})))
            ranker_cfg = RankerConfig(encoder=encoder, **_known(RankerConfig, ranker))
            loss_cfg = LossConfig(**_known(LossConfig, data.get("loss", {})))
        except TypeError as err:
            raise ConfigError(f"malformed model config: {err}") from err
        return cls(ranker=ranker_cfg, loss=loss_cfg).validate()


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(names)}")
    return {k: v for k, v in values.items() if k != "encoder"}
