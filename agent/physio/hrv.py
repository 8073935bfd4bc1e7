"""Heart-rate variability: pure functions of RR intervals in milliseconds.

Definitions (stated because tools differ; they match NeuroKit2 0.2 unless noted):
- mean RR; SDNN = standard deviation of RR with ddof=1.
- mean HR = 60000 / mean RR (not the mean of 60000 / RR), in bpm.
- RMSSD = sqrt(mean(dRR**2)) over successive differences dRR.
- pNN50 = 100 * #(|dRR| > 50 ms) / #dRR, i.e. over successive differences. NeuroKit2
  divides by the number of intervals (#dRR + 1), so it reads lower by a factor n/(n+1).
- SD1 = std((RR[n] - RR[n+1]) / sqrt 2, ddof=1), SD2 = std((RR[n] + RR[n+1]) / sqrt 2,
  ddof=1) (Poincaré plot, Brennan et al. 2001).
- Sample entropy (Richman & Moorman 2000): m = 2, r = 0.2 * SDNN, Chebyshev distance
  <= r, self-matches excluded, the first N - m templates for both lengths;
  SampEn = -ln(A / B).
- LF 0.04-0.15 Hz and HF 0.15-0.40 Hz band powers (ms^2), LF/HF; two PSD estimates:
  "welch" (default): RR placed at its beat time (cumulative sum), resampled at 4 Hz with
  a not-a-knot cubic spline, mean removed, Welch with Hann windows: three segments of
  half the resampled series at 50 % overlap, FFT length twice the segment (NeuroKit2's
  hrv_frequency defaults, whose own resampling is a quadratic spline at 100 Hz);
  welch_segment_s fixes the segment length instead (50 % overlap);
  "lomb": scipy's generalised (floating-mean) Lomb-Scargle of the unevenly sampled RR on a grid of
  1/(5 T) over 0.04-0.40 Hz, scaled to a one-sided density 2 P T / N (T = span of the
  beat times, N beats; for even sampling this is the periodogram's density).
  Band power is the trapezoidal integral over the PSD bins with lo <= f < hi
  (NeuroKit2's convention).

The caller removes artifacts and splits the series at gaps first (agent.physio.rr).
A feature the window cannot support is None, with the reason in `HrvFeatures.missing`:
HF needs 60 s and LF 120 s of RR (Task Force 1996: about 1 and 2 min), sample entropy
200 intervals (our choice: shorter series have few length-3 matches and an unstable
estimate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Literal

import numpy as np

from agent.physio.dsp import lomb_scargle, not_a_knot_spline, welch_psd

RR_MIN_MS = 300.0  # 200 bpm
RR_MAX_MS = 2000.0  # 30 bpm

LF_BAND = (0.04, 0.15)
HF_BAND = (0.15, 0.40)
MIN_HF_SECONDS = 60.0
MIN_LF_SECONDS = 120.0
MIN_SAMPEN_BEATS = 200
LOMB_OVERSAMPLING = 5

Spectral = Literal["welch", "lomb"]


def plausible_rr(rr_ms: Sequence[float]) -> np.ndarray:
    """The RR intervals inside the physiological range 300-2000 ms, as float64."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    return rr[(rr >= RR_MIN_MS) & (rr <= RR_MAX_MS)]


def mean_hr(rr_ms: Sequence[float]) -> float | None:
    """60000 / mean RR, in bpm; None for an empty series."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    return None if rr.size == 0 else float(60000.0 / rr.mean())


def rmssd(rr_ms: Sequence[float]) -> float | None:
    """Root mean square of successive RR differences, ms; None with fewer than 3 beats."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    if rr.size < 3:
        return None
    return float(np.sqrt(np.mean(np.diff(rr) ** 2)))


