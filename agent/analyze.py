"""Offline analysis of a recording: what `emotion-agent analyze` prints.

Researchers use it to check the agent's features against their own tools on the same
data, so it runs exactly the functions the live windows use (`clean_rr`, `hrv_features`,
`eda_features`), on the whole recording or on consecutive windows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from agent.physio.eda import eda_features
from agent.physio.hrv import hrv_features
from agent.physio.rr import clean_rr


class InputError(ValueError):
    """A file that cannot be read as one number per row; the message names file and line."""


def read_column(path: str | Path, what: str) -> np.ndarray:
    """One number per row; a non-numeric first row is taken as a header, blank rows skipped.

    A CSV with several columns uses the first one.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    values: list[float] = []
    for number, line in enumerate(lines, start=1):
        cell = line.split(",")[0].strip()
        if not cell:
            continue
        try:
            value = float(cell)
        except ValueError:
            if not values and number == 1:
                continue  # a header
            raise InputError(f"{p}, line {number}: expected {what}, got {cell!r}") from None
        if not math.isfinite(value):
            raise InputError(f"{p}, line {number}: {what} must be finite, got {cell!r}")
        values.append(value)
    if not values:
        raise InputError(f"{p}: no {what} found")
    return np.asarray(values)


def _clean(x: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def analyze_rr(
    rr_ms: np.ndarray, window_s: float | None, spectral: str = "welch", correct: bool = True
) -> dict[str, Any]:
    """Cleaning summary and HRV features, whole series or per window of `window_s`.

    `correct=False` computes the features on the series exactly as given (to compare with
    a tool that does its own cleaning, or none)."""
    beat_t = np.cumsum(rr_ms) / 1000.0
    edges = _edges(float(beat_t[-1]), window_s)
    windows = []
    for start, end in edges:
        sel = rr_ms[(beat_t > start) & (beat_t <= end)]
        cleaned = clean_rr(sel)
        entry: dict[str, Any] = {
            "start_s": round(start, 3),
            "end_s": round(end, 3),
            "cleaning": {
                "n_input": cleaned.n_input,
                "corrected_fraction": cleaned.corrected_fraction,
                "counts": dict(cleaned.counts),
                "rejected": cleaned.rejected,
                "reason": cleaned.reason,
            },
        }
        if not correct:
            entry["features"] = hrv_features(sel, spectral=spectral).as_dict()
        elif cleaned.rr_ms.size:
            entry["features"] = hrv_features(
                cleaned.rr_ms, segments=cleaned.segments, spectral=spectral
            ).as_dict()
        windows.append(entry)
    return {
        "intervals": int(rr_ms.size),
        "duration_s": round(float(beat_t[-1]), 3),
        "windows": windows,
    }


def analyze_eda(samples_us: np.ndarray, rate_hz: float, window_s: float | None) -> dict[str, Any]:
    """EDA features, whole recording or per window of `window_s`."""
    duration = samples_us.size / rate_hz
    windows = []
    for start, end in _edges(duration, window_s):
        part = samples_us[round(start * rate_hz) : round(end * rate_hz)]
        entry: dict[str, Any] = {"start_s": round(start, 3), "end_s": round(end, 3)}
        entry["features"] = eda_features(part, rate_hz).to_dict() if part.size else None
        windows.append(entry)
    return {
        "samples": int(samples_us.size),
        "rate_hz": rate_hz,
        "duration_s": duration,
        "windows": windows,
    }


def _edges(duration: float, window_s: float | None) -> list[tuple[float, float]]:
    if window_s is None or window_s >= duration:
        return [(0.0, duration)]
    n = int(duration // window_s)
    edges = [(i * window_s, (i + 1) * window_s) for i in range(n)]
    if duration - n * window_s > 1e-9:
        edges.append((n * window_s, duration))  # the remainder, marked by its shorter span
    return edges


def analyze(
    rr_file: str | None,
    eda_file: str | None,
    eda_rate: float | None,
    window_s: float | None,
    spectral: str = "welch",
    correct: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {"window_s": window_s}
    if rr_file:
        rr = read_column(rr_file, "an RR interval in ms")
        out["rr"] = {
            "file": str(rr_file),
            "spectral": spectral,
            "artifact_correction": correct,
            **analyze_rr(rr, window_s, spectral, correct),
        }
    if eda_file:
        if not eda_rate:
            raise InputError("--eda needs --eda-rate HZ (the sample rate of the file)")
        eda = read_column(eda_file, "a skin conductance in µS")
        out["eda"] = {"file": str(eda_file), **analyze_eda(eda, eda_rate, window_s)}
    return _clean(out)
