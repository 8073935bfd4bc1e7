"""The few signal-processing primitives the physiology maths needs, in numpy alone.

Why not scipy: importing scipy.signal costs the agent about 60 MB of resident memory
(it pulls in scipy.linalg, scipy.interpolate, scipy.special and scipy.sparse), two thirds
of a Pi Zero 2 W's budget for the whole process, for six small routines on series of a
few hundred samples. Each function here computes what the named scipy function computes
with the stated arguments; tests/test_dsp.py checks them against scipy itself on random
and edge-case inputs (agreement to ~1e-12), so the definitions stay scipy's.

- ``not_a_knot_spline``: scipy.interpolate.CubicSpline(x, y)(xi) (bc_type "not-a-knot").
- ``welch_psd``: scipy.signal.welch(x, fs, window="hann", nperseg, noverlap, nfft,
  detrend=False, scaling="density").
- ``lomb_scargle``: scipy.signal.lombscargle(t, y, w, floating_mean=True) (scipy >= 1.15).
- ``resample_poly_line``: scipy.signal.resample_poly(x, up, down, padtype="line").
- ``gaussian_smooth``, ``running_min``, ``running_max``, ``running_mean``:
  scipy.ndimage.gaussian_filter1d / minimum_filter1d / maximum_filter1d /
  uniform_filter1d with mode="nearest".
- ``peaks_by_prominence``: scipy.signal.find_peaks(y, prominence=p)[0].
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def not_a_knot_spline(x: np.ndarray, y: np.ndarray, xi: np.ndarray) -> np.ndarray:
    """Not-a-knot cubic spline through (x, y), strictly increasing x, evaluated at xi.

    The slopes at the knots solve a tridiagonal system (Thomas algorithm); the spline is
    the cubic Hermite polynomial of each interval. Needs at least 4 knots.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    if n < 4:
        raise ValueError(f"a not-a-knot spline needs 4 knots, got {n}")
    dx = np.diff(x)
    if np.any(dx <= 0):
        raise ValueError("x must be strictly increasing")
    slope = np.diff(y) / dx
    lower = np.zeros(n)  # lower[i]: coefficient of s[i-1] in row i
    diag = np.empty(n)
    upper = np.zeros(n)  # upper[i]: coefficient of s[i+1] in row i
    rhs = np.empty(n)
    lower[1:-1] = dx[1:]
    diag[1:-1] = 2.0 * (dx[:-1] + dx[1:])
    upper[1:-1] = dx[:-1]
    rhs[1:-1] = 3.0 * (dx[1:] * slope[:-1] + dx[:-1] * slope[1:])
    d = x[2] - x[0]
    diag[0], upper[0] = dx[1], d
    rhs[0] = ((dx[0] + 2.0 * d) * dx[1] * slope[0] + dx[0] ** 2 * slope[1]) / d
    d = x[-1] - x[-3]
    diag[-1], lower[-1] = dx[-2], d
    rhs[-1] = (dx[-1] ** 2 * slope[-2] + (2.0 * d + dx[-1]) * dx[-2] * slope[-1]) / d
    s = _solve_tridiagonal(lower, diag, upper, rhs)

    i = np.clip(np.searchsorted(x, xi, side="right") - 1, 0, n - 2)
    t = np.asarray(xi, dtype=np.float64) - x[i]
    c3 = (s[:-1] + s[1:] - 2.0 * slope) / dx**2
    c2 = (slope - s[:-1]) / dx - c3 * dx
    return ((c3[i] * t + c2[i]) * t + s[i]) * t + y[i]


def _solve_tridiagonal(
    lower: np.ndarray, diag: np.ndarray, upper: np.ndarray, rhs: np.ndarray
) -> np.ndarray:
    """Thomas algorithm; the spline systems here are diagonally dominant but for the two
    not-a-knot rows, which the elimination handles like any other."""
    n = diag.size
    c = np.empty(n)
    d = np.empty(n)
    c[0] = upper[0] / diag[0]
    d[0] = rhs[0] / diag[0]
    for k in range(1, n):
        m = diag[k] - lower[k] * c[k - 1]
        c[k] = upper[k] / m
        d[k] = (rhs[k] - lower[k] * d[k - 1]) / m
    out = np.empty(n)
    out[-1] = d[-1]
    for k in range(n - 2, -1, -1):
        out[k] = d[k] - c[k] * out[k + 1]
    return out