@dataclass(frozen=True)
class HrvFeatures:
    """HRV of one window; see the module docstring for every definition."""

    n_intervals: int
    duration_s: float
    mean_rr: float | None = None
    sdnn: float | None = None
    rmssd: float | None = None
    pnn50: float | None = None
    mean_hr: float | None = None
    lf: float | None = None
    hf: float | None = None
    lf_hf: float | None = None
    sd1: float | None = None
    sd2: float | None = None
    sampen: float | None = None
    spectral: str = "welch"
    missing: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, object]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["missing"] = dict(self.missing)
        return d


def sample_entropy(
    x: Sequence[float] | np.ndarray, m: int = 2, r: float | None = None
) -> float | None:
    """SampEn(m, r) = -ln(A / B); None when no template pair matches (undefined).

    B counts pairs i < j of length-m templates within r (Chebyshev), A the same pairs
    still within r at length m + 1; both over the first N - m templates. Vectorised by
    blocks of rows of the |x_i - x_j| <= r matrix, so memory stays bounded for hours of RR.
    """
    v = np.asarray(x, dtype=np.float64)
    n_templates = v.size - m
    if n_templates < 2:
        return None
    if r is None:
        r = 0.2 * float(np.std(v, ddof=1))
    a = b = 0
    block = 512
    for start in range(0, n_templates, block):
        rows = min(block, n_templates - start)
        cols = n_templates - start
        close = np.abs(v[start : start + rows + m, None] - v[None, start:]) <= r
        match = close[:rows, :cols].copy()
        for k in range(1, m):
            match &= close[k : k + rows, k : k + cols]
        upper = np.triu(np.ones((rows, cols), dtype=bool), 1)  # j > i: each pair once
        match &= upper
        b += int(np.count_nonzero(match))
        match &= close[m : m + rows, m : m + cols]
        a += int(np.count_nonzero(match))
    if a == 0 or b == 0:
        return None
    return float(-np.log(a / b))


def psd(
    rr_ms: Sequence[float] | np.ndarray,
    *,
    method: Spectral = "welch",
    resample_hz: float = 4.0,
    welch_segment_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(frequency Hz, one-sided PSD ms^2/Hz) of one contiguous RR series; see module doc."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    t = np.cumsum(rr) / 1000.0  # each interval placed at the beat that ends it
    if method == "welch":
        n = int(np.floor((t[-1] - t[0]) * resample_hz)) + 1
        grid = t[0] + np.arange(n) / resample_hz
        x = not_a_knot_spline(t, rr, grid)
        x -= x.mean()
        if welch_segment_s is None:
            # Three half-length segments. NeuroKit2 passes nperseg = N/2 and noverlap =
            # nperseg // 2 to scipy, which gives 2 or 3 segments depending on parity.
            nperseg = n // 2
            noverlap = nperseg - (n - nperseg) // 2
        else:
            nperseg = min(n, int(welch_segment_s * resample_hz))
            noverlap = nperseg // 2
        return welch_psd(x, resample_hz, nperseg, noverlap, 2 * nperseg)
    if method == "lomb":
        span = t[-1] - t[0]
        df = 1.0 / (LOMB_OVERSAMPLING * span)
        # Only the LF and HF bands: each frequency costs a pass over the beats.
        f = np.arange(np.ceil(LF_BAND[0] / df), np.ceil(HF_BAND[1] / df)) * df
        p = lomb_scargle(t, rr - rr.mean(), 2 * np.pi * f)
        return f, p * 2.0 * span / rr.size
    raise ValueError(f"unknown spectral method {method!r}")


def band_power(f: np.ndarray, p: np.ndarray, band: tuple[float, float]) -> float:
    """Trapezoidal integral of the PSD over the bins with band[0] <= f < band[1]."""
    sel = (f >= band[0]) & (f < band[1])
    y, x = p[sel], f[sel]
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0) if x.size > 1 else 0.0


