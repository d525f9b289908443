"""MovieLens (1997-98) through the embedded feature store: the daily user embedding of a user
is materialised and read back online.

The items' validity stamp and the materialisation window used to be fixed calendar dates
(2000-01-01, from 1999-12-31): MovieLens' embeddings were staged but never reached the online
store, and nothing said so.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from features.online import FeastReader
from features.store import (
    FeatureProfile,
    apply,
    materialize,
    source_time_range,
    stage_items,
    stage_user_embeddings,
)
from training.pinnerformer import PinnerFormerConfig, run_daily_embeddings
from transact.model.pinnerformer import PinnerFormerModelConfig
from transact.schema import DAY_MS


@pytest.mark.slow
def test_movielens_daily_embedding_is_read_back_online(tmp_path, movielens_dataset):
    dataset, meta = movielens_dataset
    profile = FeatureProfile.embedded(tmp_path / "features", project="movielens_online")
    apply(profile)
    stage_items(profile, dataset)
    last_day = (meta.max_timestamp_ms // DAY_MS) * DAY_MS
    cfg = PinnerFormerConfig(train_steps=2, history_len=16, batch_size=16, n_random_negatives=16,
                             model=PinnerFormerModelConfig(n_layers=1, item_id_buckets=0))
    stats = run_daily_embeddings(dataset, tmp_path / "pinnerformer", cfg, days=[last_day],
                                 created_at_ms=meta.max_timestamp_ms)
    assert stats.rows_per_day[stats.days[0]] > 900
    assert stage_user_embeddings(profile, stats.output_dir) > 900
    # the staged rows are 1998's, older than any fixed "always valid" date the store used
    lo, hi = source_time_range(profile, "user_batch_embedding")
    assert lo == hi == last_day

    done = materialize(profile)
    assert done["materialized"] == ["item_content", "user_batch_embedding"]

    rows = pq.read_table(stats.output_dir).to_pandas()
    written = rows[rows["user_emb"].map(lambda v: bool(np.any(v)))].iloc[0]
    user_id = int(written["user_id"])
    feats = FeastReader(profile).get_ranking_features(user_id, [1, 50, 1682])
    assert feats.user_emb_found, "the MovieLens user embedding did not reach the online store"
    np.testing.assert_array_equal(feats.user_emb, np.asarray(written["user_emb"], np.float32))
    assert feats.item_found.all()
    items = pq.read_table(dataset / "items.parquet")
    first = items.filter(pc.equal(items.column("item_id"), 1)).column("content_emb")[0]
    np.testing.assert_array_equal(feats.item_emb[0], np.asarray(first.as_py(), np.float32))
