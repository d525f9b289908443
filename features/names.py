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