def welch_psd(
    x: np.ndarray, fs: float, nperseg: int, noverlap: int, nfft: int
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Welch density of x with periodic Hann windows, no detrending."""
    x = np.asarray(x, dtype=np.float64)
    step = nperseg - noverlap
    k = np.arange(nperseg)
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / nperseg)
    starts = np.arange(0, x.size - nperseg + 1, step)
    segments = x[starts[:, None] + k[None, :]] * win
    spec = np.abs(np.fft.rfft(segments, n=nfft, axis=-1)) ** 2 / (fs * np.sum(win**2))
    if nfft % 2:
        spec[:, 1:] *= 2.0
    else:
        spec[:, 1:-1] *= 2.0
    return np.fft.rfftfreq(nfft, 1.0 / fs), spec.mean(axis=0)


def lomb_scargle(t: np.ndarray, y: np.ndarray, angular: np.ndarray) -> np.ndarray:
    """Generalised (floating-mean) Lomb-Scargle power at angular frequencies, equal
    weights, scaled as scipy's normalize=False ("power"): N/4 * 2 (a YC + b YS)."""
    t = np.asarray(t, dtype=np.float64)[:, None]
    y = np.asarray(y, dtype=np.float64)[:, None]
    n = t.shape[0]
    wt = t * np.asarray(angular, dtype=np.float64)[None, :]
    cos, sin = np.cos(wt), np.sin(wt)
    c, s = cos.mean(axis=0), sin.mean(axis=0)
    cc = (cos * cos).mean(axis=0) - c * c
    ss = 1.0 - (cos * cos).mean(axis=0) - s * s
    cs = (cos * sin).mean(axis=0) - c * s
    tau = 0.5 * np.arctan2(2.0 * cs, cc - ss)
    cos_t, sin_t = np.cos(wt - tau), np.sin(wt - tau)
    y_mean = y.mean()
    c, s = cos_t.mean(axis=0), sin_t.mean(axis=0)
    yc = (y * cos_t).mean(axis=0) - y_mean * c
    ys = (y * sin_t).mean(axis=0) - y_mean * s
    cc_t = (cos_t * cos_t).mean(axis=0)
    ss_t = 1.0 - cc_t - s * s
    cc_t = cc_t - c * c
    eps = np.finfo(np.float64).epsneg
    cc_t = np.maximum(cc_t, eps)
    ss_t = np.maximum(ss_t, eps)
    return 2.0 * (yc * yc / cc_t + ys * ys / ss_t) * n / 4.0


def _kaiser_lowpass(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """Windowed-sinc low-pass (cutoff relative to Nyquist), unit gain at DC: firwin's."""
    m = np.arange(numtaps) - 0.5 * (numtaps - 1)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


def resample_poly_line(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Polyphase resampling by up/down with a Kaiser (beta 5) FIR of half-length
    10 * max(up, down), the signal extended beyond each end along the line through its
    first and last samples."""
    x = np.asarray(x, dtype=np.float64)
    g = math.gcd(up, down)
    up, down = up // g, down // g
    if up == down == 1:
        return x.copy()
    n_in = x.size
    n_out = -(-n_in * up // down)
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = _kaiser_lowpass(2 * half_len + 1, 1.0 / max_rate) * up
    # the output sample k sits at input position k * down / up: centre the filter there
    pre = down - half_len % down
    h = np.concatenate([np.zeros(pre), h])
    skip = (half_len + pre) // down
    # extend by enough samples that every tap sees the line, not zeros
    ext = -(-h.size // up) + 1
    slope = (x[-1] - x[0]) / (n_in - 1) if n_in > 1 else 0.0
    left = x[0] + slope * np.arange(-ext, 0)
    right = x[-1] + slope * np.arange(1, ext + 1)
    padded = np.concatenate([left, x, right])
    upsampled = np.zeros(padded.size * up)
    upsampled[::up] = padded
    full = np.convolve(upsampled, h)
    offset = ext * up  # index of x[0] in the upsampled, padded signal
    k = (skip + np.arange(n_out)) * down
    return full[offset + k]


def _nearest_windows(x: np.ndarray, size: int) -> np.ndarray:
    """Windows of `size` samples centred as scipy.ndimage centres them (origin 0: the
    window of sample i starts at i - size // 2), edges repeated ("nearest")."""
    x = np.asarray(x, dtype=np.float64)
    before = size // 2
    after = size - 1 - before
    padded = np.concatenate([np.full(before, x[0]), x, np.full(after, x[-1])])
    return sliding_window_view(padded, size)


def running_min(x: np.ndarray, size: int) -> np.ndarray:
    return _nearest_windows(x, size).min(axis=1)


def running_max(x: np.ndarray, size: int) -> np.ndarray:
    return _nearest_windows(x, size).max(axis=1)


def running_mean(x: np.ndarray, size: int) -> np.ndarray:
    return _nearest_windows(x, size).mean(axis=1)


def gaussian_smooth(x: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Gaussian filter of standard deviation `sigma` samples, kernel to `truncate` sigma."""
    radius = int(truncate * float(sigma) + 0.5)
    k = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (k / sigma) ** 2)
    kernel /= kernel.sum()
    return _nearest_windows(x, 2 * radius + 1) @ kernel


def peaks_by_prominence(y: np.ndarray, prominence: float) -> np.ndarray:
    """Indices of local maxima (a flat top counts once, at its middle) whose prominence
    is >= `prominence`: height above the higher of the two lowest points reached on each
    side before the signal rises above the peak (or ends)."""
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if n < 3:
        return np.zeros(0, dtype=np.intp)
    # candidate maxima: rises into a (possibly flat) top that then falls
    change = np.flatnonzero(np.diff(y) != 0)  # y[i] != y[i + 1]
    if change.size < 2:
        return np.zeros(0, dtype=np.intp)
    step_up = y[change + 1] > y[change]
    tops = np.flatnonzero(step_up[:-1] & ~step_up[1:])
    left_edge = change[tops] + 1
    right_edge = change[tops + 1]
    peaks = (left_edge + right_edge) // 2
    kept = []
    for p in peaks:
        height = y[p]
        higher_left = np.flatnonzero(y[:p] > height)
        lo = higher_left[-1] + 1 if higher_left.size else 0
        higher_right = np.flatnonzero(y[p + 1 :] > height)
        hi = p + 1 + higher_right[0] if higher_right.size else n
        base = max(y[lo : p + 1].min(), y[p:hi].min())
        if height - base >= prominence:
            kept.append(p)
    return np.asarray(kept, dtype=np.intp)
