"""bench/hide_stacking.py: the user bias it stacks is point-in-time."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_user_bias_counts_only_the_users_events_strictly_before_the_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("hide_stacking", None)
    hide_stacking = importlib.import_module("hide_stacking")
    # user 1: deviations +1 at t=10, -1 at t=20, +3 at t=30; user 2: +5 at t=5 (given unsorted)
    ev_user = np.array([1, 2, 1, 1])
    ev_time = np.array([30, 5, 10, 20])
    ev_dev = np.array([3.0, 5.0, 1.0, -1.0])
    users = np.array([1, 1, 1, 1, 2, 3])
    times = np.array([10, 11, 20, 31, 6, 100])
    bias, n = hide_stacking.user_bias_asof(users, times, ev_user, ev_time, ev_dev)
    shrink = hide_stacking.USER_SHRINK
    assert n.tolist() == [0, 1, 1, 3, 1, 0]
    np.testing.assert_allclose(bias, [0.0, 1 / (1 + shrink), 1 / (1 + shrink),
                                      3 / (3 + shrink), 5 / (1 + shrink), 0.0])
