"""The paired comparison of two models on the same items (agent/bench/paired.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.bench.paired import describe, paired_difference


def outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    order = np.random.default_rng(1).permutation(len(a))  # the pairing, not the order, counts
    return a[order], b[order]


def test_the_difference_and_mcnemars_exact_p_come_from_the_discordant_items() -> None:
    a, b = outcomes(both=60, only_a=10, only_b=30, neither=20)
    d = paired_difference(a, b)
    assert (d["n"], d["only_a"], d["only_b"]) == (120, 10, 30)
    assert d["a"] == pytest.approx(70 / 120) and d["b"] == pytest.approx(90 / 120)
    assert d["difference"] == pytest.approx(20 / 120)
    # two-sided exact binomial: 2 * P(X <= 10), X ~ Binomial(40, 1/2)
    expected = 2 * sum(math.comb(40, k) for k in range(11)) / 2**40
    assert d["mcnemar_p"] == pytest.approx(expected, rel=1e-9)
    lo, hi = d["ci"]
    assert 0.0 < lo < d["difference"] < hi  # 20 of 40 discordant one way is no accident
    # swapping the models mirrors everything
    r = paired_difference(b, a)
    assert r["difference"] == pytest.approx(-d["difference"])
    assert r["mcnemar_p"] == pytest.approx(d["mcnemar_p"])
    assert "+16.67 points" in describe(d) and "McNemar p" in describe(d)


def test_a_difference_within_chance_has_an_interval_across_zero() -> None:
    a, b = outcomes(both=2400, only_a=60, only_b=70, neither=1000)
    d = paired_difference(a, b)
    assert d["mcnemar_p"] > 0.4
    assert d["ci"][0] < 0.0 < d["ci"][1]
    same = paired_difference(a, a)
    assert same["mcnemar_p"] == 1.0 and same["ci"] == [0.0, 0.0]


def test_the_multinomial_bootstrap_matches_resampling_the_items() -> None:
    a, b = outcomes(both=300, only_a=25, only_b=45, neither=130)
    d = paired_difference(a, b, n_boot=20000, level=0.9)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(a), size=(4000, len(a)))
    diffs = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    ref = np.quantile(diffs, [0.05, 0.95])
    np.testing.assert_allclose(d["ci"], ref, atol=0.004)  # Monte Carlo error of both


def test_mismatched_or_empty_outcomes_are_refused() -> None:
    a, b = outcomes(both=5, only_a=1, only_b=1, neither=3)
    with pytest.raises(ValueError, match="one length"):
        paired_difference(a, b[:-1])
    with pytest.raises(ValueError, match="no items"):
        paired_difference(a[:0], b[:0])
    with pytest.raises(ValueError, match="level"):
        paired_difference(a, b, level=1.0)
