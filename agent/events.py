"""The evidence that sources hand to the pipeline.

Live sources (BLE heart-rate strap, EDA sensor, picamera2) and session replay emit the
same event types through the same `EvidenceSink`, so everything downstream is exercised
identically by a recording and by hardware. These objects carry raw data and never cross
into the publishing side: only `affect` turns them into aggregated states.

Timestamps are UNIX seconds (float) on the agent's clock: arrival time for a BLE
notification, sensor time mapped to the wall clock for a camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class HeartEvent:
    """One Heart Rate Measurement notification (0x2A37), decoded."""

    t: float
    hr_bpm: int
    rr_ms: tuple[float, ...] = ()
    contact: bool | None = None  # None: the strap does not report contact
    energy_kj: int | None = None
    source: str = "heart"


@dataclass(frozen=True, slots=True)
class EdaEvent:
    """Skin-conductance samples in microsiemens; `t` is the time of the first sample."""

    t: float
    microsiemens: tuple[float, ...]
    rate_hz: float
    source: str = "eda"


@dataclass(frozen=True, slots=True, eq=False)
class FrameEvent:
    """One camera frame: grayscale (H, W) or RGB (H, W, 3) uint8."""

    t: float
    image: np.ndarray = field(repr=False)
    source: str = "camera"


EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The seven expression classes, in FER2013 label order (the order of every probability)."""


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """What the face stage saw in one frame: per face, the seven expression probabilities
    (FER2013 order: angry, disgust, fear, happy, sad, surprise, neutral) and a quality in
    [0, 1]. No pixels, boxes or positions: nothing that could identify or locate anyone."""

    t: float
    probabilities: tuple[tuple[float, ...], ...]
    quality: tuple[float, ...]
    source: str = "faces"


Event = HeartEvent | EdaEvent | FrameEvent | FaceObservation


class EvidenceSink(Protocol):
    """Where sources put what they observe. Must be called on the event loop thread."""

    def put(self, event: Event) -> None: ...
