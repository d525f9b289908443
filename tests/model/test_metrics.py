"""HIT@3, AUC and log loss on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np

from transact.metrics import auc, hit_at_k, logloss, ranking_metrics, utility_score


def test_hit_at_3_hand_made_requests() -> None:
    # request 1: 5 candidates, positives ranked 1st and 4th -> 1 of min(3, 2) = 0.5
    # request 2: 4 candidates, one positive ranked 3rd -> 1 / 1 = 1.0
    # request 3: 4 candidates, no positive -> not counted
    # request 4: 3 candidates only -> not counted (every candidate is in the top 3)
    # request 5: 6 candidates, 4 positives ranked 1, 2, 5, 6 -> 2 / min(3, 4) = 2/3
    request = np.array([1] * 5 + [2] * 4 + [3] * 4 + [4] * 3 + [5] * 6)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5,
                       0.4, 0.3, 0.2, 0.1,
                       0.5, 0.4, 0.3, 0.2,
                       0.1, 0.2, 0.3,
                       0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    positives = np.array([1, 0, 0, 1, 0,
                          0, 0, 1, 0,
                          0, 0, 0, 0,
                          1, 0, 0,
                          1, 1, 0, 0, 1, 1])
    # shuffle rows: the result must not depend on input order
    perm = np.random.default_rng(0).permutation(len(request))
    hit = hit_at_k(request[perm], scores[perm], positives[perm])
    assert hit.n_requests == 3
    assert list(hit.request_ids) == [1, 2, 5]
    np.testing.assert_allclose(hit.per_request, [0.5, 1.0, 2 / 3])
    assert math.isclose(hit.value, (0.5 + 1.0 + 2 / 3) / 3)


def test_hit_at_3_perfect_and_worst_rankings() -> None:
    request = np.repeat(np.arange(50), 8)
    positives = np.zeros(400)
    positives[::8] = 1
    positives[1::8] = 1
    assert hit_at_k(request, positives, positives).value == 1.0
    assert hit_at_k(request, -positives, positives).value == 0.0


def test_utility_ranking_puts_hides_last() -> None:
    # one request, 4 candidates; the hide head is confident on candidate 0
    probs = np.array([[0.5, 0.5, 0.9], [0.2, 0.1, 0.0], [0.1, 0.1, 0.0], [0.1, 0.0, 0.0]])
    labels = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(utility_score(probs), [0.1, 0.3, 0.2, 0.1])
    metrics = ranking_metrics(np.zeros(4, np.int64), probs, labels)
    assert metrics["hit3_hide"] == 0.0  # the hidden item is ranked 4th: lower is better
    assert metrics["hit3_click"] == 1.0 and metrics["hit3_save"] == 1.0
    by_head = ranking_metrics(np.zeros(4, np.int64), probs, labels, rank_by="head")
    assert by_head["hit3_hide"] == 1.0  # the hide head itself finds the hide


def test_auc_and_logloss_known_values() -> None:
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert math.isnan(auc(np.array([0, 0]), np.array([0.1, 0.2])))
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert math.isclose(logloss(np.array([1, 0]), np.array([0.8, 0.4])), expected)
