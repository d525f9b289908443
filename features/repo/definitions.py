"""The feature repository's objects for one profile: what ``transact features apply`` registers
and what Feast's own CLI discovers in ``features/repo/<profile>/``.

Each view is defined once (:mod:`features.repo.views`, over the sources of
:mod:`features.repo.sources`); this module binds them to a profile's sources.

* The platform (``features.store.feature_objects``) calls :func:`build` with the profile's own
  directory and table prefix (tests and jobs point profiles at their own places).
* ``features/repo/<profile>/definitions.py`` calls :func:`for_repo_dir`, which reads the
  directory's ``feature_store.yaml`` (the profile's Feast configuration, also the base of
  ``FeatureProfile.repo_config``) and exposes the same objects as module attributes, so that
  ``feast apply`` / ``feast materialize`` / ``feast ui`` run in that directory find them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from feast import Entity, FeatureView

from features.repo.entities import item, user
from features.repo.sources import Sources, make_sources
from features.repo.views import make_views

FEATURE_STORE_YAML = "feature_store.yaml"
REPO_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Definitions:
    """Entities, sources and views of one profile."""

    user: Entity
    item: Entity
    sources: Sources
    user_action_sequence: FeatureView
    user_batch_embedding: FeatureView
    item_content: FeatureView
    item_engagement: FeatureView
    user_engagement: FeatureView

    def objects(self) -> list[Any]:
        """What ``FeatureStore.apply`` registers (sources come with their views)."""
        return [self.user, self.item, self.user_action_sequence, self.user_batch_embedding,
                self.item_content, self.item_engagement, self.user_engagement]


def build(kind: str, offline_dir: Path | str, table_prefix: str = "") -> Definitions:
    """The objects of profile kind ``embedded`` (Parquet files under ``offline_dir``) or
    ``production`` (PostgreSQL tables ``table_prefix + name``)."""
    sources = make_sources(kind, Path(offline_dir), table_prefix)
    sequence, user_emb, items, item_counts, user_counts = make_views(sources)
    return Definitions(user=user, item=item, sources=sources, user_action_sequence=sequence,
                       user_batch_embedding=user_emb, item_content=items,
                       item_engagement=item_counts, user_engagement=user_counts)


def profile_yaml(kind: str) -> Path:
    """The ``feature_store.yaml`` of a profile kind."""
    return REPO_ROOT / kind / FEATURE_STORE_YAML


def read_store_yaml(path: Path | str) -> dict[str, Any]:
    """A ``feature_store.yaml`` as Feast reads it (environment variables expanded)."""
    return yaml.safe_load(os.path.expandvars(Path(path).read_text()))


def embedded_root(repo_dir: Path | str) -> Path:
    """The embedded profile's local directory named by a repo directory's yaml (the directory
    of its SQLite online store; the offline Parquet files are under ``<root>/offline``)."""
    repo_dir = Path(repo_dir)
    online = Path(read_store_yaml(repo_dir / FEATURE_STORE_YAML)["online_store"]["path"])
    return (online if online.is_absolute() else repo_dir / online).resolve().parent


def for_repo_dir(repo_dir: Path | str) -> Definitions:
    """The objects for Feast's CLI run in ``repo_dir`` (a directory with a profile's yaml)."""
    repo_dir = Path(repo_dir)
    config = read_store_yaml(repo_dir / FEATURE_STORE_YAML)
    if config["offline_store"]["type"] == "file":
        root = embedded_root(repo_dir)
        root.mkdir(parents=True, exist_ok=True)  # Feast creates the registry file, not its dirs
        return build("embedded", root / "offline")
    return build("production", repo_dir / "offline", "")

