"""agent.physio.dsp computes what scipy computes, on random and edge-case inputs.

The runtime path uses these numpy versions so that the agent never imports scipy (60 MB
of resident memory); scipy stays the reference they are checked against here.
"""

from __future__ import annotations

import numpy as np
import pytest

from agent.physio import dsp

signal = pytest.importorskip("scipy.signal", reason="scipy is the reference for agent.physio.dsp")
ndimage = pytest.importorskip("scipy.ndimage", reason="scipy is the reference")
interpolate = pytest.importorskip("scipy.interpolate", reason="scipy is the reference")

SEEDS = range(40)


def close(a: np.ndarray, b: np.ndarray, rel: float = 1e-11) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = float(np.max(np.abs(b))) if b.size else 1.0
    assert float(np.max(np.abs(a - b), initial=0.0)) <= rel * max(scale, 1e-300)


def beats(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    rr = rng.normal(850.0, 60.0, n)
    return np.cumsum(rr) / 1000.0, rr


@pytest.mark.parametrize("seed", SEEDS)
def test_spline_matches_scipy_cubic_spline(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t, rr = beats(rng, int(rng.integers(4, 400)))
    grid = t[0] + np.arange(int((t[-1] - t[0]) * 4) + 1) / 4.0
    grid = np.r_[grid, t]  # the knots themselves too
    close(dsp.not_a_knot_spline(t, rr, grid), interpolate.CubicSpline(t, rr)(grid))


def test_spline_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(ValueError, match="4 knots"):
        dsp.not_a_knot_spline(np.arange(3.0), np.zeros(3), np.arange(3.0))
    with pytest.raises(ValueError, match="increasing"):
        dsp.not_a_knot_spline(np.array([0.0, 1, 1, 2]), np.zeros(4), np.arange(2.0))


@pytest.mark.parametrize("seed", SEEDS)
def test_welch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=int(rng.integers(16, 1200)))
    nperseg = int(rng.integers(4, x.size + 1))
    noverlap = int(rng.integers(0, nperseg))
    nfft = nperseg * int(rng.integers(1, 3)) + int(rng.integers(0, 2))  # odd and even
    f, p = dsp.welch_psd(x, 4.0, nperseg, noverlap, nfft)
    f_ref, p_ref = signal.welch(
        x, fs=4.0, window="hann", nperseg=nperseg, noverlap=noverlap, nfft=nfft,
        detrend=False, scaling="density",
    )  # fmt: skip
    close(f, f_ref)
    close(p, p_ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_lomb_scargle_matches_scipy_floating_mean(seed: int) -> None:
    try:
        signal.lombscargle(np.arange(3.0), np.ones(3), np.ones(1), floating_mean=True)
    except TypeError:
        pytest.skip("scipy < 1.15 has no floating_mean to compare with")
    rng = np.random.default_rng(seed)
    t, rr = beats(rng, int(rng.integers(4, 400)))
    w = 2 * np.pi * np.linspace(0.04, 0.4, 60)
    for y in (rr - rr.mean(), rr):  # centred, and with a large mean to float
        close(dsp.lomb_scargle(t, y, w), signal.lombscargle(t, y, w, floating_mean=True), 1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_resample_poly_line_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 600))
    x = 5.0 + np.linspace(0, rng.normal(), n) + rng.normal(0, 0.2, n)
    for up, down in (
        (1, 25),
        (8, 31),
        (2, 1),
        (int(rng.integers(1, 40)), int(rng.integers(1, 40))),
    ):
        close(
            dsp.resample_poly_line(x, up, down),
            signal.resample_poly(x, up, down, padtype="line"),
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_running_filters_match_ndimage(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=int(rng.integers(1, 400)))
    size = int(rng.integers(1, 120))  # odd and even sizes, longer than x too
    close(dsp.running_min(x, size), ndimage.minimum_filter1d(x, size, mode="nearest"), 0)
    close(dsp.running_max(x, size), ndimage.maximum_filter1d(x, size, mode="nearest"), 0)
    close(dsp.running_mean(x, size), ndimage.uniform_filter1d(x, size, mode="nearest"))
    sigma = float(rng.uniform(0.3, 12.0))
    close(dsp.gaussian_smooth(x, sigma), ndimage.gaussian_filter1d(x, sigma, mode="nearest"))


@pytest.mark.parametrize("seed", SEEDS)
def test_peaks_match_find_peaks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # rounding makes plateaus, flat starts and ends, and ties in prominence
    y = np.round(rng.normal(size=int(rng.integers(0, 500))), int(rng.integers(0, 3)))
    for prominence in (0.0, 0.01, float(rng.uniform(0, 1.5)), 10.0):
        expected = signal.find_peaks(y, prominence=prominence)[0]
        np.testing.assert_array_equal(dsp.peaks_by_prominence(y, prominence), expected)


def test_peaks_of_degenerate_signals() -> None:
    for y in ([], [1.0], [1.0, 2.0], [3.0, 3.0, 3.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]):
        assert dsp.peaks_by_prominence(np.asarray(y), 0.0).size == 0
    np.testing.assert_array_equal(dsp.peaks_by_prominence(np.array([0, 2, 2, 2, 2, 0.0]), 1), [2])
