"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_data import write_tiny_dataset

from transact.data.dataset import DatasetMeta
from transact.runtime import quiet_telemetry

quiet_telemetry()


@pytest.fixture(scope="session")
def movielens_dataset(tmp_path_factory) -> tuple[Path, DatasetMeta]:
    """The real MovieLens-100K dataset, built once per session with the default cache (so
    reruns skip the download and the text embedding)."""
    from transact.data.movielens import build_movielens_dataset

    out = tmp_path_factory.mktemp("movielens")
    return out, build_movielens_dataset(out)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Callable[..., Path]:
    def make(events, **kwargs) -> Path:
        return write_tiny_dataset(tmp_path / "dataset", events, **kwargs)

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (``CI=true``) the services run, so a ``services`` test that skips is a failure."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and item.get_closest_marker("services") is not None
            and os.environ.get("CI", "").lower() in ("1", "true", "yes")):
        report.outcome = "failed"
        report.longrepr = f"services test skipped in CI: {report.longrepr}"


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """With pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``): the tests that build the
    MovieLens dataset share one on-disk cache, so they run on one worker."""
    for item in items:
        if ("movielens_dataset" in getattr(item, "fixturenames", ())
                or "movielens" in item.path.name):
            item.add_marker(pytest.mark.xdist_group("movielens"))
