"""The label-weight matrix M and the per-user weight w_u enter the loss as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transact.errors import UserError
from transact.model.config import LossConfig
from transact.model.loss import head_targets, multitask_loss, user_weights


def bce(logit: float, target: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_identity_matrix_is_plain_per_head_bce() -> None:
    logits = torch.tensor([[0.3, -1.0, 2.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0]])  # a save
    eye = torch.tensor(LossConfig().matrix())
    expected = bce(0.3, 0) + bce(-1.0, 1) + bce(2.0, 0)
    assert math.isclose(float(multitask_loss(logits, labels, eye)), expected, rel_tol=1e-6)


def test_off_diagonal_entry_makes_a_save_a_weighted_click_positive() -> None:
    logits = torch.tensor([[0.3, -1.0, 2.0], [0.1, 0.2, -0.5]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # a save, a skip
    m = torch.tensor([[1.0, 0.5, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    targets, weights = head_targets(labels, m)
    assert targets.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    assert weights.tolist() == [[0.5, 2.0, 1.0], [1.0, 1.0, 1.0]]
    row0 = 0.5 * bce(0.3, 1) + 2.0 * bce(-1.0, 1) + bce(2.0, 0)
    row1 = bce(0.1, 0) + bce(0.2, 0) + bce(-0.5, 0)
    assert math.isclose(float(multitask_loss(logits, labels, m)), (row0 + row1) / 2, rel_tol=1e-6)
    eye = torch.eye(3)
    assert not math.isclose(float(multitask_loss(logits, labels, eye)), (row0 + row1) / 2)


def test_user_weight_scales_each_row() -> None:
    logits = torch.tensor([[0.3, -1.0, 2.0], [0.1, 0.2, -0.5]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    eye = torch.eye(3)
    per_row = [bce(0.3, 0) + bce(-1.0, 1) + bce(2.0, 0), bce(0.1, 1) + bce(0.2, 0) + bce(-0.5, 0)]
    loss = multitask_loss(logits, labels, eye, torch.tensor([2.0, 0.5]))
    assert math.isclose(float(loss), (2.0 * per_row[0] + 0.5 * per_row[1]) / 2, rel_tol=1e-6)


def test_inverse_sqrt_activity_weights() -> None:
    users = np.array([7, 7, 7, 7, 9])  # user 7: 4 rows, user 9: 1 row
    weights = user_weights(users, "inverse_sqrt_activity")
    raw = np.array([0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(weights, raw / raw.mean(), rtol=1e-6)
    assert math.isclose(float(weights.mean()), 1.0, rel_tol=1e-6)
    np.testing.assert_array_equal(user_weights(users, "uniform"), np.ones(5))


def test_bad_label_matrix_is_a_user_error() -> None:
    with pytest.raises(UserError, match="3x3"):
        LossConfig(label_weights=[[1.0, 0.0]]).validate()
    with pytest.raises(UserError, match="no positive label"):
        LossConfig(label_weights=[[0, 0, 0], [0, 1, 0], [0, 0, 1]]).validate()
