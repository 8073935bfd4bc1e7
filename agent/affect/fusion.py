"""Fusion: per-modality estimates in, one emotional state out. Pure functions, no I/O.

**Face** (`face_estimate`). Each face's seven expression probabilities are placed on the
valence-arousal circumplex (`agent.affect.circumplex`, Russell & Mehrabian 1977); a window's
expression is the quality-weighted mean over its faces. Face confidence is
`mean quality x mean peak probability x (0.5 + 0.5 x coverage)`, coverage being the share
of analysed frames that held a face: blurry, small, ambiguous or intermittent faces count
for less.

**Physiology** (`physio_estimate`). Each signal is a z-score against the wearer's personal
baseline (`agent.affect.baseline`), signed so that positive means more activation: heart
rate up, RMSSD down (vagal withdrawal), skin-conductance level up, skin-conductance
responses more frequent. These four directions are the ones the literature agrees on for
high-arousal states (Kreibig 2010, Biol. Psychol. 84:394, review of 134 studies; Boucsein
2012, *Electrodermal Activity*). Weights:

- heart rate: arousal 0.20, stress 0.30. Rises with arousal and with stress, but also
  with movement and posture.
- RMSSD: arousal 0.20, stress 0.40. Reduced HRV is the most consistent stress marker
  (Kim et al. 2018, Psychiatry Investig. 15:235, meta-analysis).
- skin-conductance level: arousal 0.30, stress 0.10. Purely sympathetic (Boucsein 2012),
  but slow and drifting with skin temperature.
- skin-conductance response rate: arousal 0.30, stress 0.20. Non-specific responses track
  sympathetic arousal and discriminate stress from cognitive load (Setz et al. 2010,
  IEEE Trans. Inf. Technol. Biomed. 14:410).

`physio arousal = tanh(zbar / 2)` (z = 2 -> 0.76); `physio stress = logistic(1.5 zbar - 1)`
(0.27 at baseline, 0.62 one spread above, 0.88 two above), zbar the weighted mean z of
the signals present. Physiology confidence = weight coverage x signal quality (1 minus
twice the share of corrected beats).

**Fusion** (`fuse`). Valence comes from the face alone: no physiological signal tells
pleasant from unpleasant arousal reliably (Kreibig 2010). Arousal is the
confidence-weighted mean of face and physiology. Stress is physiology's, blended with the
face's negative activation `logistic(3 (arousal - valence) - 1.5)` at half the weight
(angry or fearful faces are stressed, happy ones are not). The discrete emotion is the
face's expression re-weighted by how well each class's circumplex arousal fits the fused
arousal (a broad Gaussian, sigma 0.7): it only breaks near-ties, so a calm body moves an
ambiguous surprised/happy face towards happy but never overrules a clear smile (body
arousal is relative to the wearer's baseline, the circumplex's to a population's). With
no face there is no discrete emotion (null) rather than a guess.
Confidence is the noisy-or of the modalities' confidences (`1 - prod(1 - c)`), scaled by
`0.5 + 0.5 x agreement` when face and body both give arousal (agreement
`1 - |a_face - a_body| / 2`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.affect.circumplex import AROUSAL, mean_expression, valence_arousal
from agent.events import EXPRESSIONS

AROUSAL_WEIGHTS: dict[str, float] = {
    "hr_bpm": 0.20,
    "rmssd_ms": 0.20,
    "scl_us": 0.30,
    "scr_per_min": 0.30,
}
STRESS_WEIGHTS: dict[str, float] = {
    "hr_bpm": 0.30,
    "rmssd_ms": 0.40,
    "scl_us": 0.10,
    "scr_per_min": 0.20,
}
EMOTION_SIGMA = 0.7  # arousal units: how far the fused arousal may sit from a class's
FACE_STRESS_WEIGHT = 0.5  # the face's say in stress, relative to physiology's


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class FaceEstimate:
    expression: np.ndarray  # (7,) quality-weighted mean probabilities
    valence: float
    arousal: float
    confidence: float


@dataclass(frozen=True)
class PhysioEstimate:
    arousal: float
    stress: float
    confidence: float
    signals: tuple[str, ...]


@dataclass(frozen=True)
class Fused:
    valence: float | None
    arousal: float | None
    stress: float | None
    emotion: str | None
    emotions: dict[str, float] | None  # the re-weighted distribution the emotion comes from
    confidence: float
    agreement: float | None


def face_estimate(
    probabilities: Sequence[Sequence[float]],
    quality: Sequence[float],
    frames: int,
    face_frames: int,
) -> FaceEstimate | None:
    """The face modality over one window, or None when no usable face was seen."""
    expression = mean_expression(probabilities, quality)
    if expression is None:
        return None
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1, len(EXPRESSIONS))
    w = np.asarray(quality, dtype=np.float64)
    peak = float((p.max(axis=1) * w).sum() / w.sum())
    coverage = min(1.0, face_frames / frames) if frames > 0 else 1.0
    confidence = float(np.clip(w.mean() * peak * (0.5 + 0.5 * coverage), 0.0, 1.0))
    valence, arousal = valence_arousal(expression)
    return FaceEstimate(expression, valence, arousal, confidence)


def _weighted(z: Mapping[str, float], weights: Mapping[str, float]) -> tuple[float, float] | None:
    present = [(weights[k], v) for k, v in z.items() if k in weights and math.isfinite(v)]
    total = sum(w for w, _ in present)
    if total <= 0:
        return None
    return sum(w * v for w, v in present) / total, total


def physio_estimate(z: Mapping[str, float], quality: float = 1.0) -> PhysioEstimate | None:
    """Arousal and stress from signed baseline z-scores; None when no signal is available."""
    a = _weighted(z, AROUSAL_WEIGHTS)
    s = _weighted(z, STRESS_WEIGHTS)
    if a is None or s is None:
        return None
    zbar_a, coverage = a
    zbar_s, _ = s
    confidence = float(np.clip(coverage * quality, 0.0, 1.0))
    signals = tuple(k for k in AROUSAL_WEIGHTS if k in z)
    return PhysioEstimate(
        math.tanh(zbar_a / 2.0), _logistic(1.5 * zbar_s - 1.0), confidence, signals
    )


def face_stress(valence: float, arousal: float) -> float:
    """Negative activation read from a face: high for angry/fearful, low for happy/calm."""
    return _logistic(3.0 * (arousal - valence) - 1.5)


def fuse(face: FaceEstimate | None, body: PhysioEstimate | None) -> Fused | None:
    """Combine whatever modalities are present; None when none is."""
    if face is None and body is None:
        return None
    arousal_parts = [(e.arousal, e.confidence) for e in (face, body) if e is not None]
    weight = sum(c for _, c in arousal_parts)
    if weight > 0:
        arousal = sum(a * c for a, c in arousal_parts) / weight
    else:
        arousal = float(np.mean([a for a, _ in arousal_parts]))

    stress_parts = []
    if body is not None:
        stress_parts.append((body.stress, body.confidence))
    if face is not None:
        stress_parts.append(
            (face_stress(face.valence, face.arousal), FACE_STRESS_WEIGHT * face.confidence)
        )
    sw = sum(c for _, c in stress_parts)
    stress = (
        sum(s * c for s, c in stress_parts) / sw
        if sw > 0
        else float(np.mean([s for s, _ in stress_parts]))
    )

    agreement = None
    if face is not None and body is not None:
        agreement = 1.0 - abs(face.arousal - body.arousal) / 2.0
    confidence = 1.0 - math.prod(1.0 - e.confidence for e in (face, body) if e is not None)
    if agreement is not None:
        confidence *= 0.5 + 0.5 * agreement

    emotion = emotions = None
    valence = None
    if face is not None:
        valence = face.valence
        fit = np.exp(-((AROUSAL - arousal) ** 2) / (2 * EMOTION_SIGMA**2))
        posterior = face.expression * fit
        posterior = posterior / posterior.sum() if posterior.sum() > 0 else face.expression
        emotion = EXPRESSIONS[int(np.argmax(posterior))]
        emotions = {name: float(p) for name, p in zip(EXPRESSIONS, posterior, strict=True)}
    return Fused(
        valence,
        float(arousal),
        float(stress),
        emotion,
        emotions,
        float(np.clip(confidence, 0.0, 1.0)),
        agreement,
    )
