"""The feature platform's part of ``transact demo``, on the embedded profile (no servers).

Replays a dataset's events through the durable local queue and the exactly-once processor into
the Feast online store, stages and materialises the batch views (item content and the daily
user embeddings the PinnerFormer job, ``training.pinnerformer``, wrote before), and reads one
user's ranking features back through the serving read path.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from transact.data.dataset import read_events


def run_feature_demo(
    dataset_dir: Path | str,
    workdir: Path | str,
    user_embeddings: Path | str,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ingestion and materialisation of ``user_embeddings`` (the daily job's output
    directory); return a summary."""
    from features.online import open_reader
    from features.processor import ProcessorConfig, open_processor, open_stream
    from features.replay import replay_events
    from features.store import apply, load_profile, materialize_user_embeddings, stage_items

    dataset_dir, workdir = Path(dataset_dir), Path(workdir)
    shutil.rmtree(workdir / "store", ignore_errors=True)
    profile = load_profile("embedded", root=workdir / "store")
    summary: dict[str, Any] = {"profile": "embedded", "root": str(profile.root)}

    apply(profile)
    summary["item_rows_staged"] = stage_items(profile, dataset_dir / "items.parquet")

    started = time.perf_counter()
    events = read_events(dataset_dir)
    summary["events_published"] = replay_events(open_stream(profile), events)
    # a replay of historical data: the wall-clock "from the future" check does not apply
    processor = open_processor(profile, ProcessorConfig(max_future_ms=None), feast_online=True)
    total = processor.run(until_idle=True, progress=progress)
    elapsed = time.perf_counter() - started
    summary["stream"] = {
        "accepted": total.accepted, "engagements": total.engagements,
        "duplicates": total.duplicates, "dead_letters": total.dead,
        "users_updated": total.users_updated,
        "events_per_s": round(total.messages / max(elapsed, 1e-9)),
    }

    summary["materialized"] = materialize_user_embeddings(profile, user_embeddings,
                                                          include_items=True)

    user_id = int(events.column("user_id")[0].as_py())
    candidates = np.unique(events.column("item_id").to_numpy())[:500]
    feats = open_reader(profile).get_ranking_features(user_id, candidates)
    summary["read_back"] = {"user_id": user_id, "seq_len": int(feats.seq_len),
                            "user_emb_found": bool(feats.user_emb_found),
                            "candidates": len(candidates),
                            "items_found": int(np.sum(feats.item_found))}
    return summary
