"""Feast feature views: the realtime action sequence, the daily batch user embedding and the
item content embeddings.

=========================  ==============================================  =====================
view                       features                                        ttl
=========================  ==============================================  =====================
``user_action_sequence``   ``seq_item_ids`` Array(Int64),                  none (always the
                           ``seq_action_types`` Array(Int32),              latest state)
                           ``seq_timestamps_ms`` Array(Int64),
                           ``seq_len`` Int64 — up to 100 actions, newest
                           first (readers pad to 100 with zeros)
``user_batch_embedding``   ``user_emb`` Array(Float32)[32]                 2 days (a daily job
                                                                           plus a day of slack)
``item_content``           ``content_emb`` Array(Float32)[32],             none
                           ``topic`` Int32
``item_engagement``        ``item_counts`` Array(Int64)[4]: the item's     none (running
                           impressions, clicks, saves, hides so far        totals)
``user_engagement``        ``user_counts`` Array(Int64)[4]: the same per   none
                           user
=========================  ==============================================  =====================

The two engagement views are written by the stream processor (the online twin of the example
builder's point-in-time counters, ``transact.data.counters``).
"""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float32, Int32, Int64

from features.names import (
    ITEM_COUNTS_FEATURE,
    ITEM_COUNTS_VIEW,
    ITEM_EMB_FEATURE,
    ITEM_VIEW,
    SEQUENCE_FEATURES,
    SEQUENCE_VIEW,
    USER_COUNTS_FEATURE,
    USER_COUNTS_VIEW,
    USER_EMB_FEATURE,
    USER_EMB_VIEW,
)
from features.repo.entities import item, user
from features.repo.sources import Sources

__all__ = [
    "ITEM_EMB_FEATURE", "ITEM_VIEW", "SEQUENCE_FEATURES", "SEQUENCE_VIEW", "USER_EMB_FEATURE",
    "USER_EMB_VIEW", "USER_EMB_TTL", "make_views",
]

#: The batch user embedding is recomputed daily; a row older than this is treated as missing.
USER_EMB_TTL = timedelta(days=2)


def _counter_view(name: str, entity: object, feature: str, source: object, what: str
                  ) -> FeatureView:
    """An engagement-counter view: one Array(Int64)[4] of running totals, no TTL."""
    return FeatureView(name=name, entities=[entity], ttl=timedelta(0),
                       schema=[Field(name=feature, dtype=Array(Int64))], source=source,
                       online=True, description=f"{what}; written by the stream processor.")


def make_views(sources: Sources) -> tuple[FeatureView, ...]:
    """The feature views over one profile's sources: sequence, user embedding, item content,
    item counters, user counters."""
    sequence = FeatureView(
        name=SEQUENCE_VIEW,
        entities=[user],
        ttl=timedelta(0),
        schema=[
            Field(name="seq_item_ids", dtype=Array(Int64)),
            Field(name="seq_action_types", dtype=Array(Int32)),
            Field(name="seq_timestamps_ms", dtype=Array(Int64)),
            Field(name="seq_len", dtype=Int64),
        ],
        source=sources.sequence_push,
        online=True,
        description="The user's latest (up to 100) engagements (click/save/hide), newest "
        "first; written by the stream processor.",
    )
    user_emb = FeatureView(
        name=USER_EMB_VIEW,
        entities=[user],
        ttl=USER_EMB_TTL,
        schema=[Field(name=USER_EMB_FEATURE, dtype=Array(Float32))],
        source=sources.user_embedding,
        online=True,
        description="Daily batch user embedding (PinnerFormer), one dated row per user and day.",
    )
    items = FeatureView(
        name=ITEM_VIEW,
        entities=[item],
        ttl=timedelta(0),
        schema=[
            Field(name=ITEM_EMB_FEATURE, dtype=Array(Float32)),
            Field(name="topic", dtype=Int32),
        ],
        source=sources.item_content,
        online=True,
        description="Pretrained item content embedding (PinSage stand-in), 32 float32.",
    )
    item_counts = _counter_view(ITEM_COUNTS_VIEW, item, ITEM_COUNTS_FEATURE,
                                sources.item_counts_push, "The item's impressions, clicks, saves "
                                "and hides so far (all users)")
    user_counts = _counter_view(USER_COUNTS_VIEW, user, USER_COUNTS_FEATURE,
                                sources.user_counts_push, "The user's impressions, clicks, saves "
                                "and hides so far")
    return sequence, user_emb, items, item_counts, user_counts
