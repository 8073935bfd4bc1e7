"""Heart-rate variability: pure functions of RR intervals in milliseconds.

Definitions (stated because tools differ): mean HR is 60000 / mean RR; RMSSD is the root
mean square of successive differences of the RR series as given (the caller removes
artifacts and splits the series at gaps first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RR_MIN_MS = 300.0  # 200 bpm
RR_MAX_MS = 2000.0  # 30 bpm


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
