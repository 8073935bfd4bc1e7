"""Aggregation windows: raw evidence in, one aggregated state per window out.

This is where raw data stops. `WindowAggregator.put` receives events (it is the sources'
`EvidenceSink`); `close(start, end)` reduces what arrived in [start, end) to numbers and
forgets the raw samples. The resulting `WindowState.payload()` is the only thing the
publishing side ever sees.

Physiological arousal here is deliberately simple and documented: each signal is
z-scored against the wearer's own resting baseline (the first `baseline_windows` windows
with enough evidence), with the directions the literature agrees on: heart rate up,
RMSSD down (vagal withdrawal) and skin-conductance level up all mean higher arousal
(Kreibig 2010, Biol. Psychol. 84:394; Boucsein 2012, Electrodermal Activity).
Spreads are floored (5 bpm, 10 ms, 0.5 µS) so a very steady baseline does not turn noise
into alarm. arousal = tanh(mean z / 3) in [-1, 1]; stress = logistic(mean of the HR and
RMSSD z-scores - 1) in [0, 1] (0.27 at baseline, 0.5 one spread above), leaning on HRV
as stress studies do (Kim et al. 2018, Psychiatry
Investig. 15:235). Valence and the discrete emotion need the face and stay null until
the vision pipeline contributes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agent.events import EdaEvent, Event, FrameEvent, HeartEvent
from agent.physio.hrv import mean_hr, plausible_rr, rmssd

PAYLOAD_VERSION = 1


def iso(t: float) -> str:
    """UNIX seconds as an ISO-8601 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Evidence:
    rr_ms: list[float] = field(default_factory=list)
    hr_reported: list[int] = field(default_factory=list)
    notifications: int = 0
    no_contact: int = 0
    eda: list[float] = field(default_factory=list)
    eda_seconds: float = 0.0
    frames: int = 0


@dataclass(frozen=True)
class WindowState:
    start: float
    end: float
    status: str  # ok | calibrating | insufficient_data
    modalities: tuple[str, ...]
    evidence: dict[str, float]
    arousal: float | None = None
    stress: float | None = None
    confidence: float | None = None
    vitals: dict[str, float | None] = field(default_factory=dict)

    def payload(self, device: str, with_vitals: bool) -> dict[str, Any]:
        """The versioned JSON object published on `<prefix>/state` (seq added by the outbox)."""
        body: dict[str, Any] = {
            "v": PAYLOAD_VERSION,
            "device": device,
            "ts": iso(self.end),
            "window": {
                "start": iso(self.start),
                "end": iso(self.end),
                "seconds": round(self.end - self.start, 3),
            },
            "status": self.status,
            "valence": None,
            "arousal": _round(self.arousal),
            "stress": _round(self.stress),
            "emotion": None,
            "confidence": _round(self.confidence),
            "modalities": list(self.modalities),
            "evidence": self.evidence,
        }
        if with_vitals:
            body["vitals"] = {k: _round(v, 2) for k, v in self.vitals.items()}
        return body


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


@dataclass
class _Baseline:
    """Mean and spread of each signal over the first calibrated windows."""

    needed: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    def ready(self, key: str) -> bool:
        return len(self.samples.get(key, ())) >= self.needed

    def add(self, key: str, value: float) -> None:
        values = self.samples.setdefault(key, [])
        if len(values) < self.needed:
            values.append(value)

    def z(self, key: str, value: float, floor: float) -> float:
        values = np.asarray(self.samples[key])
        spread = values.std(ddof=1) if values.size > 1 else 0.0
        return float((value - values.mean()) / max(spread, floor))


class WindowAggregator:
    """Collects events between window closes (an `EvidenceSink`)."""

    def __init__(
        self, min_beats: int = 5, min_eda_s: float = 5.0, baseline_windows: int = 6
    ) -> None:
        self.min_beats = min_beats
        self.min_eda_s = min_eda_s
        self._ev = _Evidence()
        self._baseline = _Baseline(baseline_windows)
        self.counts: dict[str, int] = {"heart": 0, "eda": 0, "camera": 0}

    def put(self, event: Event) -> None:
        ev = self._ev
        if isinstance(event, HeartEvent):
            self.counts["heart"] += 1
            ev.notifications += 1
            if event.contact is False:
                ev.no_contact += 1  # RR measured without skin contact is noise
                return
            ev.hr_reported.append(event.hr_bpm)
            ev.rr_ms.extend(event.rr_ms)
        elif isinstance(event, EdaEvent):
            self.counts["eda"] += 1
            ev.eda.extend(event.microsiemens)
            ev.eda_seconds += len(event.microsiemens) / event.rate_hz
        elif isinstance(event, FrameEvent):
            self.counts["camera"] += 1
            ev.frames += 1

    def close(self, start: float, end: float) -> WindowState:
        """Reduce the window's evidence to a state and discard the raw samples."""
        ev, self._ev = self._ev, _Evidence()
        rr = plausible_rr(ev.rr_ms)
        heart_ok = rr.size >= self.min_beats
        eda_ok = ev.eda_seconds >= self.min_eda_s and len(ev.eda) > 0
        evidence = {
            "beats": int(rr.size),
            "heart_notifications": ev.notifications,
            "eda_seconds": round(ev.eda_seconds, 2),
            "frames": ev.frames,
            "faces": 0,
        }
        vitals: dict[str, float | None] = {"hr_bpm": None, "rmssd_ms": None, "scl_us": None}
        if heart_ok:
            vitals["hr_bpm"] = mean_hr(rr)
            vitals["rmssd_ms"] = rmssd(rr)
        if eda_ok:
            vitals["scl_us"] = float(np.mean(ev.eda))
        modalities = tuple(m for m, ok in (("heart", heart_ok), ("eda", eda_ok)) if ok)
        if not modalities:
            return WindowState(start, end, "insufficient_data", (), evidence, vitals=vitals)

        zs: dict[str, float] = {}
        # spreads below these are measurement noise, not a person's variability
        floors = {"hr_bpm": 5.0, "rmssd_ms": 10.0, "scl_us": 0.5}
        signs = {"hr_bpm": 1.0, "rmssd_ms": -1.0, "scl_us": 1.0}
        for key, value in vitals.items():
            if value is None:
                continue
            if self._baseline.ready(key):
                zs[key] = signs[key] * self._baseline.z(key, value, floors[key])
            else:
                self._baseline.add(key, value)
        if not zs:
            return WindowState(start, end, "calibrating", modalities, evidence, vitals=vitals)

        arousal = math.tanh(float(np.mean(list(zs.values()))) / 3.0)
        heart_z = [zs[k] for k in ("hr_bpm", "rmssd_ms") if k in zs]
        stress = 1.0 / (1.0 + math.exp(1.0 - float(np.mean(heart_z)))) if heart_z else None
        coverage = len(zs) / 3.0
        quality = min(1.0, rr.size / (3 * self.min_beats)) if heart_ok else 0.5
        confidence = coverage * (0.5 + 0.5 * quality)
        return WindowState(
            start, end, "ok", modalities, evidence, arousal, stress, confidence, vitals=vitals
        )
