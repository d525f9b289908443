"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_data import write_tiny_dataset

from transact.runtime import quiet_telemetry

quiet_telemetry()


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
