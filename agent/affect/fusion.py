"""Fusion: per-modality estimates in, one emotional state out. Pure functions, no I/O.

**Face** (`face_estimate`). Each face's seven expression probabilities are placed on the
valence-arousal circumplex (`agent.affect.circumplex`, Russell & Mehrabian 1977); a window's
expression is the quality-weighted mean over its faces. Face confidence is
`mean quality x mean peak probability x (0.5 + 0.5 x coverage)`, coverage being the share
of analysed frames that held a face: blurry, small, ambiguous or intermittent faces count
for less.

**Physiology** (`physio_estimate`). Each signal is normalised against the wearer's personal
baseline (`agent.affect.baseline`), signed so that positive means more activation: a
z-score (heart rate up, RMSSD down, skin-conductance responses more frequent) or, for the
skin-conductance level, the log ratio to its baseline mean (`scl_us_log`). Stress is a
logistic regression on them, `logistic(b + sum w_k x_k)`, whose signals and weights were
chosen and fitted by leave-one-subject-out cross-validation on the 17 wrist recordings of
Stress-Predict (Iqbal et al. 2022: Empatica E4, rest baseline against a Stroop test and a
job interview; `python -m agent.bench.stress_fit`), not taken from reviews; a weight
against a signal's known direction (Kreibig 2010) disqualifies a candidate. They ship in
agent/affect/stress_model.json with how they were fitted and their held-out figures. The
first model whose signals a window has is used: "skin" (the level's log ratio: stress 0.5
at about 1.7 times the baseline level), else "heart" (the heart-rate z-score), for a strap
without an EDA sensor. Held out, the skin model ranks a person's stress windows above
their rest windows with a median per-subject AUROC of 0.99 (balanced accuracy 0.70 at 0.5,
pooled over people), heart rate alone 0.65 (0.57); the review-based weights used before
scored 0.54 (0.58) on the same windows. Wrist-PPG RMSSD went against its direction and
heart rate added nothing to skin conductance out of sample, so neither is in the skin
model. Limits: a level still high after a stressor reads as stress (with the rest after
each task counted as rest too: median AUROC 0.69), and these are 17 young adults, one
protocol, one device. `physio arousal = tanh(sum w_k x_k / 2)`, the same evidence
without the intercept (0 at baseline). Physiology confidence = the model's held-out
discrimination (2 AUROC - 1: 0.98 skin, 0.30 heart) x, for the heart model, signal
quality (1 minus twice the share of corrected beats).

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

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.affect.circumplex import AROUSAL, mean_expression, valence_arousal
from agent.events import EXPRESSIONS

STRESS_MODEL_FILE = Path(__file__).with_name("stress_model.json")
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


# Which sensor each baseline-normalised signal comes from (its name up to the first "_").
SIGNAL_SOURCES: dict[str, str] = {"hr": "heart", "rmssd": "heart", "scl": "eda", "scr": "eda"}


def signal_source(signal: str) -> str:
    """The sensor ("heart" or "eda") a fusion signal (`hr_bpm`, `scl_us_log`...) comes from."""
    return SIGNAL_SOURCES[signal.split("_", 1)[0]]


@dataclass(frozen=True)
class StressModel:
    """One fitted logistic model of stress from baseline-normalised signals."""

    name: str
    intercept: float
    weights: Mapping[str, float]
    confidence: float  # held-out discrimination, 2 AUROC - 1
    heart: bool  # uses heart signals, so the share of corrected beats lowers its quality


def load_stress_models(path: Path = STRESS_MODEL_FILE) -> tuple[StressModel, ...]:
    """The models of a stress_model.json, in the order they are tried."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != "emotion-agent-stress-model" or data.get("version") != 1:
        raise ValueError(f"{path}: not an emotion-agent-stress-model v1 file")
    return tuple(
        StressModel(
            m["name"],
            float(m["intercept"]),
            {k: float(w) for k, w in m["weights"].items()},
            float(m["confidence"]),
            any(signal_source(k) == "heart" for k in m["weights"]),
        )
        for m in data["models"]
    )


STRESS_MODELS = load_stress_models()


def physio_estimate(
    z: Mapping[str, float],
    heart_quality: float = 1.0,
    models: Sequence[StressModel] = STRESS_MODELS,
) -> PhysioEstimate | None:
    """Arousal and stress from the first model whose signals `z` has; None when none."""
    for m in models:
        if all(k in z and math.isfinite(z[k]) for k in m.weights):
            linear = sum(w * z[k] for k, w in m.weights.items())
            quality = heart_quality if m.heart else 1.0
            return PhysioEstimate(
                math.tanh(linear / 2.0),
                _logistic(m.intercept + linear),
                float(np.clip(m.confidence * quality, 0.0, 1.0)),
                tuple(m.weights),
            )
    return None


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
