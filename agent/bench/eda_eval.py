"""EDA features on real recordings, side by side with NeuroKit2, in one run.

    python -m agent.bench.eda_eval --data ../shared/data/physio [--json]

Recordings (see the data folder's README): bio_resting_8min_100hz.csv and
bio_eventrelated_100hz.csv (column EDA, µS, 100 Hz), flirt_empatica_e4_EDA.csv (E4: row 1
start time, row 2 rate, then µS). Each is cut into consecutive 5-minute windows; a
remainder of at least 60 s is kept as a shorter last window.

NeuroKit2 is run on the same samples at the same (native) rate, twice:
- ``nk``: ``nk.eda_process`` (3 Hz Butterworth cleaning, skipped at <= 6 Hz; 0.05 Hz
  high-pass tonic/phasic; peaks with prominence >= 10 % of the window's largest, a
  relative threshold hard-wired in ``eda_process``) + ``nk.eda_intervalrelated``;
- ``nk_abs``: the same cleaning and decomposition, peaks from ``nk.eda_peaks`` with no
  relative threshold, then kept where NeuroKit2's SCR_Amplitude >= our absolute threshold
  (0.01 µS): the closest NeuroKit2 gets to our definition.
SCL mean for NeuroKit2 = mean of EDA_Tonic (its interval features have no SCL mean).
Relative difference = (ours - theirs) / |theirs|. Mean amplitudes differ partly because the
SCR sets differ, so SCRs are also paired by peak time (within 1 s) with ``nk_abs``: "match"
is the number of our SCRs that NeuroKit2 also found, "ratio" the median amplitude ratio
ours / NeuroKit2 over those pairs. Timing: one 5-minute window from the
native-rate samples, median of repeats, for ours and for ``nk`` (process + intervalrelated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.physio.eda import clean, decompose, detect_scrs, eda_features

WINDOW_S = 300.0
MIN_REMAINDER_S = 60.0
SCR_MIN_AMPLITUDE_US = 0.01
MATCH_S = 1.0  # SCR peaks this close (s) are taken to be the same response


def load_recordings(data: Path) -> dict[str, tuple[np.ndarray, float]]:
    """name -> (EDA in µS, rate in Hz) for the three recordings that are present."""
    out: dict[str, tuple[np.ndarray, float]] = {}
    for name in ("bio_resting_8min_100hz", "bio_eventrelated_100hz"):
        path = data / f"{name}.csv"
        if path.exists():
            table = np.genfromtxt(path, delimiter=",", names=True)
            out[name] = (np.asarray(table["EDA"], dtype=np.float64), 100.0)
    path = data / "flirt_empatica_e4_EDA.csv"
    if path.exists():
        raw = np.loadtxt(path, delimiter=",", ndmin=1)
        out["flirt_empatica_e4_EDA"] = (raw[2:], float(raw[1]))
    return out


def windows(n: int, rate_hz: float) -> list[tuple[int, int]]:
    w = round(WINDOW_S * rate_hz)
    spans = [(s, min(s + w, n)) for s in range(0, n, w)]
    return [(a, b) for a, b in spans if (b - a) / rate_hz >= min(MIN_REMAINDER_S, n / rate_hz)]


def nk_features(nk: Any, x: np.ndarray, rate_hz: float) -> dict[str, float | int | None]:
    """NeuroKit2 default pipeline and the same pipeline with an absolute SCR threshold."""
    # NeuroKit2 indexes arrays with lag * sampling_rate (eda_autocor): it needs an int rate
    rate_hz = int(rate_hz) if float(rate_hz).is_integer() else rate_hz
    signals, _ = nk.eda_process(x, sampling_rate=rate_hz)
    interval = nk.eda_intervalrelated(signals, sampling_rate=rate_hz)
    amp = float(interval["SCR_Peaks_Amplitude_Mean"].iloc[0])
    out: dict[str, float | int | None] = {
        "scl_mean_us": float(signals["EDA_Tonic"].mean()),
        "scr_count": int(interval["SCR_Peaks_N"].iloc[0]),
        "scr_amplitude_mean_us": None if np.isnan(amp) else amp,
    }
    try:
        _, info = nk.eda_peaks(
            signals["EDA_Phasic"].to_numpy(), sampling_rate=rate_hz, amplitude_min=0.0
        )
        amps = np.asarray(info["SCR_Amplitude"], dtype=np.float64)
        keep = amps >= SCR_MIN_AMPLITUDE_US
        out["abs_scr_count"] = int(keep.sum())
        out["abs_scr_amplitude_mean_us"] = float(amps[keep].mean()) if keep.any() else None
        out["abs_peak_s"] = (np.asarray(info["SCR_Peaks"])[keep] / rate_hz).tolist()
        out["abs_amplitude_us"] = amps[keep].tolist()
    except (ValueError, IndexError):  # NeuroKit2 raises when peaks and onsets mismatch
        out["abs_scr_count"] = out["abs_scr_amplitude_mean_us"] = None
    return out


def match_scrs(x: np.ndarray, rate_hz: float, nk_out: dict[str, Any]) -> dict[str, Any]:
    """Our SCRs (same defaults as eda_features) paired with nk_abs SCRs whose peaks lie
    within MATCH_S: how many are shared, and the median amplitude ratio ours / theirs."""
    cleaned, fs = clean(x, rate_hz)
    _, phasic = decompose(cleaned, fs)
    ours = detect_scrs(phasic, fs, min_amplitude_us=SCR_MIN_AMPLITUDE_US)
    their_t = np.asarray(nk_out.get("abs_peak_s") or [], dtype=np.float64)
    their_a = np.asarray(nk_out.get("abs_amplitude_us") or [], dtype=np.float64)
    ratios = []
    for t, a in zip(ours.peak_s, ours.amplitude_us, strict=True):
        if their_t.size:
            j = int(np.argmin(np.abs(their_t - t)))
            if abs(their_t[j] - t) <= MATCH_S:
                ratios.append(a / their_a[j])
    return {
        "matched": len(ratios),
        "amplitude_ratio_median": float(np.median(ratios)) if ratios else None,
    }


def rel(ours: float | int | None, theirs: float | int | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return (float(ours) - float(theirs)) / abs(float(theirs))


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches and lazy imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def evaluate(data: Path, repeats: int) -> dict[str, Any]:
    import neurokit2 as nk

    report: dict[str, Any] = {"neurokit2": nk.__version__, "recordings": {}}
    for name, (x, fs) in load_recordings(data).items():
        rows = []
        for a, b in windows(x.size, fs):
            ours = eda_features(x[a:b], fs, scr_min_amplitude_us=SCR_MIN_AMPLITUDE_US)
            theirs = nk_features(nk, x[a:b], fs)
            matched = match_scrs(x[a:b], fs, theirs)
            for k in ("abs_peak_s", "abs_amplitude_us"):
                theirs.pop(k, None)
            rows.append(
                {
                    "start_s": a / fs,
                    "duration_s": (b - a) / fs,
                    "ours": ours.to_dict(),
                    "matched_abs": matched,
                    "nk": theirs,
                    "rel_scl_mean": rel(ours.scl_mean_us, theirs["scl_mean_us"]),
                    "rel_scr_count": rel(ours.scr_count, theirs["scr_count"]),
                    "rel_scr_amplitude": rel(
                        ours.scr_amplitude_mean_us, theirs["scr_amplitude_mean_us"]
                    ),
                    "rel_scr_count_abs": rel(ours.scr_count, theirs["abs_scr_count"]),
                    "rel_scr_amplitude_abs": rel(
                        ours.scr_amplitude_mean_us, theirs["abs_scr_amplitude_mean_us"]
                    ),
                }
            )
        seg = x[: min(x.size, round(WINDOW_S * fs))]
        ours_ms = median_ms(lambda seg=seg, fs=fs: eda_features(seg, fs), repeats)
        nk_ms = median_ms(lambda seg=seg, fs=fs: nk_features(nk, seg, fs), max(3, repeats // 10))
        report["recordings"][name] = {
            "rate_hz": fs,
            "minutes": x.size / fs / 60.0,
            "windows": rows,
            "timing": {
                "window_s": seg.size / fs,
                "ours_ms": ours_ms,
                "nk_ms": nk_ms,
                "speedup": nk_ms / ours_ms,
            },
        }
    return report


def _f(v: float | int | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render(report: dict[str, Any]) -> str:
    lines = [f"NeuroKit2 {report['neurokit2']}; SCR threshold {SCR_MIN_AMPLITUDE_US} µS (ours)"]
    head = (
        f"{'window':>13} {'SCL ours':>8} {'nk':>7} {'rel':>6} | {'SCR n ours':>10} {'nk':>4} "
        f"{'nk_abs':>6} | {'amp ours':>8} {'nk':>6} {'nk_abs':>6} {'rel_abs':>7} | "
        f"{'match':>5} {'ratio':>5} | "
        f"{'rise s':>6} {'slope/min':>9} flags"
    )
    for name, rec in report["recordings"].items():
        lines += ["", f"{name} ({rec['rate_hz']:g} Hz, {rec['minutes']:.1f} min)", head]
        for r in rec["windows"]:
            o, n = r["ours"], r["nk"]
            flags = [k for k in ("clipped", "contact_lost") if o[k]]
            if o["flat"]:
                flags.insert(0, f"flat({o['flat_fraction']:.0%})")
            if o["out_of_range_fraction"] > 0:
                flags.append(f"oor={o['out_of_range_fraction']:.2%}")
            lines.append(
                f"{r['start_s']:6.0f}+{r['duration_s']:<5.0f}s "
                f"{_f(o['scl_mean_us'], '8.3f')} {_f(n['scl_mean_us'], '7.3f')} "
                f"{_f(r['rel_scl_mean'], '+6.1%')} | {_f(o['scr_count'], '10d')} "
                f"{_f(n['scr_count'], '4d')} {_f(n['abs_scr_count'], '6d')} | "
                f"{_f(o['scr_amplitude_mean_us'], '8.3f')} "
                f"{_f(n['scr_amplitude_mean_us'], '6.3f')} "
                f"{_f(n['abs_scr_amplitude_mean_us'], '6.3f')} "
                f"{_f(r['rel_scr_amplitude_abs'], '+7.0%')} | "
                f"{r['matched_abs']['matched']:5d} "
                f"{_f(r['matched_abs']['amplitude_ratio_median'], '5.2f')} | "
                f"{_f(o['scr_rise_time_mean_s'], '6.2f')} "
                f"{_f(o['scl_slope_us_per_min'], '+9.4f')} {' '.join(flags)}"
            )
        t = rec["timing"]
        lines.append(
            f"timing, {t['window_s']:.0f} s window at {rec['rate_hz']:g} Hz: ours "
            f"{t['ours_ms']:.2f} ms, NeuroKit2 {t['nk_ms']:.1f} ms, ratio {t['speedup']:.0f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/physio"))
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--repeats", type=int, default=50, help="timing repeats for ours")
    args = ap.parse_args(argv)
    try:
        import neurokit2  # noqa: F401
    except ImportError:
        print("needs neurokit2: .venv/bin/pip install neurokit2", file=sys.stderr)
        return 2
    if not load_recordings(args.data):
        print(f"no EDA recordings found under {args.data}", file=sys.stderr)
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NeuroKit2 warns that it skips cleaning at 4 Hz
        report = evaluate(args.data, args.repeats)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
