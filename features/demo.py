"""The feature platform's part of ``transact demo``, on the embedded profile (no servers).

Replays a dataset's events through the durable local queue and the exactly-once processor into
the Feast online store, runs the daily PinnerFormer job, stages and materialises the batch views,
and reads one user's ranking features back through the serving read path.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from transact.data.dataset import DatasetMeta, read_events
from transact.schema import DAY_MS


def run_feature_demo(
    dataset_dir: Path | str,
    workdir: Path | str,
    seed: int = 0,
    progress: bool = True,
    window_days: int = 2,
    warmup_days: int = 2,
    train_steps: int = 150,
    history_len: int = 128,
) -> dict[str, Any]:
    """Run ingestion, the daily embedding job and materialisation; return a summary.

    The summary's ``user_embeddings_path`` is the PinnerFormer output (for the example builder)
    and ``first_embedding_day_ms`` the first day it covers.
    """
    from features.online import open_reader
    from features.pinnerformer import PinnerFormerConfig, run_daily_embeddings
    from features.processor import ProcessorConfig, open_processor, open_stream
    from features.replay import replay_events
    from features.store import apply, load_profile, materialize, stage_items, stage_user_embeddings

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

    # a lighter schedule than the job's defaults (600 steps, 256 actions) keeps the demo short
    cfg = PinnerFormerConfig(window_days=window_days, warmup_days=warmup_days, seed=seed,
                             train_steps=train_steps, history_len=history_len)
    stats = run_daily_embeddings(dataset_dir, workdir / "pinnerformer", cfg, progress=progress)
    summary["pinnerformer"] = {"days": f"{stats.days[0]} .. {stats.days[-1]}",
                               "rows": sum(stats.rows_per_day.values()),
                               "trained_until": stats.trained_until}
    summary["user_emb_rows_staged"] = stage_user_embeddings(profile, stats.output_dir)
    summary["materialized"] = materialize(profile)

    meta = DatasetMeta.read(dataset_dir)
    user_id = int(events.column("user_id")[0].as_py())
    candidates = np.unique(events.column("item_id").to_numpy())[:500]
    feats = open_reader(profile).get_ranking_features(user_id, candidates)
    summary["read_back"] = {"user_id": user_id, "seq_len": int(feats.seq_len),
                            "user_emb_found": bool(feats.user_emb_found),
                            "candidates": len(candidates),
                            "items_found": int(np.sum(feats.item_found))}
    first_day = np.datetime64(stats.days[0]).astype("datetime64[ms]").astype(np.int64)
    summary["user_embeddings_path"] = stats.output_dir
    summary["first_embedding_day_ms"] = int(first_day)
    summary["dataset_days"] = (meta.max_timestamp_ms - meta.min_timestamp_ms) // DAY_MS + 1
    return summary
