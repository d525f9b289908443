"""Data-quality checks of the feature platform's outputs, with Great Expectations.

* :func:`check_offline_log` — the accepted events the processor logged must pass the events
  suite (``transact.validation.validate_events``: types, known actions, ms timestamps, ids,
  unique ``event_id``): the processor must never let through what the suite rejects.
* :func:`check_dead_letters` — every dead letter carries a known reason; decodable ones
  rejected as invalid must also fail the GX events suite (the processor and the suite agree),
  and the counts by reason are returned for dashboards.
* :func:`check_materialized` — online features read back for given users/items: embeddings of
  the right size, finite, and the share of entities found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from features.processor import REASONS, OfflineLog, open_stream
from features.store import FeatureProfile
from features.stream import RawBatch, decode_batch

#: reasons whose events the GX events suite must reject too
_SUITE_REASONS = ("invalid action type", "invalid id", "timestamp not in ms")


@dataclass
class QualityReport:
    """Outcome of one check: ``ok``, counts, and readable problems."""

    name: str
    ok: bool
    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _validate_events(table: pa.Table) -> Any:
    from transact.validation import validate_events

    return validate_events(table)


def check_offline_log(profile: FeatureProfile) -> QualityReport:
    events = OfflineLog(profile.offline_log_dir).read()
    if events.num_rows == 0:
        return QualityReport("offline_log", True, {"rows": 0})
    report = _validate_events(events)
    return QualityReport("offline_log", report.success, {"rows": events.num_rows},
                         [] if report.success else [report.summary()])


def check_dead_letters(profile: FeatureProfile) -> QualityReport:
    dead = open_stream(profile).dead_letters()
    reasons = dead.column("reason").to_pylist()
    counts = {r: reasons.count(r) for r in sorted(set(reasons))}
    problems = [f"{n} dead letters with unknown reason {r!r}"
                for r, n in counts.items() if r not in REASONS]
    in_suite = [i for i, r in enumerate(reasons) if r in _SUITE_REASONS]
    if in_suite:
        raw = RawBatch([str(i) for i in in_suite],
                       [dead.column("payload")[i].as_py() for i in in_suite],
                       [dead.column("surface")[i].as_py().encode() for i in in_suite])
        decoded = decode_batch(raw)
        for row in range(decoded.events.num_rows):
            one = decoded.events.slice(row, 1)
            if _validate_events(one).success:
                idx = in_suite[int(decoded.rows[row])]
                problems.append(f"dead letter {dead.column('message_id')[idx].as_py()} "
                                f"({reasons[idx]}) passes the GX events suite: the processor "
                                f"and the suite disagree")
    return QualityReport("dead_letters", not problems, {"by_reason": counts,
                                                        "total": dead.num_rows}, problems)


def check_materialized(profile: FeatureProfile, user_ids: Any, item_ids: Any,
                       min_found: float = 0.99) -> QualityReport:
    """Read ``user_ids`` with ``item_ids`` as candidates; embeddings must be finite and
    ``min_found`` of the items must be online."""
    from features.online import open_reader

    reader = open_reader(profile)
    problems: list[str] = []
    found_items = found_users = 0
    item_ids = np.asarray(item_ids, dtype=np.int64)
    for user in np.asarray(user_ids, dtype=np.int64).tolist():
        feats = reader.get_ranking_features(user, item_ids)
        found_items = int(feats.item_found.sum())
        found_users += int(feats.user_emb_found)
        if not np.isfinite(feats.item_emb).all() or not np.isfinite(feats.user_emb).all():
            problems.append(f"user {user}: non-finite embedding values online")
        if (feats.seq_len > 0) and (feats.seq_action_types[: feats.seq_len] == 0).any():
            problems.append(f"user {user}: padding inside the first seq_len actions")
    share = found_items / max(len(item_ids), 1)
    if share < min_found:
        problems.append(f"only {found_items} of {len(item_ids)} items are online "
                        f"({share:.1%}); run `transact features materialize`")
    return QualityReport("materialized", not problems,
                         {"items_found": found_items, "items": len(item_ids),
                          "users_with_batch_emb": found_users}, problems)