def hrv_features(
    rr_ms: Sequence[float] | np.ndarray,
    *,
    segments: Sequence[tuple[int, int]] | None = None,
    spectral: Spectral = "welch",
    resample_hz: float = 4.0,
    welch_segment_s: float | None = None,
    sampen_m: int = 2,
    sampen_r: float = 0.2,
) -> HrvFeatures:
    """Time-domain, spectral and nonlinear HRV of a window of cleaned RR (ms).

    segments: [start, stop) ranges of rr_ms that are contiguous in time (as from
    `agent.physio.rr.clean_rr`). Successive differences and Poincaré pairs are then
    taken inside segments only; the spectrum and sample entropy use the longest segment.
    Without segments the whole series is one segment.
    """
    rr = np.asarray(rr_ms, dtype=np.float64)
    n = int(rr.size)
    if segments is None:
        segments = [(0, n)] if n else []
    parts = [rr[a:b] for a, b in segments if b > a]
    missing: dict[str, str] = {}
    out: dict[str, float | None] = {}

    if n == 0:
        for k in ("mean_rr", "mean_hr", "sdnn"):
            missing[k] = "no RR intervals"
    else:
        out["mean_rr"] = float(rr.mean())
        out["mean_hr"] = 60000.0 / out["mean_rr"]
        if n >= 2:
            out["sdnn"] = float(np.std(rr, ddof=1))
        else:
            missing["sdnn"] = "needs 2 intervals"

    diffs = np.concatenate([np.diff(p) for p in parts]) if parts else np.zeros(0)
    if diffs.size >= 2:
        out["rmssd"] = float(np.sqrt(np.mean(diffs**2)))
        out["pnn50"] = float(100.0 * np.count_nonzero(np.abs(diffs) > 50.0) / diffs.size)
    else:
        missing["rmssd"] = missing["pnn50"] = "needs 2 successive differences (3 intervals)"
    if diffs.size >= 3:
        sums = np.concatenate([p[:-1] + p[1:] for p in parts])
        out["sd1"] = float(np.std(diffs / np.sqrt(2.0), ddof=1))
        out["sd2"] = float(np.std(sums / np.sqrt(2.0), ddof=1))
    else:
        missing["sd1"] = missing["sd2"] = "needs 3 successive pairs"

    longest = max(parts, key=len) if parts else np.zeros(0)
    seconds = float(longest.sum() / 1000.0)
    if longest.size < MIN_SAMPEN_BEATS:
        missing["sampen"] = f"needs {MIN_SAMPEN_BEATS} contiguous intervals, has {longest.size}"
    else:
        r = sampen_r * float(np.std(longest, ddof=1))
        out["sampen"] = sample_entropy(longest, m=sampen_m, r=r)
        if out["sampen"] is None:
            missing["sampen"] = f"undefined: no template matches of length {sampen_m + 1}"

    if seconds >= MIN_HF_SECONDS and longest.size >= 4:
        f, p = psd(
            longest, method=spectral, resample_hz=resample_hz, welch_segment_s=welch_segment_s
        )
        out["hf"] = band_power(f, p, HF_BAND)
        if seconds >= MIN_LF_SECONDS:
            out["lf"] = band_power(f, p, LF_BAND)
    if "hf" not in out:
        missing["hf"] = f"needs {MIN_HF_SECONDS:.0f} s of contiguous RR, has {seconds:.0f} s"
    if "lf" not in out:
        missing["lf"] = f"needs {MIN_LF_SECONDS:.0f} s of contiguous RR, has {seconds:.0f} s"
    if "lf" in out and "hf" in out:
        if out["hf"]:
            out["lf_hf"] = out["lf"] / out["hf"]
        else:
            missing["lf_hf"] = "HF power is zero"
    else:
        missing["lf_hf"] = "needs LF and HF"

    return HrvFeatures(
        n_intervals=n,
        duration_s=float(rr.sum() / 1000.0),
        spectral=spectral,
        missing=MappingProxyType(missing),
        **out,  # type: ignore[arg-type]
    )
