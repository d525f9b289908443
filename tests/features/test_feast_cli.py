"""Feast's own CLI works in each profile's repo directory: ``feast apply`` discovers the same
objects the platform applies, and ``feast materialize`` loads what the platform staged, which
the platform's reader then finds online.

Each test copies ``features/repo/<profile>/`` into a temporary tree (so the CLI's default
``data/features`` lands in the temporary directory, not in the checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from features.online import FeastReader
from features.repo.definitions import FEATURE_STORE_YAML, embedded_root
from features.store import FeatureProfile, ensure_offline_tables, feature_objects, stage_items
from transact.schema import ITEM_SCHEMA

REPO = Path(__file__).resolve().parents[2] / "features" / "repo"
FEAST = Path(sys.executable).parent / "feast"


def _copy_repo(kind: str, tmp_path: Path) -> Path:
    target = tmp_path / "features" / "repo" / kind
    shutil.copytree(REPO / kind, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _feast(repo_dir: Path, *args: str) -> str:
    env = {**os.environ, "FEAST_USAGE": "False"}
    done = subprocess.run([str(FEAST), *args], cwd=repo_dir, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _items(path: Path, n: int = 40) -> np.ndarray:
    emb = np.random.default_rng(0).standard_normal((n, 32)).astype(np.float32)
    pq.write_table(pa.table({
        "item_id": pa.array(np.arange(1, n + 1), pa.int64()),
        "content_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 32),
        "topic": pa.array(np.arange(n) % 3, pa.int32()),
        "title": pa.array([f"item {i}" for i in range(n)]),
    }, schema=ITEM_SCHEMA), path)
    return emb


def _describe(views) -> dict[str, tuple]:  # noqa: ANN001
    def where(source) -> str:  # noqa: ANN001
        path = getattr(source, "path", None)
        return path if path is not None else source.get_table_query_string()

    return {view.name: (sorted((f.name, str(f.dtype)) for f in view.features), view.ttl,
                        view.batch_source.name, where(view.batch_source),
                        sorted(view.entities))
            for view in views}


def _registered(profile: FeatureProfile) -> dict[str, tuple]:
    return _describe(profile.feature_store().list_feature_views())


def _declared(profile: FeatureProfile) -> dict[str, tuple]:
    return _describe(o for o in feature_objects(profile) if hasattr(o, "features"))


def _apply_materialize_read(repo_dir: Path, profile: FeatureProfile, tmp_path: Path) -> None:
    out = _feast(repo_dir, "apply")
    assert "user_batch_embedding" in out and "item_content" in out
    # the CLI registered exactly the platform's definitions, bound to the same places
    assert _registered(profile) == _declared(profile)

    emb = _items(tmp_path / "items.parquet")
    assert stage_items(profile, tmp_path / "items.parquet") == 40
    _feast(repo_dir, "materialize", "1995-01-01T00:00:00", "2100-01-01T00:00:00",
           "--views", "item_content")
    feats = FeastReader(profile).get_ranking_features(1, [3, 40, 41])
    assert feats.item_found.tolist() == [True, True, False]
    np.testing.assert_array_equal(feats.item_emb[:2], emb[[2, 39]])


@pytest.mark.slow
def test_feast_cli_in_the_embedded_repo_dir_uses_the_platforms_definitions(tmp_path):
    repo_dir = _copy_repo("embedded", tmp_path)
    root = embedded_root(repo_dir)
    assert root == (tmp_path / "data" / "features").resolve()
    profile = FeatureProfile.embedded(root)
    _apply_materialize_read(repo_dir, profile, tmp_path)


@pytest.mark.slow
@pytest.mark.services
def test_feast_cli_in_the_production_repo_dir_uses_the_platforms_definitions(
        tmp_path, production_profile):
    profile = production_profile
    repo_dir = _copy_repo("production", tmp_path)
    # the copy points at the test's own schema, Redis database and project
    config = yaml.safe_load((repo_dir / FEATURE_STORE_YAML).read_text())
    config["project"] = profile.project
    config["registry"]["path"] = profile.pg_url
    config["online_store"]["connection_string"] = (f"{profile.redis_host}:{profile.redis_port},"
                                                   f"db={profile.redis_db}")
    config["offline_store"]["db_schema"] = profile.pg_schema
    (repo_dir / FEATURE_STORE_YAML).write_text(yaml.safe_dump(config))
    ensure_offline_tables(profile)
    _apply_materialize_read(repo_dir, profile, tmp_path)


def test_the_code_config_is_the_profile_yaml_with_the_profiles_places(tmp_path):
    from feast.repo_config import load_repo_config

    for kind in ("embedded", "production"):
        cli = load_repo_config(REPO / kind, REPO / kind / FEATURE_STORE_YAML)
        root = embedded_root(REPO / kind) if kind == "embedded" else tmp_path / kind
        ours = FeatureProfile(kind=kind, root=root).repo_config()
        assert ours.project == cli.project and ours.provider == cli.provider
        assert ours.entity_key_serialization_version == cli.entity_key_serialization_version
        assert ours.online_store.type == cli.online_store.type
        assert ours.offline_store.type == cli.offline_store.type
        if kind == "embedded":
            assert Path(ours.online_store.path) == (REPO / kind / cli.online_store.path).resolve()
            assert Path(ours.registry.path) == (REPO / kind / cli.registry.path).resolve()
        else:
            assert ours.online_store.connection_string == cli.online_store.connection_string
            assert ours.registry.path == cli.registry.path
            assert ours.offline_store.db_schema == cli.offline_store.db_schema
