"""Probability calibration of a classifier's output: temperature scaling and its measures.

Fusion weighs the whole expression distribution, so a model that says 0.9 must be right
about 90 % of the time it says so. Temperature scaling (Guo et al. 2017, "On calibration
of modern neural networks") divides the logits by one number T fitted on held-out data;
the top-1 class never changes. Our models end in a softmax that went through int8, so the
logits are not available; p ** (1 / T), renormalised, is the same thing (softmax(z) **
(1/T) is proportional to exp(z / T)). An int8 softmax rounds the smallest probabilities
to exactly 0, which no power can lift, so an exact 0 is read as half an int8 step (1/512),
or as half the row's smallest non-zero probability where that is smaller (a float model's
output), so the order of the classes is kept; every other probability is used as it is.
The negative log-likelihood reads zeros the same way, so the figures before and after a
temperature compare like with like.

Pure numpy: `apply_temperature` runs on the device for every face; `fit_temperature` and
`expected_calibration_error` run where a model is built or evaluated.
"""

from __future__ import annotations

import numpy as np

PROBABILITY_FLOOR = 1.0 / 512.0
"""Half of one step of an int8 softmax output (scale 1/256)."""


def _lift_zeros(p: np.ndarray) -> np.ndarray:
    """Exact zeros -> min(1/512, half the row's smallest non-zero value); see above."""
    if not (p <= 0).any():
        return p
    positive = np.where(p > 0, p, np.inf).min(axis=-1, keepdims=True)
    floor = np.minimum(PROBABILITY_FLOOR, positive / 2.0)
    return np.where(p > 0, p, floor)


def check_temperature(temperature: float) -> float:
    """`temperature` if it is a positive finite number; ValueError otherwise."""
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return float(temperature)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of probabilities, recalibrated by `temperature` (1 leaves them unchanged).

    T > 1 softens an over-confident model, T < 1 sharpens an under-confident one; the
    argmax of every row is kept.
    """
    check_temperature(temperature)
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or p.size == 0:
        return p.astype(np.float32)
    logp = np.log(_lift_zeros(p)) / temperature
    z = np.exp(logp - logp.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class); an exact 0 is read as `apply_temperature` reads it."""
    p = _lift_zeros(np.asarray(probs, dtype=np.float64))
    y = np.asarray(labels, dtype=np.int64)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def fit_temperature(
    probs: np.ndarray, labels: np.ndarray, lo: float = 0.2, hi: float = 10.0
) -> float:
    """The T in [lo, hi] that minimises the NLL of `apply_temperature(probs, T)`.

    The NLL is convex in 1/T, so a golden-section search on log T finds the minimum; 40
    steps narrow the bracket far below any digit that is reported. A minimum at either
    end of the range (separable data, or a model that is almost always wrong) is refused:
    it would be a limit, not a fit.
    """
    if len(labels) == 0:
        raise ValueError("no labelled rows to fit a temperature on")
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got {lo}, {hi}")

    def loss(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probs, float(np.exp(log_t))), labels)

    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(d)
    t = float(np.exp((a + b) / 2.0))
    if t < lo * 1.01 or t > hi / 1.01:
        raise ValueError(f"the best temperature is at the edge of [{lo}, {hi}]: {t:.4g}")
    return t


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-1 ECE: sum over equal-width confidence bins of |accuracy - confidence| * share.

    15 bins, as Guo et al. report it. A row's confidence is its largest probability; the
    last bin includes 1.0.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("no labelled rows to measure calibration on")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = np.minimum((conf * bins).astype(np.int64), bins - 1)
    gap = np.abs(
        np.bincount(idx, weights=correct, minlength=bins)
        - np.bincount(idx, weights=conf, minlength=bins)
    )
    return float(gap.sum() / len(y))
