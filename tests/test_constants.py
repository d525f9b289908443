"""One definition of the shared constants: time units and the action vocabulary."""

from __future__ import annotations

import re
from pathlib import Path

from transact.schema import N_ACTION_CODES, ActionType

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("transact", "features", "training", "serving", "monitoring", "dags", "transact_cli",
           "bench")
#: an hour or a day in ms written as a number, in any digit grouping
TIME_LITERAL = re.compile(r"(?<![\w.])(3_?600_?000|86_?400_?000)(?![\w.])")


def test_hour_and_day_in_ms_come_from_the_schema():
    offenders = []
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "transact" / "schema.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if TIME_LITERAL.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "use transact.schema.HOUR_MS / DAY_MS:\n" + "\n".join(offenders)


def test_the_literal_check_sees_hour_literals():
    assert TIME_LITERAL.search("x = 3_600_000") and TIME_LITERAL.search("t - 86400000")
    assert not TIME_LITERAL.search("HOUR_MS = 13_600_0001")


def test_action_embedding_tables_are_sized_from_action_type():
    from transact.model.pinnerformer import PinnerFormerModel, PinnerFormerModelConfig

    assert N_ACTION_CODES == max(int(a) for a in ActionType) + 1
    import torch

    model = PinnerFormerModel(PinnerFormerModelConfig(),
                              torch.zeros(3, PinnerFormerModelConfig().content_dim))
    assert model.action_emb.num_embeddings == N_ACTION_CODES
