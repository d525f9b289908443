"""The retraining DAG's examples step: where its training rows start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from transact.errors import UserError


def test_a_bad_examples_start_is_refused() -> None:
    from training.pipeline import load_pipeline_config

    with pytest.raises(UserError, match="examples_start"):
        load_pipeline_config(None, {"examples_start": "yesterday"})


@pytest.mark.slow
def test_training_rows_start_at_the_first_event_unless_asked_otherwise(tmp_path: Path) -> None:
    """By default the examples hold every impression, also those before the first daily
    embedding (they get a zero batch embedding); ``first_embedding_day`` keeps only the rows
    from the first embedding day on. Validation and test rows are the same either way."""
    import torch

    from training.pinnerformer import parse_day
    from training.pipeline import build_training_set_step, load_pipeline_config, pinnerformer_step
    from transact.data.examples import read_examples
    from transact.data.synthetic import WorldConfig, generate_world

    torch.set_num_threads(1)
    generate_world(tmp_path / "world", WorldConfig(n_users=60, n_items=300, n_days=9, seed=5))
    overrides = {"dataset_dir": str(tmp_path / "world"), "work_dir": str(tmp_path / "work"),
                 "embeddings_dir": str(tmp_path / "pinnerformer"),
                 "pinnerformer": {"train_steps": 10, "history_len": 32, "window_days": 2,
                                  "warmup_days": 2}}
    cfg = load_pipeline_config(None, overrides)
    pinnerformer_step(cfg)
    first_day = parse_day(min(p.name.removeprefix("date=") for p in
                              (tmp_path / "pinnerformer" / "user_embeddings").glob("date=*")))
    every = build_training_set_step(cfg, "every")["examples_dir"]
    later = build_training_set_step(
        load_pipeline_config(None, {**overrides, "examples_start": "first_embedding_day"}),
        "later")["examples_dir"]
    every_train = read_examples(every, "train").column("request_time_ms").to_numpy()
    later_train = read_examples(later, "train").column("request_time_ms").to_numpy()
    assert (every_train < first_day).any() and not (later_train < first_day).any()
    assert np.array_equal(np.sort(every_train[every_train >= first_day]), np.sort(later_train))
    for split in ("val", "test"):
        assert read_examples(every, split).num_rows == read_examples(later, split).num_rows
