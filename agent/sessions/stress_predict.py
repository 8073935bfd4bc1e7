"""Recordings in the Stress-Predict layout, turned into what the agent's sensors would send.

A subject folder holds (Iqbal et al. 2022; other columns and files are ignored):

- ``segments.csv``: ``phase,start_t_s,end_t_s``, the protocol's phases in seconds;
- ``ibi.csv``: ``t_s,rr_ms``, one row per beat the wrist PPG detected (the E4 drops beats
  whenever the hand moves);
- ``eda_4hz.csv``: ``t_s,eda_uS``, skin conductance at 4 Hz;
- ``hr_e4_1hz.csv`` (optional): ``t_s,hr_bpm_e4``, the E4's heart rate once a second.

A heart-rate strap notifies once a second with the RR intervals of the beats since its
previous notification (Bluetooth Heart Rate Service), so `strap_notifications` turns the
1 Hz heart rate into those notifications, each carrying the RR of ``ibi.csv`` whose beat
fell in the second before it (often none). Without ``hr_e4_1hz.csv`` the notifications
tick every whole second from the first beat and carry the E4's rate as 60000 / mean RR.
`subject_session` builds the agent's in-memory `Session` of any stretch of a recording,
which the replay sources play exactly as they play a session folder.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.sources.session import EdaRow, HeartRow, Session

EDA_RATE_HZ = 4.0


class SubjectError(ValueError):
    """A subject folder that cannot be used, with the reason."""


@dataclass(frozen=True)
class Recording:
    name: str
    segments: tuple[tuple[str, float, float], ...]  # (phase, start_t_s, end_t_s)
    ibi: tuple[tuple[float, str], ...]  # (beat time s, RR ms as written)
    eda: tuple[tuple[float, str], ...]  # (t s, µS as written)
    hr: tuple[tuple[float, float], ...] | None  # (t s, bpm) or None without the file
    unix0: float | None  # UNIX time of t_s = 0, when the files say

    def phase(self, name: str) -> tuple[float, float]:
        for phase, start, end in self.segments:
            if phase == name:
                return start, end
        raise SubjectError(f"no phase {name!r} in segments.csv")


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                raise SubjectError(f"{path.name}: no column {', '.join(missing)}")
            return list(reader)
    except FileNotFoundError:
        raise SubjectError(f"no {path.name}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SubjectError(f"{path.name}: unreadable ({exc})") from None


def _column(rows: list[dict[str, str]], column: str, file: str) -> list[float]:
    """One column as finite numbers; SubjectError names the file, line and value."""
    out = []
    for line, row in enumerate(rows, 2):
        try:
            value = float(row[column])
        except (TypeError, ValueError):
            msg = f"{file} line {line}: {column} {row[column]!r} is not a number"
            raise SubjectError(msg) from None
        if not math.isfinite(value):
            raise SubjectError(f"{file} line {line}: {column} is not finite")
        out.append(value)
    return out


def read_segments(folder: Path) -> tuple[tuple[str, float, float], ...]:
    """(phase, start_t_s, end_t_s) of a subject's segments.csv; SubjectError if unusable."""
    seg = _rows(folder / "segments.csv", ("phase", "start_t_s", "end_t_s"))
    starts = _column(seg, "start_t_s", "segments.csv")
    ends = _column(seg, "end_t_s", "segments.csv")
    return tuple((r["phase"], a, b) for r, a, b in zip(seg, starts, ends, strict=True))


def read_recording(folder: Path) -> Recording:
    """Read one subject folder; SubjectError names what is missing or malformed."""
    if not folder.is_dir():
        raise SubjectError(f"no such folder {folder}")
    segments = read_segments(folder)
    ibi_rows = _rows(folder / "ibi.csv", ("t_s", "rr_ms"))
    _column(ibi_rows, "rr_ms", "ibi.csv")  # checked; kept as written
    ibi = tuple(
        zip(_column(ibi_rows, "t_s", "ibi.csv"), (r["rr_ms"] for r in ibi_rows), strict=True)
    )
    eda_rows = _rows(folder / "eda_4hz.csv", ("t_s", "eda_uS"))
    _column(eda_rows, "eda_uS", "eda_4hz.csv")
    eda = tuple(
        zip(_column(eda_rows, "t_s", "eda_4hz.csv"), (r["eda_uS"] for r in eda_rows), strict=True)
    )
    hr = None
    if (folder / "hr_e4_1hz.csv").exists():
        hr_rows = _rows(folder / "hr_e4_1hz.csv", ("t_s", "hr_bpm_e4"))
        hr = tuple(
            zip(
                _column(hr_rows, "t_s", "hr_e4_1hz.csv"),
                _column(hr_rows, "hr_bpm_e4", "hr_e4_1hz.csv"),
                strict=True,
            )
        )
    unix0 = None
    if eda_rows and eda_rows[0].get("unix_time"):
        try:
            unix0 = float(eda_rows[0]["unix_time"]) - eda[0][0]
        except ValueError:
            unix0 = None
    return Recording(folder.name, segments, ibi, eda, hr, unix0)


def strap_notifications(rec: Recording, a: float, b: float) -> list[tuple[float, float, list[str]]]:
    """(t, bpm, RR texts) of the notifications a strap would send in [a, b); see module."""
    if rec.hr is not None:
        ticks = [(t, bpm) for t, bpm in rec.hr if a <= t < b]
    else:
        first = next((t for t, _ in rec.ibi if t >= a), None)
        ticks = (
            []
            if first is None
            else [(float(t), math.nan) for t in range(math.ceil(first), math.ceil(b))]
        )
    out: list[tuple[float, float, list[str]]] = []
    previous = a - 1.0
    beats = [(t, v) for t, v in rec.ibi if a - 1.0 < t < b]
    k = 0
    for t, bpm in ticks:
        while k < len(beats) and beats[k][0] <= previous:
            k += 1
        rr = []
        while k < len(beats) and beats[k][0] <= t:
            rr.append(beats[k][1])
            k += 1
        if math.isnan(bpm):
            if not rr:
                previous = t
                continue  # no heart rate known without beats: a strap would not notify
            bpm = 60000.0 / (sum(float(v) for v in rr) / len(rr))
        out.append((t, bpm, rr))
        previous = t
    return out


def subject_session(rec: Recording, a: float, b: float) -> Session:
    """The stretch [a, b) of a recording as an in-memory session starting at t = 0."""
    heart = tuple(
        HeartRow(t - a, round(bpm), tuple(float(v) for v in rr), None)
        for t, bpm, rr in strap_notifications(rec, a, b)
    )
    eda = tuple(EdaRow(t - a, float(v)) for t, v in rec.eda if a <= t < b)
    if not eda:
        raise SubjectError(f"no EDA samples between {a:g} and {b:g} s")
    origin = (rec.unix0 or 0.0) + a
    return Session(
        path=Path(rec.name),
        version=1,
        start=datetime.fromtimestamp(origin, UTC),
        origin=origin,
        duration_s=b - a,
        synthetic=False,
        description=f"Stress-Predict {rec.name}, {a:g}-{b:g} s",
        license="see the recording's own licence",
        modalities=("heart", "eda") if heart else ("eda",),
        eda_rate_hz=EDA_RATE_HZ,
        _heart=heart,
        _eda=eda,
    )
