"""Feast entities: the user (sequences, batch embeddings) and the item (content embeddings)."""

from __future__ import annotations

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A user; user_id > 0 (transact.schema.EVENT_SCHEMA).",
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="An item (pin); item_id > 0, 0 is the padding id of sequences.",
)

ENTITIES = (user, item)
