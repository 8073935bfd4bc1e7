"""EDA features on synthetic skin conductance with known responses.

Signals: tonic level + linear drift + Bateman-shaped SCRs (Benedek & Kaernbach 2010, time
constants 0.75 s / 2 s, scaled so the peak equals the stated amplitude) + white noise.
Between the true onset and the peak a unit Bateman takes 1.18 s; the detector's onset is
the 10 % point, 0.04 s after the true onset, so the expected rise time is ~1.1 s before
smoothing widens it slightly.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from agent.physio.eda import EdaFeatures, clean, decompose, detect_scrs, eda_features

ONSETS = (20.0, 55.0, 90.0, 130.0, 170.0, 200.0, 240.0, 270.0)
AMPS = (0.05, 0.2, 0.5, 0.03, 0.1, 0.8, 0.04, 0.3)


def bateman(t: np.ndarray, onset: float, amp: float, tr: float = 0.75, td: float = 2.0):
    s = np.clip(t - onset, 0.0, None)
    tp = np.log(td / tr) * tr * td / (td - tr)  # time of the peak
    peak = np.exp(-tp / td) - np.exp(-tp / tr)
    return amp * (np.exp(-s / td) - np.exp(-s / tr)) / peak


def synth(
    rate_hz: float,
    duration_s: float = 300.0,
    onsets: tuple[float, ...] = ONSETS,
    amps: tuple[float, ...] = AMPS,
    level_us: float = 5.0,
    slope_us_per_min: float = 0.1,
    noise_us: float = 0.002,
    seed: int = 0,
) -> np.ndarray:
    t = np.arange(round(duration_s * rate_hz)) / rate_hz
    x = level_us + slope_us_per_min * t / 60.0
    for onset, amp in zip(onsets, amps, strict=True):
        x = x + bateman(t, onset, amp)
    return x + np.random.default_rng(seed).normal(0.0, noise_us, t.size)


def scrs_of(x: np.ndarray, rate_hz: float):
    cleaned, fs = clean(x, rate_hz)
    _, phasic = decompose(cleaned, fs)
    return detect_scrs(phasic, fs)


@pytest.mark.parametrize("rate_hz, noise_us", [(100.0, 0.005), (4.0, 0.001)])
def test_known_scrs_are_found_with_their_onsets_amplitudes_and_rise_times(rate_hz, noise_us):
    for seed in range(3):
        scrs = scrs_of(synth(rate_hz, noise_us=noise_us, seed=seed), rate_hz)
        assert len(scrs) == len(ONSETS)
        np.testing.assert_allclose(scrs.onset_s, ONSETS, atol=0.25)
        np.testing.assert_allclose(scrs.amplitude_us, AMPS, rtol=0.05, atol=0.002)
        assert np.all((scrs.rise_time_s > 0.7) & (scrs.rise_time_s < 2.0))


def test_features_summarise_the_known_scrs():
    f = eda_features(synth(100.0), 100.0)
    assert isinstance(f, EdaFeatures)
    assert f.rate_hz == 4.0 and f.duration_s == pytest.approx(300.0)
    assert f.scr_count == 8
    assert f.scr_rate_per_min == pytest.approx(8 / 5)
    assert f.scr_amplitude_mean_us == pytest.approx(np.mean(AMPS), rel=0.05)
    assert 0.8 < f.scr_rise_time_mean_s < 1.8
    assert not (f.flat or f.clipped or f.contact_lost)
    assert f.out_of_range_fraction == 0.0 and f.missing == {}
    json.dumps(f.to_dict())  # publishable as is


@pytest.mark.parametrize("slope", [0.3, 0.0, -0.5])
def test_scl_slope_and_mean_are_recovered_under_scrs(slope):
    f = eda_features(synth(100.0, slope_us_per_min=slope), 100.0)
    assert f.scl_slope_us_per_min == pytest.approx(slope, abs=0.01)
    # tonic is a lower envelope: its mean is the drift's, not lifted by the SCRs
    assert f.scl_mean_us == pytest.approx(5.0 + slope * 2.5, abs=0.03)


def test_flat_signal_is_flagged_and_noise_is_not_counted_as_scrs():
    rng = np.random.default_rng(1)
    flat = 2.0 + rng.normal(0.0, 0.003, 30000)  # 5 min at 100 Hz
    f = eda_features(flat, 100.0)
    assert f.flat and f.flat_fraction > 0.99
    assert f.scr_count == 0 and f.scr_rate_per_min == 0.0
    assert f.scr_amplitude_mean_us is None and "no SCR" in f.missing["scr_amplitude_mean_us"]
    assert f.scl_mean_us == pytest.approx(2.0, abs=0.01)


def test_low_quantised_wristband_signal_is_flat_with_no_scrs():
    # E4-like: 4 Hz, ~0.08 µS, quantised in 0.00128 µS steps, slow wander + noise
    t = np.arange(1200) / 4.0
    rng = np.random.default_rng(2)
    x = 0.08 + 0.003 * np.sin(2 * np.pi * t / 120.0) + rng.normal(0.0, 0.001, t.size)
    x = np.round(x / 0.00128) * 0.00128
    f = eda_features(x, 4.0)
    assert f.flat and f.scr_count == 0 and not f.contact_lost


def test_a_large_scr_does_not_bring_ringing_scrs_with_it():
    # a low-pass that overshoots makes a small "SCR" just before a large sharp one
    x = synth(100.0, onsets=(150.0,), amps=(3.0,), noise_us=0.0)
    scrs = scrs_of(x, 100.0)
    assert len(scrs) == 1 and scrs.amplitude_us[0] == pytest.approx(3.0, rel=0.03)


def test_slow_fluctuation_is_not_an_scr():
    # a 0.03 µS hump rising over ~15 s: above threshold trough to peak, but no SCR rises
    # that slowly (1-3 s); only the real response beside it counts
    t = np.arange(30000) / 100.0
    x = synth(100.0, onsets=(220.0,), amps=(0.1,), noise_us=0.001)
    x += 0.03 * np.exp(-0.5 * ((t - 100.0) / 6.0) ** 2)
    scrs = scrs_of(x, 100.0)
    assert len(scrs) == 1 and scrs.onset_s[0] == pytest.approx(220.0, abs=0.25)
    assert eda_features(x, 100.0, scr_max_rise_s=30.0).scr_count == 2


def test_threshold_is_absolute():
    x = synth(100.0, onsets=(60.0, 150.0), amps=(0.006, 0.02), noise_us=0.0005)
    assert eda_features(x, 100.0).scr_count == 1
    assert eda_features(x, 100.0, scr_min_amplitude_us=0.004).scr_count == 2
    assert eda_features(x, 100.0, scr_min_amplitude_us=0.05).scr_count == 0


def test_scr_already_rising_at_the_window_start_is_not_counted():
    x = synth(100.0, onsets=(-0.5, 100.0), amps=(0.5, 0.2), slope_us_per_min=0.0)
    scrs = scrs_of(x, 100.0)
    assert len(scrs) == 1 and scrs.onset_s[0] == pytest.approx(100.0, abs=0.4)


def test_clipped_at_the_range_limit():
    x = synth(100.0, level_us=98.0, onsets=(100.0,), amps=(5.0,), slope_us_per_min=0.0)
    f = eda_features(np.minimum(x, 100.0), 100.0)
    assert f.clipped and 0.0 < f.clipped_fraction < 0.1
    assert f.out_of_range_fraction == 0.0  # the limit itself is in range
    # a device with a 40 µS range saturates at 40
    y = np.minimum(synth(100.0, level_us=39.0, onsets=(100.0,), amps=(3.0,)), 40.0)
    assert eda_features(y, 100.0, valid_range_us=(0.01, 40.0)).clipped
    assert not eda_features(synth(100.0), 100.0).clipped


def test_contact_lost():
    rng = np.random.default_rng(3)
    loose = 0.03 + rng.normal(0.0, 0.002, 1200)  # 5 min at 4 Hz, in range but no skin
    f = eda_features(loose, 4.0)
    assert f.contact_lost and f.out_of_range_fraction == 0.0
    # reading zero for most of the window: contact lost, out of range, stuck at the limit
    x = synth(4.0)
    x[300:] = 0.0
    f = eda_features(x, 4.0)
    assert f.contact_lost and f.clipped
    assert f.out_of_range_fraction == pytest.approx(0.75)
    assert f.scl_mean_us is None and "of samples in" in f.missing["scl_mean_us"]
    assert not eda_features(synth(4.0), 4.0).contact_lost


def test_missing_samples_are_bridged_and_counted():
    x = synth(100.0)
    x[10000:12000] = np.nan  # 20 s of dropped data, away from any SCR onset
    f = eda_features(x, 100.0)
    ref = eda_features(synth(100.0), 100.0)
    assert f.out_of_range_fraction == pytest.approx(2000 / 30000)
    assert f.scl_mean_us == pytest.approx(ref.scl_mean_us, rel=0.01)
    assert f.scr_count == ref.scr_count


def test_short_windows_report_what_they_cannot_compute():
    f = eda_features(synth(100.0, duration_s=5.0), 100.0)
    assert f.scl_mean_us is None and f.scr_count is None
    assert set(f.missing) >= {"scl_mean_us", "scl_slope_us_per_min", "scr_count"}
    assert "5.0 s < 10 s" in f.missing["scl_mean_us"]
    f = eda_features(synth(100.0, duration_s=20.0), 100.0)
    assert f.scl_mean_us is not None
    assert f.scl_slope_us_per_min is None and "< 30 s" in f.missing["scr_count"]
    assert eda_features([], 4.0).missing["scl_mean_us"].startswith("window 0.0 s")


@pytest.mark.parametrize("rate_hz", [4.0, 15.5, 32.0, 700.0])
def test_features_agree_across_recording_rates(rate_hz):
    ref = eda_features(synth(100.0, noise_us=0.001), 100.0)
    f = eda_features(synth(rate_hz, noise_us=0.001), rate_hz)
    assert f.rate_hz == pytest.approx(4.0)
    assert f.scr_count == ref.scr_count == 8
    assert f.scl_mean_us == pytest.approx(ref.scl_mean_us, rel=0.005)
    assert f.scl_slope_us_per_min == pytest.approx(ref.scl_slope_us_per_min, abs=0.005)
    assert f.scr_amplitude_mean_us == pytest.approx(ref.scr_amplitude_mean_us, rel=0.02)
    assert f.scr_rise_time_mean_s == pytest.approx(ref.scr_rise_time_mean_s, abs=0.1)


def test_five_minutes_at_4_hz_takes_well_under_10_ms():
    x = synth(4.0)
    eda_features(x, 4.0)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        eda_features(x, 4.0)
        times.append(time.perf_counter() - t0)
    assert float(np.median(times)) < 0.010
