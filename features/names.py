"""Names of the Feast objects, importable without importing Feast (which takes seconds).

``features.repo`` defines the objects with these names; the processor and the serving read
path only need the names.
"""

from __future__ import annotations

from enum import StrEnum


class ProfileKind(StrEnum):
    """The feature-store profiles: ``embedded`` (no server) and ``production`` (Redis,
    PostgreSQL)."""

    EMBEDDED = "embedded"
    PRODUCTION = "production"


SEQUENCE_VIEW = "user_action_sequence"
USER_EMB_VIEW = "user_batch_embedding"
ITEM_VIEW = "item_content"

SEQUENCE_FEATURES = ("seq_item_ids", "seq_action_types", "seq_timestamps_ms", "seq_len")
USER_EMB_FEATURE = "user_emb"
ITEM_EMB_FEATURE = "content_emb"

SEQUENCE_PUSH_SOURCE = "user_action_sequence_push"

#: engagement counters (impressions, clicks, saves, hides; ``transact.data.counters``), kept
#: by the stream processor per candidate item and per user
ITEM_COUNTS_VIEW = "item_engagement"
USER_COUNTS_VIEW = "user_engagement"
ITEM_COUNTS_FEATURE = "item_counts"
USER_COUNTS_FEATURE = "user_counts"
ITEM_COUNTS_PUSH_SOURCE = "item_engagement_push"
USER_COUNTS_PUSH_SOURCE = "user_engagement_push"
