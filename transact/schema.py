"""Shared schemas: action types, the raw event table, items and training examples.

Every stage speaks these schemas, so they live in the core package.

An *event* is one impression of an item to a user together with its outcome:

======================  =========  ===========================================================
column                  type       meaning
======================  =========  ===========================================================
``event_id``            int64      unique id; also the tie-break for equal timestamps (higher
                                   id = later)
``user_id``             int64      > 0
``item_id``             int64      > 0 (0 is the padding id of sequences)
``action_type``         int8       an :class:`ActionType` code: ``skip`` (shown, no engagement),
                                   ``click``, ``save`` or ``hide``
``timestamp_ms``        int64      Unix epoch milliseconds (UTC)
``surface``             string     where the item was shown (``homefeed``, ``search``, ...)
``request_id``          int64      impressions served by one request share it; HIT@3 groups
                                   candidates by it
======================  =========  ===========================================================

Impressions with their outcomes are the training rows. The realtime *action sequence* of a user
holds only engagements (``click``, ``save``, ``hide``), newest first, zero-padded.
"""

from __future__ import annotations

from enum import IntEnum

import pyarrow as pa

#: Length of the realtime action sequence (the paper's 100 latest actions).
SEQ_LEN = 100
#: Dimension of item content embeddings (PinSage is 32-d in the paper).
ITEM_EMB_DIM = 32
#: Dimension of the batch (daily) user embedding.
USER_EMB_DIM = 32

# Timestamps before 1995-01-01 or after 2100-01-01 (in ms) are rejected as implausible
# (MovieLens-100K starts in 1997); a value in that window divided by 1000 is what a seconds
# timestamp looks like.
MIN_TIMESTAMP_MS = 788_918_400_000
MAX_TIMESTAMP_MS = 4_102_444_800_000

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class ActionType(IntEnum):
    """Action codes. ``PAD`` (0) marks padding in sequences and never appears in events."""

    PAD = 0
    SKIP = 1
    CLICK = 2
    SAVE = 3
    HIDE = 4

    @property
    def polarity(self) -> int:
        """+1 for positive engagement, -1 for negative feedback, 0 for neutral."""
        return POLARITY[self]

    @classmethod
    def parse(cls, name: str | int) -> ActionType:
        """Parse a name (``"save"``, ``"repin"``, ``"impression"``...) or a code.

        Raises ``ValueError`` naming the known types for anything else.
        """
        if isinstance(name, int) and not isinstance(name, bool):
            try:
                code = cls(name)
            except ValueError:
                known = known_action_names()
                raise ValueError(f"unknown action type code {name!r}; known: {known}")
            if code is cls.PAD:
                raise ValueError("action type 0 (pad) is not an event")
            return code
        key = str(name).strip().lower()
        if key in ACTION_ALIASES:
            return ACTION_ALIASES[key]
        raise ValueError(f"unknown action type {name!r}; known: {known_action_names()}")


#: Size of an embedding table indexed by action code (codes ``0 .. max``; 0 = padding).
N_ACTION_CODES = max(int(a) for a in ActionType) + 1

POLARITY: dict[ActionType, int] = {
    ActionType.PAD: 0,
    ActionType.SKIP: 0,
    ActionType.CLICK: 1,
    ActionType.SAVE: 1,
    ActionType.HIDE: -1,
}

#: Names accepted on input. ``impression`` is an impression that got no engagement (a skip);
#: ``repin`` is Pinterest's word for a save.
ACTION_ALIASES: dict[str, ActionType] = {
    "skip": ActionType.SKIP,
    "impression": ActionType.SKIP,
    "click": ActionType.CLICK,
    "closeup": ActionType.CLICK,
    "save": ActionType.SAVE,
    "repin": ActionType.SAVE,
    "hide": ActionType.HIDE,
}

#: Action types that enter the realtime sequence (engagements, positive and negative).
SEQUENCE_ACTIONS: tuple[ActionType, ...] = (ActionType.CLICK, ActionType.SAVE, ActionType.HIDE)
#: Event action types (all but PAD).
EVENT_ACTIONS: tuple[ActionType, ...] = (
    ActionType.SKIP,
    ActionType.CLICK,
    ActionType.SAVE,
    ActionType.HIDE,
)

#: Prediction heads, in order; head ``h`` is labelled by outcome ``HEAD_ACTIONS[h]``.
HEADS: tuple[str, ...] = ("click", "save", "hide")
HEAD_ACTIONS: tuple[ActionType, ...] = (ActionType.CLICK, ActionType.SAVE, ActionType.HIDE)
#: +1 where a higher HIT@3 is better, -1 where lower is better (hide).
HEAD_POLARITY: tuple[int, ...] = (1, 1, -1)


def known_action_names() -> list[str]:
    return sorted(ACTION_ALIASES)


EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("action_type", pa.int8(), nullable=False),
        pa.field("timestamp_ms", pa.int64(), nullable=False),
        pa.field("surface", pa.string(), nullable=False),
        pa.field("request_id", pa.int64(), nullable=False),
    ]
)

ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("content_emb", pa.list_(pa.float32(), ITEM_EMB_DIM), nullable=False),
        pa.field("topic", pa.int32()),
        pa.field("title", pa.string()),
    ]
)

#: Surfaces, with a stable categorical id for the ranker (0 = unknown).
SURFACES: tuple[str, ...] = ("unknown", "homefeed", "related", "search", "movielens")


def surface_id(name: str) -> int:
    try:
        return SURFACES.index(name)
    except ValueError:
        return 0


#: optional example columns (the builder writes them; hand-made examples may lack them):
#: point-in-time engagement counters of the candidate item and of the user, each
#: ``(impressions, clicks, saves, hides)`` strictly before the request (see
#: :mod:`transact.data.counters`)
COUNTER_COLUMNS: tuple[str, ...] = ("item_counts", "user_counts")


def example_schema(seq_len: int = SEQ_LEN, user_emb_dim: int = USER_EMB_DIM,
                   counters: bool = False) -> pa.Schema:
    """Arrow schema of one training example: an impression, its labels and its user's state.

    Sequence columns are fixed-size lists of ``seq_len`` entries, newest first, zero-padded
    (``seq_action_types == 0`` marks padding). Every ``seq_timestamps_ms`` entry of a real
    action is strictly below ``request_time_ms``. ``counters=True`` appends the optional
    :data:`COUNTER_COLUMNS` (fixed-size lists of 4 int32).
    """
    extra = [pa.field(name, pa.list_(pa.int32(), 4), nullable=False)
             for name in COUNTER_COLUMNS] if counters else []
    return pa.schema(
        [
            pa.field("request_id", pa.int64(), nullable=False),
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("item_id", pa.int64(), nullable=False),
            pa.field("request_time_ms", pa.int64(), nullable=False),
            pa.field("surface_id", pa.int8(), nullable=False),
            pa.field("outcome", pa.int8(), nullable=False),
            pa.field("label_click", pa.int8(), nullable=False),
            pa.field("label_save", pa.int8(), nullable=False),
            pa.field("label_hide", pa.int8(), nullable=False),
            pa.field("seq_len", pa.int16(), nullable=False),
            pa.field("seq_item_ids", pa.list_(pa.int64(), seq_len), nullable=False),
            pa.field("seq_action_types", pa.list_(pa.int8(), seq_len), nullable=False),
            pa.field("seq_timestamps_ms", pa.list_(pa.int64(), seq_len), nullable=False),
            pa.field("user_batch_emb", pa.list_(pa.float32(), user_emb_dim), nullable=False),
            *extra,
        ]
    )
