"""Aggregation windows: raw evidence in, one aggregated state per window out.

This is where raw data stops. `WindowAggregator.put` receives events (it is the sources'
`EvidenceSink`); `close(start, end)` reduces them to numbers. Physiology is analysed over
a sliding window ending at `end` (RR over `hrv_window_s`, EDA over `eda_window_s`), faces
over the state window itself; samples older than the sliding windows are forgotten.
`WindowState.payload()` is the only thing the publishing side ever sees.

Heart: RR intervals are cleaned (`agent.physio.rr.clean_rr`: range filter, gaps from
dropped notifications split the series, Lipponen-Tarvainen correction); a window whose
corrected fraction exceeds `max_corrected_fraction` gives no heart evidence.
Skin: `agent.physio.eda.eda_features`; a window with lost contact, a clipped amplifier or
a stuck value gives none. A flat one (no measurable response) still gives its level: on a
wrist, low and calm skin is often flat, and dropping it cost 42 % of Stress-Predict's rest
windows their level (and a third of its people their skin baseline at rest).

Fusion (`agent.affect.fusion`) turns the face's expression and the physiology normalised
against the wearer's personal baseline (`agent.affect.baseline`) into valence, arousal,
stress, a discrete emotion and a confidence; the fitted stress model, directions and sources are
documented there. In audience mode (`physiology=False`) heart and skin events are ignored:
only group-level face aggregates are made.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.affect.baseline import PersonalBaseline
from agent.affect.fusion import Fused, face_estimate, fuse, physio_estimate, signal_source
from agent.clock import iso
from agent.events import EdaEvent, Event, FaceObservation, FrameEvent, HeartEvent
from agent.physio.eda import eda_features
from agent.physio.hrv import hrv_features
from agent.physio.rr import clean_rr

PAYLOAD_VERSION = 1
STATUSES = ("ok", "calibrating", "insufficient_data")
PHYSIO_KEYS = ("hr_bpm", "rmssd_ms", "scl_us", "scr_per_min")


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def window_json(start: float, end: float) -> dict[str, Any]:
    return {"start": iso(start), "end": iso(end), "seconds": round(end - start, 3)}


@dataclass(frozen=True)
class WindowState:
    start: float
    end: float
    status: str  # one of STATUSES
    modalities: tuple[str, ...]
    evidence: dict[str, float | int | None]
    fused: Fused | None = None
    face: dict[str, float] | None = None  # the face's own valence, arousal, confidence
    body: dict[str, float] | None = None  # physiology's own arousal, stress, confidence
    baseline: dict[str, Any] = field(default_factory=dict)
    vitals: dict[str, float | None] = field(default_factory=dict)
    # signed z-scores against the personal baseline that fusion used; never published
    zscores: dict[str, float] = field(default_factory=dict)

    def payload(self, device: str, with_vitals: bool, mode: str = "personal") -> dict[str, Any]:
        """The versioned JSON object published on `<prefix>/state` (seq added by the outbox).

        Its JSON Schema is agent/schemas/state.json (`emotion-agent schema state`).
        """
        f = self.fused
        ok = self.status == "ok" and f is not None
        body: dict[str, Any] = {
            "v": PAYLOAD_VERSION,
            "device": device,
            "ts": iso(self.end),
            "window": window_json(self.start, self.end),
            "status": self.status,
            "mode": mode,
            "valence": _round(f.valence) if ok else None,
            "arousal": _round(f.arousal) if ok else None,
            "stress": _round(f.stress) if ok else None,
            "emotion": f.emotion if ok else None,
            "confidence": _round(f.confidence) if ok else None,
            "emotions": (
                {k: _round(v) for k, v in f.emotions.items()} if ok and f.emotions else None
            ),
            "agreement": _round(f.agreement) if ok else None,
            "modalities": list(self.modalities),
            "contributions": {
                "face": _rounded(self.face) if ok else None,
                "body": _rounded(self.body) if ok else None,
            },
            "baseline": self.baseline,
            "evidence": self.evidence,
        }
        if with_vitals and mode == "personal":
            body["vitals"] = {k: _round(v, 2) for k, v in self.vitals.items()}
        return body


def _rounded(d: dict[str, float] | None) -> dict[str, float | None] | None:
    return None if d is None else {k: _round(v) for k, v in d.items()}


@dataclass
class _Window:
    notifications: int = 0
    no_contact: int = 0
    eda_seconds: float = 0.0
    frames: int = 0
    face_frames: int = 0  # analysed frames that held at least one face
    faces_max: int = 0  # most faces in one frame: a lower bound on the people present
    face_probs: list[tuple[float, ...]] = field(default_factory=list)
    face_quality: list[float] = field(default_factory=list)


class WindowAggregator:
    """Collects events between window closes (an `EvidenceSink`)."""

    def __init__(
        self,
        min_beats: int = 5,
        min_eda_s: float = 5.0,
        hrv_window_s: float = 60.0,
        eda_window_s: float = 60.0,
        max_corrected_fraction: float = 0.2,
        gap_tolerance_s: float = 0.5,
        scr_min_amplitude_us: float = 0.01,
        baseline: PersonalBaseline | None = None,
        physiology: bool = True,
    ) -> None:
        self.min_beats = min_beats
        self.min_eda_s = min_eda_s
        self.hrv_window_s = hrv_window_s
        self.eda_window_s = eda_window_s
        self.max_corrected_fraction = max_corrected_fraction
        self.gap_tolerance_s = gap_tolerance_s
        self.scr_min_amplitude_us = scr_min_amplitude_us
        self.baseline = baseline if baseline is not None else PersonalBaseline()
        self.physiology = physiology
        self._win = _Window()
        self._rr: deque[tuple[float, float]] = deque()  # (arrival t, RR ms)
        self._eda: deque[tuple[float, float, float]] = deque()  # (t, µS, rate)
        self.counts: dict[str, int] = {"heart": 0, "eda": 0, "camera": 0, "faces": 0, "ignored": 0}

    def put(self, event: Event) -> None:
        w = self._win
        if isinstance(event, HeartEvent | EdaEvent) and not self.physiology:
            self.counts["ignored"] += 1  # audience mode: bodies are not measured
            return
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
            n = len(event.quality)
            self.counts["faces"] += n
            w.frames += 1
            w.face_frames += n > 0
            w.faces_max = max(w.faces_max, n)
            w.face_probs.extend(event.probabilities)
            w.face_quality.extend(event.quality)

    def discard(self) -> None:
        """Drop the open window's evidence unseen (pause): nothing of it is analysed or kept."""
        self._win = _Window()
        self._rr.clear()
        self._eda.clear()

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
            cleaned.corrected_fraction,
        )

    def _skin(self, end: float) -> dict[str, float | None]:
        while self._eda and self._eda[0][0] < end - self.eda_window_s:
            self._eda.popleft()
        recent = [(v, r) for t, v, r in self._eda if t < end]
        if not recent or len(recent) / recent[-1][1] < self.min_eda_s:
            return {}
        values = np.array([v for v, _ in recent])
        f = eda_features(values, recent[-1][1], scr_min_amplitude_us=self.scr_min_amplitude_us)
        # A flat window (no measurable phasic activity) is a calm, often low, wrist signal:
        # its level counts. What does not: lost contact, a clipped amplifier, or a sensor
        # stuck on one value for the whole window.
        stuck = float(np.ptp(values)) == 0.0
        if f.contact_lost or f.clipped or stuck or f.scl_mean_us is None:
            return {}
        return {"scl_us": f.scl_mean_us, "scr_per_min": f.scr_rate_per_min}

    def close(self, start: float, end: float) -> WindowState:
        """Reduce the evidence up to `end` to a state; forget what no window needs any more."""
        w, self._win = self._win, _Window()
        heart, beats, corrected = self._heart(start, end)
        skin = self._skin(end) if w.eda_seconds > 0 else {}
        face = face_estimate(w.face_probs, w.face_quality, w.frames, w.face_frames)
        evidence: dict[str, float | int | None] = {
            "frames": w.frames,
            "faces": len(w.face_quality),
            "faces_max": w.faces_max,
        }
        if self.physiology:
            evidence.update(
                beats=beats,
                heart_notifications=w.notifications,
                corrected_beats=_round(corrected),
                eda_seconds=round(w.eda_seconds, 2),
            )
        vitals = {**heart, **skin}
        present = {k: v for k in PHYSIO_KEYS if (v := vitals.get(k)) is not None}
        z = self.baseline.observe(present, end - start, end)
        baseline = self.baseline.status(list(present)) if self.physiology else {"state": "none"}
        if face is None and not present:
            return WindowState(
                start, end, "insufficient_data", (), evidence, baseline=baseline, vitals=vitals
            )
        body = physio_estimate(z, max(0.0, 1.0 - 2.0 * (corrected or 0.0)))
        fused = fuse(face, body)
        if fused is None:  # physiology only, and its baseline is still forming
            return WindowState(
                start, end, "calibrating", (), evidence, baseline=baseline, vitals=vitals
            )
        used = body.signals if body is not None else ()
        modalities = tuple(
            m
            for m, ok in (
                ("face", face is not None),
                ("heart", any(signal_source(k) == "heart" for k in used)),
                ("eda", any(signal_source(k) == "eda" for k in used)),
            )
            if ok
        )
        return WindowState(
            start,
            end,
            "ok",
            modalities,
            evidence,
            fused,
            face=None
            if face is None
            else {"valence": face.valence, "arousal": face.arousal, "confidence": face.confidence},
            body=None
            if body is None
            else {"arousal": body.arousal, "stress": body.stress, "confidence": body.confidence},
            baseline=baseline,
            vitals=vitals,
            zscores=z,
        )
