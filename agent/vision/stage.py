"""The face stage: frames in, per-face expression probabilities out, off the event loop.

It sits between the camera (live or replayed) and the window aggregator. Each frame is
analysed on one worker thread that owns its own interpreters (TFLite's `invoke()` releases
the GIL, so the loop keeps running). While a frame is in analysis the stage is busy and
newer frames are dropped and counted: latest frame wins, nothing queues. What leaves the
stage is a `FaceObservation`: probabilities and a quality per face, never pixels, boxes
or positions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agent.events import Event, EvidenceSink, FaceObservation, FrameEvent
from agent.vision.expressions import DEFAULT_EXPRESSION_MODEL
from agent.vision.faces import DEFAULT_DETECTOR_MODEL
from agent.vision.interpreter import models_dir

if TYPE_CHECKING:
    from agent.config import ModelsConfig

log = logging.getLogger("agent.faces")


@dataclass
class FaceStageStats:
    frames: int = 0
    analysed: int = 0
    dropped: int = 0
    faces: int = 0
    errors: int = 0
    inference_ms: float | None = None  # exponential moving average per analysed frame
    last_error: str | None = None
    runtime: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


class FacePipeline:
    """Detector + aligner + classifier for one thread (interpreters are not thread-safe)."""

    def __init__(
        self,
        detector: Path,
        classifier: Path,
        runtime: str,
        num_threads: int,
        min_face_px: float,
        flip_average: bool | None = None,
    ) -> None:
        from agent.vision.expressions import ExpressionClassifier
        from agent.vision.faces import FaceDetector
        from agent.vision.interpreter import load_model

        det_model = load_model(detector, runtime=runtime, num_threads=num_threads)
        self.runtime = det_model.runtime
        self.detector = FaceDetector(det_model, min_face_px=min_face_px)
        self.classifier = ExpressionClassifier(
            load_model(classifier, runtime=runtime, num_threads=num_threads),
            flip_average=flip_average,
        )

    def analyse(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from agent.vision.align import align_faces

        faces = self.detector.detect(image)
        if not faces:
            return np.zeros((0, 7), np.float32), np.zeros(0, np.float32)
        aligned = align_faces(image, faces, self.classifier.size)
        probs = self.classifier.predict([a.crop for a in aligned])
        quality = np.array([a.quality.overall for a in aligned], np.float32)
        return probs, quality


class FaceStage:
    """An `EvidenceSink` for frames that forwards everything else unchanged."""

    def __init__(
        self,
        sink: EvidenceSink,
        detector: Path,
        classifier: Path,
        *,
        runtime: str = "auto",
        num_threads: int = 1,
        min_face_px: float = 24.0,
        flip_average: bool | None = None,
    ) -> None:
        self.sink = sink
        self.stats = FaceStageStats()
        self.model_names = (Path(detector).name, Path(classifier).name)
        # One worker thread owns the interpreters: built there once, now, so a bad model
        # fails at start-up (before READY), and only ever used there.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faces")
        self._pipe = self._executor.submit(
            FacePipeline,
            Path(detector),
            Path(classifier),
            runtime,
            num_threads,
            min_face_px,
            flip_average,
        ).result()
        self.stats.runtime = self._pipe.runtime
        self._busy = False
        self._tasks: set[asyncio.Task[None]] = set()

    def idle(self) -> bool:
        """False while a frame is being analysed: the camera then drops instead of queueing."""
        return not self._busy

    def put(self, event: Event) -> None:
        if not isinstance(event, FrameEvent):
            self.sink.put(event)
            return
        self.stats.frames += 1
        if self._busy:
            self.stats.dropped += 1
            return
        self._busy = True
        task = asyncio.get_running_loop().create_task(self._analyse(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _analyse(self, frame: FrameEvent) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            probs, quality = await loop.run_in_executor(
                self._executor, self._pipe.analyse, frame.image
            )
        except Exception as exc:  # a bad frame must not stop the stage
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("face analysis failed: %s", self.stats.last_error)
            return
        finally:
            self._busy = False
        ms = (time.perf_counter() - started) * 1000
        ema = self.stats.inference_ms
        self.stats.inference_ms = ms if ema is None else 0.9 * ema + 0.1 * ms
        self.stats.analysed += 1
        self.stats.faces += len(quality)
        self.sink.put(
            FaceObservation(
                frame.t,
                tuple(tuple(float(p) for p in row) for row in probs),
                tuple(float(q) for q in quality),
            )
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)


def face_detector_path(m: ModelsConfig) -> Path:
    """The configured detector, else the shipped short-range BlazeFace."""
    return Path(m.face_detector or models_dir() / DEFAULT_DETECTOR_MODEL)


def expression_model_path(m: ModelsConfig) -> Path:
    """The configured expression model, else the shipped default."""
    return Path(m.expression or models_dir() / DEFAULT_EXPRESSION_MODEL)
