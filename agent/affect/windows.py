"""Aggregation windows: raw evidence in, one aggregated state per window out.

This is where raw data stops. `WindowAggregator.put` receives events (it is the sources'
`EvidenceSink`); `close(start, end)` reduces them to numbers. Physiology is analysed over
a sliding window ending at `end` (RR over `hrv_window_s`, EDA over `eda_window_s`), faces
over the state window itself; samples older than the sliding windows are forgotten.
`WindowState.payload()` is the only thing the publishing side ever sees.

Heart: RR intervals are cleaned (`agent.physio.rr.clean_rr`: range filter, gaps from
dropped notifications split the series, Lipponen-Tarvainen correction); a window whose
corrected fraction exceeds `max_corrected_fraction` gives no heart evidence.
Skin: `agent.physio.eda.eda_features`; a flat or contact-lost signal gives none.

Physiological arousal is each signal z-scored against the wearer's own resting baseline
(the first `baseline_windows` windows with that signal), with the directions the
literature agrees on: heart rate up, RMSSD down (vagal withdrawal), skin-conductance
level up and responses more frequent all mean higher arousal (Kreibig 2010, Biol.
Psychol. 84:394; Boucsein 2012, Electrodermal Activity). Spreads are floored (5 bpm,
10 ms, 0.5 µS, 2 /min) so a steady baseline does not turn noise into alarm.
physio arousal = tanh(mean z / 3); stress = logistic(mean of the HR and RMSSD z - 1),
0.27 at baseline and 0.5 one spread above (HRV is the stress marker of choice: Kim et al.
2018, Psychiatry Investig. 15:235).

Faces: the quality-weighted mean expression gives valence and arousal on the circumplex
(`agent.affect.circumplex`) and the discrete emotion (its most probable class).
Arousal combines face and physiology weighted by their confidence.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agent.affect.circumplex import mean_expression, valence_arousal
from agent.events import EXPRESSIONS, EdaEvent, Event, FaceObservation, FrameEvent, HeartEvent
from agent.physio.eda import eda_features
from agent.physio.hrv import hrv_features
from agent.physio.rr import clean_rr

PAYLOAD_VERSION = 1
FLOORS = {"hr_bpm": 5.0, "rmssd_ms": 10.0, "scl_us": 0.5, "scr_per_min": 2.0}
SIGNS = {"hr_bpm": 1.0, "rmssd_ms": -1.0, "scl_us": 1.0, "scr_per_min": 1.0}


def iso(t: float) -> str:
    """UNIX seconds as an ISO-8601 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


@dataclass(frozen=True)
class WindowState:
    start: float
    end: float
    status: str  # ok | calibrating | insufficient_data
    modalities: tuple[str, ...]
    evidence: dict[str, float]
    valence: float | None = None
    arousal: float | None = None
    stress: float | None = None
    emotion: str | None = None
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
            "valence": _round(self.valence),
            "arousal": _round(self.arousal),
            "stress": _round(self.stress),
            "emotion": self.emotion,
            "confidence": _round(self.confidence),
            "modalities": list(self.modalities),
            "evidence": self.evidence,
        }
        if with_vitals:
            body["vitals"] = {k: _round(v, 2) for k, v in self.vitals.items()}
        return body


@dataclass
class _Baseline:
    """Mean and spread of each signal over the first windows that had it."""

    needed: int
    samples: dict[str, list[float]] = field(default_factory=dict)

    def z(self, key: str, value: float) -> float | None:
        """The z-score against the baseline, or None while the baseline is forming."""
        values = self.samples.setdefault(key, [])
        if len(values) < self.needed:
            values.append(value)
            return None
        arr = np.asarray(values)
        spread = arr.std(ddof=1) if arr.size > 1 else 0.0
        return SIGNS[key] * float((value - arr.mean()) / max(spread, FLOORS[key]))


@dataclass
class _Window:
    notifications: int = 0
    no_contact: int = 0
    eda_seconds: float = 0.0
    frames: int = 0
    face_probs: list[tuple[float, ...]] = field(default_factory=list)
    face_quality: list[float] = field(default_factory=list)


