"""HRV features and RR cleaning on synthetic RR with known answers (no /work/shared)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from agent.bench.hrv_eval import inject_artifacts
from agent.physio.artifacts import detect_artifacts
from agent.physio.hrv import (
    hrv_features,
    mean_hr,
    plausible_rr,
    rmssd,
    sample_entropy,
)
from agent.physio.rr import clean_rr, split_at_gaps


def synthetic_rr(n: int, seed: int = 0, mean: float = 850.0) -> np.ndarray:
    """RR (ms) with 0.1 Hz (LF) and 0.25 Hz (HF) modulation plus AR(1) noise, each
    interval evaluated at its own beat time."""
    rng = np.random.default_rng(seed)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    rr = np.empty(n)
    t = e = 0.0
    for k in range(n):
        e = 0.5 * e + rng.normal(0, 8.0)
        rr[k] = (
            mean + 30 * np.sin(2 * np.pi * 0.1 * t + p1) + 20 * np.sin(2 * np.pi * 0.25 * t + p2)
        )
        rr[k] += e
        t += rr[k] / 1000.0
    return rr


def sinus_rr(freq_hz: float, seconds: float = 300.0, amp: float = 50.0) -> np.ndarray:
    rr, t = [], 0.0
    while t < seconds:
        rr.append(1000.0 + amp * math.sin(2 * math.pi * freq_hz * t))
        t += rr[-1] / 1000.0
    return np.asarray(rr)


def brute_sampen(x: np.ndarray, m: int, r: float) -> float:
    n = len(x) - m
    b = a = 0
    for i in range(n):
        for j in range(i + 1, n):
            if max(abs(x[i + k] - x[j + k]) for k in range(m)) <= r:
                b += 1
                a += abs(x[i + m] - x[j + m]) <= r
    return -math.log(a / b)


# ---------------------------------------------------------------- existing helpers


def test_existing_helpers_keep_their_behaviour() -> None:
    assert plausible_rr([250, 800, 2500, 1000]).tolist() == [800.0, 1000.0]
    assert mean_hr([1000, 1000]) == 60.0
    assert mean_hr([]) is None
    assert rmssd([800, 900]) is None
    assert rmssd([800, 900, 800]) == pytest.approx(100.0)


# ---------------------------------------------------------------- known answers


def test_constant_rr() -> None:
    f = hrv_features(np.full(400, 800.0))
    assert f.mean_rr == 800.0 and f.mean_hr == 75.0
    assert f.sdnn == 0.0 and f.rmssd == 0.0 and f.pnn50 == 0.0 and f.sd1 == 0.0
    assert f.sampen == 0.0  # r = 0 and every template matches itself exactly
    assert f.hf == pytest.approx(0.0, abs=1e-9) and f.lf_hf is None
    assert f.missing["lf_hf"] == "HF power is zero"


def test_alternating_series_analytic() -> None:
    rr = np.array([800.0, 900.0] * 150 + [800.0])  # 301 intervals, 300 differences of +-100
    f = hrv_features(rr)
    n = rr.size
    mu = (151 * 800 + 150 * 900) / n
    assert f.mean_rr == pytest.approx(mu)
    assert f.mean_hr == pytest.approx(60000 / mu)  # 60000 / mean RR, not mean of 60000/RR
    assert f.sdnn == pytest.approx(
        math.sqrt((151 * (800 - mu) ** 2 + 150 * (900 - mu) ** 2) / (n - 1))
    )
    assert f.rmssd == pytest.approx(100.0)
    assert f.pnn50 == pytest.approx(100.0)
    assert f.sd1 == pytest.approx(100 / math.sqrt(2) * math.sqrt(300 / 299))
    assert f.sd2 == pytest.approx(0.0, abs=1e-9)  # every pair sums to 1700
    # |difference| must exceed 50 ms: exactly 50 does not count
    assert hrv_features(np.array([800.0, 850.0] * 20)).pnn50 == 0.0


@pytest.mark.parametrize("method", ["welch", "lomb"])
def test_respiratory_modulation_lands_in_hf(method: str) -> None:
    f = hrv_features(sinus_rr(0.25), spectral=method)
    assert f.hf > 20 * f.lf
    # a 50 ms sinusoid has variance 1250 ms^2, nearly all of it in the band
    assert f.hf == pytest.approx(1250.0, rel=0.12)


@pytest.mark.parametrize("method", ["welch", "lomb"])
def test_mayer_wave_modulation_lands_in_lf(method: str) -> None:
    f = hrv_features(sinus_rr(0.1), spectral=method)
    assert f.lf > 20 * f.hf
    assert f.lf == pytest.approx(1250.0, rel=0.12)
    assert f.lf_hf == pytest.approx(f.lf / f.hf)


def test_sample_entropy_matches_brute_force() -> None:
    x = synthetic_rr(150, seed=3)
    r = 0.2 * np.std(x, ddof=1)
    assert sample_entropy(x, 2, r) == pytest.approx(brute_sampen(x, 2, r), rel=1e-12)
    assert sample_entropy(x, 3, r) == pytest.approx(brute_sampen(x, 3, r), rel=1e-12)


def test_sample_entropy_of_white_noise_and_of_a_periodic_series() -> None:
    noise = np.random.default_rng(1).normal(size=3000)
    # Gaussian white noise, m=2, r=0.2 SD: about 2.2 (Richman & Moorman 2000, Fig. 2)
    assert 2.0 < sample_entropy(noise) < 2.45
    assert sample_entropy(np.tile([800.0, 850.0, 900.0, 870.0], 100)) == pytest.approx(0.0)


def test_rounding_to_ble_resolution_moves_time_domain_little() -> None:
    rr = synthetic_rr(400, seed=5)
    ble = np.round(rr * 1.024) / 1.024  # 1/1024 s units, as a Heart Rate strap sends
    a, b = hrv_features(rr), hrv_features(ble)
    for key in ("sdnn", "rmssd", "lf", "hf"):
        assert getattr(b, key) == pytest.approx(getattr(a, key), rel=0.01)


# ---------------------------------------------------------------- too short


def test_too_short_windows_are_none_with_a_reason() -> None:
    f = hrv_features(np.full(2, 800.0))
    assert f.rmssd is None and "2 successive differences" in f.missing["rmssd"]
    f = hrv_features(synthetic_rr(35))  # ~30 s
    assert f.rmssd is not None
    assert f.lf is None and f.hf is None and f.lf_hf is None and f.sampen is None
    assert "120 s" in f.missing["lf"] and "60 s" in f.missing["hf"]
    assert "200 contiguous intervals" in f.missing["sampen"]
    f = hrv_features(synthetic_rr(105))  # ~90 s: HF yes, LF no
    assert f.hf is not None and f.lf is None and "lf" in f.missing
    empty = hrv_features([])
    assert empty.mean_rr is None and empty.missing["mean_rr"] == "no RR intervals"
    assert set(empty.as_dict()) >= {"mean_rr", "sdnn", "rmssd", "pnn50", "lf", "missing"}


def test_segments_keep_differences_inside() -> None:
    a, b = synthetic_rr(200, 1), synthetic_rr(200, 2, mean=600.0)
    joined = np.concatenate((a, b))
    f = hrv_features(joined, segments=[(0, 200), (200, 400)])
    d = np.concatenate((np.diff(a), np.diff(b)))
    assert f.rmssd == pytest.approx(float(np.sqrt(np.mean(d**2))))
    assert f.sdnn == pytest.approx(float(np.std(joined, ddof=1)))
    assert "200 contiguous intervals" not in f.missing.get("sampen", "")


def test_five_minute_window_is_fast() -> None:
    rr = synthetic_rr(350)
    hrv_features(rr)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        hrv_features(rr)
        times.append(time.perf_counter() - t0)
    assert sorted(times)[3] < 0.05  # goal 5 ms; loose here so a busy CI does not flake


# ---------------------------------------------------------------- artifacts


def test_clean_synthetic_series_is_left_alone() -> None:
    for seed in range(5):
        c = clean_rr(synthetic_rr(400, seed))
        assert c.corrected_fraction == 0.0 and not c.rejected


@pytest.mark.parametrize("fraction", [0.01, 0.02, 0.03])
def test_injected_artifacts_are_found_and_corrected(fraction: float) -> None:
    for seed in range(6):
        clean = synthetic_rr(600, seed)
        bad, truth = inject_artifacts(clean, fraction, np.random.default_rng(100 + seed))
        found = detect_artifacts(bad).affected_intervals(bad.size) | (bad < 300)
        near = found | np.roll(found, 1) | np.roll(found, -1)
        assert np.mean([near[j] for j, _ in truth]) >= 0.9
        fixed = clean_rr(bad)
        ref, got, raw = hrv_features(clean), hrv_features(fixed.rr_ms), hrv_features(bad)
        assert raw.rmssd > 1.1 * ref.rmssd  # the corruption matters
        assert got.sdnn == pytest.approx(ref.sdnn, rel=0.05)
        assert got.rmssd == pytest.approx(ref.rmssd, rel=0.05)
        assert fixed.corrected_fraction == pytest.approx(len(truth) / bad.size, abs=0.01)


def test_each_kind_is_classified() -> None:
    rr = synthetic_rr(300, 7)
    missed = np.concatenate((rr[:100], [rr[100] + rr[101]], rr[102:]))
    assert detect_artifacts(missed).missed == (100,)
    extra = np.concatenate((rr[:100], [0.45 * rr[100], 0.55 * rr[100]], rr[101:]))
    assert detect_artifacts(extra).extra == (100,)
    ectopic = rr.copy()
    ectopic[100] -= 250
    ectopic[101] += 250
    art = detect_artifacts(ectopic)
    assert art.ectopic == (101,) and art.total == 1  # one beat, between intervals 100, 101
    c = clean_rr(ectopic)
    assert c.rr_ms[100] == c.rr_ms[101] == pytest.approx((rr[100] + rr[101]) / 2)
    assert c.rr_ms.sum() == pytest.approx(rr.sum())  # the beat moved, time is kept


def test_range_filter_merges_short_and_splits_at_long() -> None:
    rr = synthetic_rr(200, 9)
    bad = np.concatenate((rr[:50], [250.0, rr[50] - 250.0], rr[51:120], [3000.0], rr[120:]))
    c = clean_rr(bad)
    assert c.counts["out_of_range"] == 2
    assert c.segments == ((0, 120), (120, 200))  # 50 + merged 1 + 69 | 80
    assert c.rr_ms[50] == pytest.approx(rr[50])  # the split interval is whole again


def test_missed_beat_above_2000_ms_at_a_slow_rate_is_split_not_a_gap() -> None:
    rr = synthetic_rr(200, 10, mean=1250.0)
    bad = np.concatenate((rr[:80], [rr[80] + rr[81]], rr[82:120], [np.nan], rr[120:]))
    assert bad[80] > 2000
    c = clean_rr(bad)
    assert c.segments == ((0, 120), (120, 200))  # only the NaN (timing unknown) splits
    assert c.rr_ms[80] == c.rr_ms[81] == pytest.approx((rr[80] + rr[81]) / 2)
    assert c.counts["out_of_range"] == 2


def test_rejected_when_too_much_is_corrected() -> None:
    bad, _ = inject_artifacts(synthetic_rr(400, 4), 0.08, np.random.default_rng(0))
    c = clean_rr(bad, max_corrected_fraction=0.05)
    assert c.rejected and "corrected > 5%" in c.reason
    assert not clean_rr(bad).rejected  # default limit 20 %
    assert clean_rr([]).rejected and clean_rr([]).reason == "no RR intervals"
    assert clean_rr([100.0, 5000.0]).reason.startswith("no RR interval within")


# ---------------------------------------------------------------- gaps


def ble_notifications(
    rr: np.ndarray, drop: set[int], rng: np.random.Generator, jitter_s: float = 0.05
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Deliver beats as a 1 Hz BLE strap does; drop the notifications numbered in drop.
    Returns RR, arrival times and the index at which each loss is seen."""
    beats = np.cumsum(rr) / 1000.0
    out_rr: list[float] = []
    out_t: list[float] = []
    losses: list[int] = []
    prev, lost = 0.0, False
    for k, send in enumerate(np.arange(1.0, beats[-1] + 1.0, 1.0)):
        sel = np.flatnonzero((beats > prev) & (beats <= send))
        prev = send
        if sel.size == 0:
            continue
        if k in drop:
            lost = True
            continue
        if lost:
            losses.append(len(out_rr))
            lost = False
        out_rr += rr[sel].tolist()
        out_t += [send + rng.uniform(0, jitter_s)] * sel.size
    return np.asarray(out_rr), np.asarray(out_t), losses


