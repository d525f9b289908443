"""Shared test fixtures."""

from __future__ import annotations

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
