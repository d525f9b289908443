"""Fixtures of the feature-platform tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from features.store import FeatureProfile, teardown


@pytest.fixture
def production_profile(tmp_path) -> Iterator[FeatureProfile]:
    """A production profile of its own (Redis db 5 + key prefix, a PostgreSQL schema, a Feast
    project), emptied before and after the test."""
    name = f"t{uuid.uuid4().hex[:8]}"
    profile = FeatureProfile.production(
        tmp_path / "features", project=name, key_prefix=f"transact_test:{name}:", redis_db=5,
        pg_schema=f"transact_test_{name}")
    try:
        profile.redis_client().ping()
    except Exception:  # noqa: BLE001 - any connection failure means "not here"
        pytest.skip("Redis on 127.0.0.1 is not reachable")
    teardown(profile)
    try:
        yield profile
    finally:
        teardown(profile)