def test_no_gap_without_drops() -> None:
    rng = np.random.default_rng(0)
    for mean in (450.0, 850.0, 1300.0):
        rr, t, _ = ble_notifications(synthetic_rr(400, 1, mean=mean), set(), rng, jitter_s=0.15)
        assert split_at_gaps(rr, t) == [(0, rr.size)]


def test_dropped_notifications_split_the_series() -> None:
    rng = np.random.default_rng(1)
    rr, t, losses = ble_notifications(synthetic_rr(400, 2, mean=700.0), {40, 41, 120, 200}, rng)
    segments = split_at_gaps(rr, t)
    assert [a for a, _ in segments[1:]] == losses
    c = clean_rr(rr, t)
    assert c.counts["gaps"] == 3 and len(c.segments) == 4
    f = hrv_features(c.rr_ms, segments=c.segments)
    assert f.rmssd == pytest.approx(
        float(np.sqrt(np.mean(np.concatenate([np.diff(s) for s in c.segment_arrays()]) ** 2)))
    )


def test_beat_timestamps_split_at_a_single_missing_beat() -> None:
    rr = synthetic_rr(300, 3, mean=600.0)
    times = np.cumsum(rr) / 1000.0
    keep = np.ones(rr.size, dtype=bool)
    keep[150] = False  # the E4 dropped one beat: its time and interval are both absent
    segs = split_at_gaps(rr[keep], times[keep], beat_times=True)
    assert segs == [(0, 150), (150, 299)]
    with pytest.raises(ValueError):
        split_at_gaps([800.0, 800.0], [1.0])