class WindowAggregator:
    """Collects events between window closes (an `EvidenceSink`)."""

    def __init__(
        self,
        min_beats: int = 5,
        min_eda_s: float = 5.0,
        baseline_windows: int = 6,
        hrv_window_s: float = 60.0,
        eda_window_s: float = 60.0,
        max_corrected_fraction: float = 0.2,
        gap_tolerance_s: float = 0.5,
        scr_min_amplitude_us: float = 0.01,
    ) -> None:
        self.min_beats = min_beats
        self.min_eda_s = min_eda_s
        self.hrv_window_s = hrv_window_s
        self.eda_window_s = eda_window_s
        self.max_corrected_fraction = max_corrected_fraction
        self.gap_tolerance_s = gap_tolerance_s
        self.scr_min_amplitude_us = scr_min_amplitude_us
        self._win = _Window()
        self._rr: deque[tuple[float, float]] = deque()  # (arrival t, RR ms)
        self._eda: deque[tuple[float, float, float]] = deque()  # (t, µS, rate)
        self._baseline = _Baseline(baseline_windows)
        self.counts: dict[str, int] = {"heart": 0, "eda": 0, "camera": 0, "faces": 0}

    def put(self, event: Event) -> None:
        w = self._win
        if isinstance(event, HeartEvent):
            self.counts["heart"] += 1
            w.notifications += 1
            if event.contact is False:
                w.no_contact += 1  # RR measured without skin contact is noise
                return
            self._rr.extend((event.t, rr) for rr in event.rr_ms)
        elif isinstance(event, EdaEvent):
            self.counts["eda"] += 1
            step = 1.0 / event.rate_hz
            self._eda.extend(
                (event.t + i * step, v, event.rate_hz) for i, v in enumerate(event.microsiemens)
            )
            w.eda_seconds += len(event.microsiemens) * step
        elif isinstance(event, FrameEvent):
            self.counts["camera"] += 1
            w.frames += 1
        elif isinstance(event, FaceObservation):  # one per analysed frame, faces or not
            self.counts["faces"] += len(event.quality)
            w.frames += 1
            w.face_probs.extend(event.probabilities)
            w.face_quality.extend(event.quality)

    # -- analysis ---------------------------------------------------------------------
    def _heart(self, start: float, end: float) -> tuple[dict[str, float | None], int, float | None]:
        """HRV over the sliding window: (vitals, beats in this window, corrected fraction)."""
        while self._rr and self._rr[0][0] < end - self.hrv_window_s:
            self._rr.popleft()
        recent = [(t, rr) for t, rr in self._rr if t < end]
        beats = sum(1 for t, _ in recent if t >= start)
        if len(recent) < self.min_beats or beats == 0:
            return {}, beats, None
        t, rr = np.array(recent).T
        cleaned = clean_rr(rr, t, self.max_corrected_fraction, gap_tolerance_s=self.gap_tolerance_s)
        if cleaned.rejected or cleaned.rr_ms.size < self.min_beats:
            return {}, beats, cleaned.corrected_fraction
        f = hrv_features(cleaned.rr_ms, segments=cleaned.segments)
        return (
            {"hr_bpm": f.mean_hr, "rmssd_ms": f.rmssd, "sdnn_ms": f.sdnn},
            beats,
            (cleaned.corrected_fraction),
        )

    def _skin(self, end: float) -> dict[str, float | None]:
        while self._eda and self._eda[0][0] < end - self.eda_window_s:
            self._eda.popleft()
        recent = [(v, r) for t, v, r in self._eda if t < end]
        if not recent or len(recent) / recent[-1][1] < self.min_eda_s:
            return {}
        values = np.array([v for v, _ in recent])
        f = eda_features(values, recent[-1][1], scr_min_amplitude_us=self.scr_min_amplitude_us)
        if f.flat or f.contact_lost or f.scl_mean_us is None:
            return {}
        return {"scl_us": f.scl_mean_us, "scr_per_min": f.scr_rate_per_min}

    def close(self, start: float, end: float) -> WindowState:
        """Reduce the evidence up to `end` to a state; forget what no window needs any more."""
        w, self._win = self._win, _Window()
        heart, beats, corrected = self._heart(start, end)
        skin = self._skin(end) if w.eda_seconds > 0 else {}
        expression = mean_expression(w.face_probs, w.face_quality)
        evidence = {
            "beats": beats,
            "heart_notifications": w.notifications,
            "corrected_beats": _round(corrected),
            "eda_seconds": round(w.eda_seconds, 2),
            "frames": w.frames,
            "faces": len(w.face_quality),
        }
        vitals = {**heart, **skin}
        modalities = tuple(
            m
            for m, ok in (
                ("face", expression is not None),
                ("heart", bool(heart)),
                ("eda", bool(skin)),
            )
            if ok
        )
        if not modalities:
            return WindowState(start, end, "insufficient_data", (), evidence, vitals=vitals)

        zs = {}
        for key in ("hr_bpm", "rmssd_ms", "scl_us", "scr_per_min"):
            value = vitals.get(key)
            if value is not None and math.isfinite(value):
                z = self._baseline.z(key, value)
                if z is not None:
                    zs[key] = z
        physio_arousal = math.tanh(float(np.mean(list(zs.values()))) / 3.0) if zs else None
        heart_z = [zs[k] for k in ("hr_bpm", "rmssd_ms") if k in zs]
        stress = 1.0 / (1.0 + math.exp(1.0 - float(np.mean(heart_z)))) if heart_z else None
        physio_conf = len(zs) / 4.0

        valence = face_arousal = emotion = None
        face_conf = 0.0
        if expression is not None:
            valence, face_arousal = valence_arousal(expression)
            emotion = EXPRESSIONS[int(np.argmax(expression))]
            face_conf = float(np.mean(w.face_quality)) * float(np.max(expression))

        parts = [
            (a, c)
            for a, c in ((physio_arousal, physio_conf), (face_arousal, face_conf))
            if a is not None
        ]
        arousal = (
            sum(a * c for a, c in parts) / sum(c for _, c in parts)
            if parts and sum(c for _, c in parts) > 0
            else None
        )
        if physio_arousal is None and expression is None:
            return WindowState(start, end, "calibrating", modalities, evidence, vitals=vitals)
        confidence = min(1.0, max(physio_conf, face_conf) * (0.75 + 0.25 * len(modalities) / 3))
        return WindowState(
            start,
            end,
            "ok",
            modalities,
            evidence,
            valence,
            arousal,
            stress,
            emotion,
            confidence,
            vitals,
        )
