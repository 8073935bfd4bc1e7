"""models/average_weights.py's numbers: the mean of weight snapshots, the BatchNorm moments
it sets (vgg48.channel_moments) and where it finds each epoch (TensorFlow itself is
build-time only)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "models"))
import average_weights as aw
import vgg48


def test_mean_weights_is_the_elementwise_mean_in_each_dtype() -> None:
    a = [np.array([[1.0, 2.0]], np.float32), np.array([4.0], np.float16)]
    b = [np.array([[3.0, 6.0]], np.float32), np.array([0.0], np.float16)]
    out = aw.mean_weights([a, b])
    np.testing.assert_array_equal(out[0], [[2.0, 4.0]])
    np.testing.assert_array_equal(out[1], [2.0])
    assert [o.dtype for o in out] == [np.float32, np.float16]


def test_mean_weights_refuses_snapshots_of_different_networks() -> None:
    with pytest.raises(ValueError, match="snapshot 1"):
        aw.mean_weights([[np.zeros(3)], [np.zeros(4)]])
    with pytest.raises(ValueError, match="no snapshots"):
        aw.mean_weights([])


def test_channel_moments_from_running_sums_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (500, 4))
    total, total_sq = np.zeros(4), np.zeros(4)
    for chunk in np.array_split(x, 7):  # as batches arrive
        total += chunk.sum(axis=0)
        total_sq += (chunk**2).sum(axis=0)
    mean, var = vgg48.channel_moments(total, total_sq, len(x))
    np.testing.assert_allclose(mean, x.mean(axis=0))
    np.testing.assert_allclose(var, x.var(axis=0))  # population variance, as BatchNorm uses


def test_epoch_source_names_the_missing_epoch(tmp_path) -> None:
    (tmp_path / "epoch-007.weights.h5").write_bytes(b"")
    assert aw.epoch_source(tmp_path, 7) == tmp_path / "epoch-007.weights.h5"
    with pytest.raises(FileNotFoundError, match="epoch 8"):
        aw.epoch_source(tmp_path, 8)
