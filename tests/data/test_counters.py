"""Point-in-time engagement counters: strictly before the request, over every user."""

from __future__ import annotations

import numpy as np
import pytest

from transact.data.counters import EngagementCounters, counter_features
from transact.errors import UserError
from transact.schema import ActionType

SKIP, CLICK, SAVE, HIDE = (int(a) for a in (ActionType.SKIP, ActionType.CLICK, ActionType.SAVE,
                                            ActionType.HIDE))


def test_counts_are_strictly_before_the_request_and_per_key():
    keys = np.array([7, 7, 7, 7, 9, 2**50])
    times = np.array([100, 200, 200, 300, 150, 100])
    actions = np.array([SKIP, CLICK, SAVE, HIDE, CLICK, SAVE])
    counters = EngagementCounters(keys, times, actions)
    got = counters.lookup(np.array([7, 7, 7, 7, 9, 2**50, 8, 7]),
                          np.array([100, 201, 200, 10**6, 151, 101, 500, 50]))
    assert got.tolist() == [
        [0, 0, 0, 0],  # at its own time: nothing (the request's other outcomes are hidden)
        [3, 1, 1, 0],
        [1, 0, 0, 0],  # two events at exactly 200: neither is counted at 200
        [4, 1, 1, 1],
        [1, 1, 0, 0],
        [1, 0, 1, 0],  # a key above 2**40 is exact
        [0, 0, 0, 0],  # unknown key
        [0, 0, 0, 0],  # before its first event
    ]
    assert got.dtype == np.int32


def test_counter_features_shrink_rates_and_rank_by_them():
    item = np.array([[0, 0, 0, 0], [100, 50, 10, 0], [100, 5, 1, 40]])
    user = np.zeros((3, 4), np.int32)
    feats = counter_features(item, user)
    assert feats.shape == (3, 8) and np.isfinite(feats).all()
    assert feats[1, 1] > feats[0, 1] > feats[2, 1]  # click rate: 50 % > no history > 5 %
    assert feats[2, 3] > feats[1, 3]  # hide rate
    assert (feats[:, 4] == 0).all()  # no user history: log1p(0)


def test_mismatched_inputs_are_an_error():
    with pytest.raises(UserError):
        EngagementCounters(np.array([1, 2]), np.array([1]), np.array([1, 1]))
