"""RR-interval cleaning: gap splitting, range filter, then artifact correction. No I/O.

Gaps: a dropped BLE notification loses the RR it carried; `split_at_gaps` finds where
from arrival times (see its docstring), so no difference or interpolation spans one.
Intervals outside 300-2000 ms are split evenly (2 or 3 missed beats), folded into a
neighbour (an extra detection) or end a segment. Artifacts inside each segment are
corrected by agent.physio.artifacts (Lipponen & Tarvainen 2019, with departures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType

import numpy as np

from agent.physio.artifacts import (
    ARTIFACT_TYPES,
    DEFAULT_PASSES,
    EXTRA_TOL,
    Artifacts,
    fix_artifacts,
)
from agent.physio.hrv import RR_MAX_MS, RR_MIN_MS

CLOCK_DRIFT = 200e-6  # sensor vs receiver clock, s/s: generous for BLE straps and phones


@dataclass(frozen=True, eq=False)
class CleanRR:
    """Result of `clean_rr`. rr_ms: the corrected segments concatenated; segments:
    [start, stop) ranges of rr_ms that are contiguous in time (never take a difference or
    interpolate across two); counts: out_of_range, gaps and each artifact type;
    corrected_fraction = (out-of-range + artifacts) / input intervals."""

    rr_ms: np.ndarray
    segments: tuple[tuple[int, int], ...]
    counts: Mapping[str, int]
    n_input: int
    corrected_fraction: float
    rejected: bool
    reason: str | None = None
    artifacts: tuple[Artifacts, ...] = field(default=(), repr=False)

    def segment_arrays(self) -> list[np.ndarray]:
        return [self.rr_ms[a:b] for a, b in self.segments]


def split_at_gaps(
    rr_ms: Sequence[float] | np.ndarray,
    arrival_t: Sequence[float] | np.ndarray,
    *,
    tolerance_s: float = 0.25,
    beat_times: bool = False,
) -> list[tuple[int, int]]:
    """[start, stop) ranges of rr_ms with no dropped notification between them.

    arrival_t[i]: arrival time (s) of the notification carrying rr_ms[i] (shared within
    one). For notification g, D_g = arrival - cumulative RR = offset + latency + phase,
    with phase (send time - last beat reported) in [0, w_g), w_g = min(period, next RR).
    Each notification bounds the offset to [D_g - w_g - tolerance_s, D_g]; a drop raises
    the offset by the RR lost. When a segment's bounds stop intersecting, the gap goes
    where both sides stay consistent and elapsed time most exceeds RR delivered. Bounds
    widen by CLOCK_DRIFT. Losses under w_g are invisible (one wrong difference).
    beat_times=True: arrival_t are beat times (E4 IBI export): w_g = 0.
    """
    rr = np.asarray(rr_ms, dtype=np.float64)
    t = np.asarray(arrival_t, dtype=np.float64)
    if rr.shape != t.shape:
        raise ValueError("rr_ms and arrival_t must have the same length")
    n = rr.size
    if n == 0:
        return []
    if np.any(np.diff(t) < 0):
        raise ValueError("arrival_t must be non-decreasing")
    starts = np.flatnonzero(np.concatenate(([True], np.diff(t) > 1e-6)))
    arrival = t[starts]
    d = arrival - np.cumsum(np.add.reduceat(rr, starts)) / 1000.0
    if beat_times:
        w = np.zeros(starts.size)
    else:
        gaps = np.diff(arrival)  # lower quartile: notifications without RR are not seen
        period = float(np.percentile(gaps, 25)) if gaps.size else np.inf
        w = np.minimum(period, np.append(rr[starts[1:]] / 1000.0, period))
    lower = d - w - tolerance_s
    upper = d
    cuts = [0]
    since = 0
    lo, hi = lower[0], upper[0]
    for g in range(1, starts.size):
        drift = CLOCK_DRIFT * (arrival[g] - arrival[g - 1])
        lo_g, hi_g = max(lo - drift, lower[g]), min(hi + drift, upper[g])
        if lo_g <= hi_g:
            lo, hi = lo_g, hi_g
            continue
        h = _locate_gap(lower, upper, d, since, g)
        cuts.append(int(starts[h]))
        since = h
        lo, hi = float(lower[h : g + 1].max()), float(upper[h : g + 1].min())
    cuts.append(n)
    return [(a, b) for a, b in pairwise(cuts) if b > a]


def _locate_gap(lower: np.ndarray, upper: np.ndarray, d: np.ndarray, since: int, g: int) -> int:
    """The notification h in (since, g] that starts the new segment: [since, h) and
    [h, g] each admit one offset; among those, the largest excess d[h] - d[h-1]."""
    pre_ok = np.maximum.accumulate(lower[since:g]) <= np.minimum.accumulate(upper[since:g])
    suf_lo = np.maximum.accumulate(lower[since + 1 : g + 1][::-1])[::-1]
    suf_hi = np.minimum.accumulate(upper[since + 1 : g + 1][::-1])[::-1]
    ok = pre_ok & (suf_lo <= suf_hi)  # index k <-> h = since + 1 + k
    if not ok.any():
        return g
    excess = np.diff(d[since : g + 1])
    return since + 1 + int(np.argmax(np.where(ok, excess, -np.inf)))


def _local_median(seg: np.ndarray, i: int) -> float | None:
    near = seg[max(0, i - 5) : i + 6]
    near = near[(near >= RR_MIN_MS) & (near <= RR_MAX_MS)]
    return float(np.median(near)) if near.size else None


def _split_long(seg: np.ndarray) -> list[np.ndarray]:
    """Split at each interval above 2000 ms (or NaN), dropping it, unless it is within
    20 % of 2 or 3 local medians (missed beats at a slow rate): then it is split evenly.
    More beats missing in a row is a gap, whose timing is not interpolated."""
    out: list[np.ndarray] = []
    current: list[float] = []
    for i, v in enumerate(seg):
        k, med = 0, _local_median(seg, i) if np.isfinite(v) and v > RR_MAX_MS else None
        if med is not None and abs(v / round(v / med) - med) < EXTRA_TOL * med:
            k = round(v / med)
        if v <= RR_MAX_MS:
            current.append(float(v))
        elif k in (2, 3):
            current.extend([v / k] * k)
        else:
            out.append(np.asarray(current))
            current = []
    out.append(np.asarray(current))
    return out


def _merge_short(seg: np.ndarray) -> np.ndarray:
    """Fold each interval below 300 ms into the neighbour whose sum is closer to the local
    median (an extra detection splits one true interval in two, so the sum restores it);
    drop it when neither neighbour is usable or the sum would exceed 2000 ms."""
    short = np.flatnonzero(seg < RR_MIN_MS)
    if short.size == 0:
        return seg
    vals = seg.copy()
    keep = ~(seg < RR_MIN_MS)
    for i in short:
        med = _local_median(seg, i)
        if med is None:
            continue
        options = [j for j in (i - 1, i + 1) if 0 <= j < vals.size and keep[j]]
        options = [j for j in options if vals[j] + vals[i] <= RR_MAX_MS]
        if options:
            j = min(options, key=lambda j: abs(vals[j] + vals[i] - med))
            vals[j] += vals[i]
    return vals[keep]


def clean_rr(
    rr_ms: Sequence[float] | np.ndarray,
    arrival_t: Sequence[float] | np.ndarray | None = None,
    max_corrected_fraction: float = 0.2,
    *,
    beat_times: bool = False,
    gap_tolerance_s: float = 0.25,
    passes: int = DEFAULT_PASSES,
) -> CleanRR:
    """Split at gaps, drop implausible intervals and correct artifacts per segment.

    Order: gaps are found on the raw series (the sum of RR delivered must include every
    interval delivered); an interval above 2000 ms ends a segment (beats are missing there
    and their timing is unknown) unless it is 2 or 3 local medians (`_split_long`); one
    below 300 ms is folded into a neighbour (`_merge_short`); Lipponen & Tarvainen
    correction (agent.physio.artifacts) runs on each segment of at least MIN_DETECT_BEATS
    intervals.
    """
    rr = np.asarray(rr_ms, dtype=np.float64)
    n_input = int(rr.size)
    if arrival_t is None:
        ranges = [(0, n_input)] if n_input else []
    else:
        ranges = split_at_gaps(rr, arrival_t, tolerance_s=gap_tolerance_s, beat_times=beat_times)
    counts = {
        "out_of_range": 0,
        "gaps": max(len(ranges) - 1, 0),
        **dict.fromkeys(ARTIFACT_TYPES, 0),
    }

    pieces: list[np.ndarray] = []
    for a, b in ranges:
        seg = rr[a:b]
        counts["out_of_range"] += int(np.count_nonzero(~((seg >= RR_MIN_MS) & (seg <= RR_MAX_MS))))
        pieces += [p for p in map(_merge_short, _split_long(seg)) if p.size]

    found_all: list[Artifacts] = []
    fixed: list[np.ndarray] = []
    for part in pieces:
        corrected, found = fix_artifacts(part, passes)
        found_all.extend(found)
        for k in ARTIFACT_TYPES:
            counts[k] += sum(len(getattr(art, k)) for art in found)
        fixed.append(corrected)

    bounds = np.cumsum([0] + [p.size for p in fixed])
    segments = tuple((int(a), int(b)) for a, b in pairwise(bounds))
    out = np.concatenate(fixed) if fixed else np.zeros(0)
    corrected = counts["out_of_range"] + sum(counts[k] for k in ARTIFACT_TYPES)
    fraction = corrected / n_input if n_input else 0.0
    reason = None
    if n_input == 0:
        reason = "no RR intervals"
    elif out.size == 0:
        reason = f"no RR interval within {RR_MIN_MS:.0f}-{RR_MAX_MS:.0f} ms"
    elif fraction > max_corrected_fraction:
        reason = f"{fraction:.1%} of intervals corrected > {max_corrected_fraction:.0%}"
    return CleanRR(out, segments, MappingProxyType(counts), n_input, float(fraction),
                   reason is not None, reason, tuple(found_all))  # fmt: skip
