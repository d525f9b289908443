"""The action schema every stage relies on."""

from __future__ import annotations

import pytest

from transact.schema import (
    EVENT_SCHEMA,
    HEAD_ACTIONS,
    HEAD_POLARITY,
    HEADS,
    SEQUENCE_ACTIONS,
    ActionType,
    example_schema,
    surface_id,
)


def test_polarity_tells_a_hide_from_a_save():
    assert ActionType.SAVE.polarity == 1 and ActionType.CLICK.polarity == 1
    assert ActionType.HIDE.polarity == -1
    assert ActionType.SKIP.polarity == 0


@pytest.mark.parametrize("name,expected", [("repin", ActionType.SAVE), ("Save", ActionType.SAVE),
                                           ("impression", ActionType.SKIP), (4, ActionType.HIDE)])
def test_parse_accepts_names_aliases_and_codes(name, expected):
    assert ActionType.parse(name) is expected


@pytest.mark.parametrize("bad", ["like", "", 0, 9])
def test_parse_rejects_unknown_types_naming_the_known_ones(bad):
    with pytest.raises(ValueError, match="known|pad"):
        ActionType.parse(bad)


def test_sequences_hold_engagements_and_heads_follow_actions():
    assert ActionType.SKIP not in SEQUENCE_ACTIONS and ActionType.PAD not in SEQUENCE_ACTIONS
    assert [a.name.lower() for a in HEAD_ACTIONS] == list(HEADS)
    assert HEAD_POLARITY[HEADS.index("hide")] == -1


def test_event_and_example_schemas():
    assert EVENT_SCHEMA.names == ["event_id", "user_id", "item_id", "action_type",
                                  "timestamp_ms", "surface", "request_id"]
    schema = example_schema(seq_len=7)
    assert schema.field("seq_item_ids").type.list_size == 7
    assert {"label_click", "label_save", "label_hide", "request_time_ms"} <= set(schema.names)
    assert surface_id("homefeed") > 0 and surface_id("nowhere") == 0
