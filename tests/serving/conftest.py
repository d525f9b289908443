"""Fixtures of the serving tests: a small examples directory and trained artifacts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from world import train_artifact, write_examples  # noqa: E402


@pytest.fixture(scope="session")
def serving_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_examples(tmp_path_factory.mktemp("serving") / "examples")


@pytest.fixture(scope="session")
def trained_artifacts(serving_examples: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> tuple[Path, Path]:
    """Two artifacts of the same shape, different weights (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("models")
    return (train_artifact(serving_examples, root / "a", seed=0),
            train_artifact(serving_examples, root / "b", seed=1))
