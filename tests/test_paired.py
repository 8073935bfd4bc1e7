"""The paired comparison of two models on the same items (agent/bench/paired.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.bench.paired import compare_predictions, describe, paired_difference, read_predictions


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
    assert 0.0 < lo < d["difference"] < hi  # 30 of the 40 discordant items favour B
    assert hi <= 40 / 120  # B cannot gain more than every discordant item
    # swapping the models mirrors everything
    r = paired_difference(b, a)
    assert r["difference"] == pytest.approx(-d["difference"])
    assert r["mcnemar_p"] == pytest.approx(d["mcnemar_p"])
    assert r["ci"] == pytest.approx([-hi, -lo])
    assert "+16.67 points" in describe(d) and "McNemar p" in describe(d)


def test_a_difference_within_chance_has_an_interval_across_zero() -> None:
    a, b = outcomes(both=2400, only_a=60, only_b=70, neither=1000)
    d = paired_difference(a, b)
    assert d["mcnemar_p"] > 0.4
    assert d["ci"][0] < 0.0 < d["ci"][1]
    same = paired_difference(a, a)
    assert same["mcnemar_p"] == 1.0 and same["ci"] is None
    assert "every item read the same" in describe(same)


@pytest.mark.parametrize("discordant", [2, 4, 5, 6, 9, 20, 41])
def test_the_interval_leaves_out_zero_exactly_when_the_test_says_chance_is_unlikely(
    discordant: int,
) -> None:
    # a small set, where a bootstrap interval would be too narrow: 51 photos
    for only_b in range(discordant + 1):
        a, b = outcomes(both=51 - discordant, only_a=discordant - only_b, only_b=only_b, neither=0)
        d = paired_difference(a, b)
        lo, hi = d["ci"]
        assert (lo > 0.0 or hi < 0.0) == (d["mcnemar_p"] < 0.05), (only_b, d)
        assert lo <= d["difference"] <= hi
    # all one way: two photos are never enough, six are
    a, b = outcomes(both=51 - discordant, only_a=0, only_b=discordant, neither=0)
    assert (paired_difference(a, b)["mcnemar_p"] < 0.05) == (discordant >= 6)


def test_mismatched_or_empty_outcomes_are_refused() -> None:
    a, b = outcomes(both=5, only_a=1, only_b=1, neither=3)
    with pytest.raises(ValueError, match="one length"):
        paired_difference(a, b[:-1])
    with pytest.raises(ValueError, match="no items"):
        paired_difference(a[:0], b[:0])
    with pytest.raises(ValueError, match="level"):
        paired_difference(a, b, level=1.0)


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_prediction_files_that_cannot_be_paired_are_refused(tmp_path: Path) -> None:
    head = "file,expression,gender,predicted"
    a = read_predictions(
        write(tmp_path / "a.csv", [head, "x.jpg,happy,m,happy", "y.jpg,neutral,f,"])
    )
    assert a["y.jpg"]["predicted"] == ""  # no face: read as wrong, not refused
    # a BOM (a file saved again by a spreadsheet) is read
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "a.csv").read_bytes())
    assert set(read_predictions(bom)) == {"x.jpg", "y.jpg"}
    with pytest.raises(ValueError, match="line 3: not a prediction row"):
        read_predictions(write(tmp_path / "short.csv", [head, "x.jpg,happy,m,happy", "y.jpg"]))
    with pytest.raises(ValueError, match=r"line 3: x\.jpg appears twice"):
        read_predictions(write(tmp_path / "twice.csv", [head, "x.jpg,happy,m,", "x.jpg,happy,m,"]))
    b = read_predictions(
        write(tmp_path / "b.csv", [head, "x.jpg,happy,f,happy", "y.jpg,neutral,f,"])
    )
    with pytest.raises(ValueError, match=r"x\.jpg: gender 'm' in one file, 'f' in the other"):
        compare_predictions(a, b, ["gender"])
    with pytest.raises(ValueError, match="no column 'age' in both files"):
        compare_predictions(a, a, ["age"])
    assert compare_predictions(a, b)["overall"]["ci"] is None  # same predictions
