"""Fixtures of the feature-platform tests.

The services fixtures check that the local Redis / PostgreSQL answer and skip the test when they
do not; tests using them carry the ``services`` marker, so in CI (``CI=true``) such a skip is a
failure (``tests/conftest.py``), never a silent pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from features.store import FeatureProfile, teardown

#: the Redis database the tests use (the platform's default is 0)
TEST_REDIS_DB = 5


def _unreachable(profile: FeatureProfile, postgres: bool) -> str | None:
    """Why the services are not usable, or ``None`` when they answer."""
    try:
        profile.redis_client().ping()
    except Exception as err:  # noqa: BLE001 - any connection failure means "not here"
        return f"Redis on {profile.redis_host}:{profile.redis_port} is not reachable ({err})"
    if postgres:
        import psycopg

        try:
            psycopg.connect(profile.pg_conninfo(), connect_timeout=3).close()
        except Exception as err:  # noqa: BLE001
            return (f"PostgreSQL on {profile.pg_host}:{profile.pg_port} is not reachable "
                    f"({err})")
    return None


def new_production_profile(tmp_path) -> FeatureProfile:
    """A production profile of its own: Redis db 5 with its own key prefix, its own
    PostgreSQL schema and Feast project."""
    name = f"t{uuid.uuid4().hex[:8]}"
    return FeatureProfile.production(
        tmp_path / "features", project=name, key_prefix=f"transact_test:{name}:",
        redis_db=TEST_REDIS_DB, pg_schema=f"transact_test_{name}")


@pytest.fixture
def production_profile(tmp_path) -> Iterator[FeatureProfile]:
    """A production profile of its own (Redis db 5 + key prefix, a PostgreSQL schema, a Feast
    project), emptied before and after the test."""
    profile = new_production_profile(tmp_path)
    reason = _unreachable(profile, postgres=True)
    if reason:
        pytest.skip(reason)
    teardown(profile)
    try:
        yield profile
    finally:
        teardown(profile)


@pytest.fixture
def redis_client() -> Any:
    """A client of the test Redis database (services tests that need Redis only)."""
    profile = FeatureProfile.production(redis_db=TEST_REDIS_DB)
    reason = _unreachable(profile, postgres=False)
    if reason:
        pytest.skip(reason)
    return profile.redis_client()
