"""Face crops for the expression model, levelled by the eyes, and a quality score per face.

Why align: the expression model was trained on upright, roughly centred FER2013 faces; a
head tilted 20 degrees is a different picture to it. Rotating so the eye line is
horizontal removes roll, the one pose change we can undo from six keypoints.

Why a quality score: a small, blurred or turned face gives confident-looking but
meaningless expression probabilities. The score lets fusion weight or drop them:

- detector score: BlazeFace's own confidence;
- size: face box width in frame pixels (a face a few pixels wide carries no expression);
- pose: yaw proxy = the nose tip's offset from the eye midpoint along the eye line, in eye
  distances (0 frontal; about +-0.5 when the far eye starts to hide); roll = eye-line angle
  (undone by alignment, reported only); pitch proxy = nose drop / mouth drop below the
  eye line (about 0.6 for a level head);
- blur: variance of the Laplacian of the aligned crop, measured at the classifier's
  input size so faces of any size are compared on one scale.

Privacy: no identity, no embeddings. Crops are returned to the caller for one
classification and must not be stored; nothing here keeps a reference to any pixel.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.vision.faces import (
    LEFT_EYE,
    MOUTH,
    NOSE_TIP,
    RIGHT_EYE,
    Face,
    FaceDetector,
    load_detector,
)

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
"""BT.601 weights: what the camera's YUV420 Y plane holds, so gray from RGB (Pi 5) and the
Y plane (Pi 4) look alike to the classifier."""


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1) gray, or (H, W, 3) RGB -> (H, W) float32 on 0-255."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.astype(np.float32) @ LUMA
    raise ValueError(f"expected a gray (H, W) or RGB (H, W, 3) image, got shape {image.shape}")


@dataclass(frozen=True)
class QualityLimits:
    """Where each quality factor reaches 0 and 1; defaults suit a 64x64 classifier."""

    min_size_px: float = 24.0  # factor 0 at or below this face width
    good_size_px: float = 64.0  # factor 1 at or above: the classifier's own input size
    max_abs_yaw: float = 0.5  # factor 0 at this yaw proxy
    sharpness_half: float = 50.0  # Laplacian variance at which the blur factor is 0.5


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Per-face quality; `overall` in [0, 1] multiplies the factors (any bad one sinks it)."""

    detector_score: float
    size_px: float
    yaw: float
    roll_deg: float
    pitch_ratio: float
    sharpness: float
    overall: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(getattr(self, k), 3) for k in self.__slots__}


@dataclass(frozen=True, slots=True, eq=False)
class AlignedFace:
    """A face, its aligned gray crop (uint8, classifier size) and its quality."""

    face: Face
    crop: np.ndarray
    quality: FaceQuality


def eye_geometry(face: Face) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Eye midpoint, unit vector along the eye line (subject's right eye -> left eye, i.e.
    left to right in an unmirrored image), eye distance, and the eye line's angle (radians)."""
    right = np.asarray(face.keypoints[RIGHT_EYE], np.float64)
    left = np.asarray(face.keypoints[LEFT_EYE], np.float64)
    along = left - right
    dist = float(np.hypot(*along))
    if dist < 1e-6:
        return (right + left) / 2, np.array([1.0, 0.0]), 0.0, 0.0
    return (right + left) / 2, along / dist, dist, math.atan2(along[1], along[0])


def pose_proxies(face: Face) -> tuple[float, float, float]:
    """(yaw, roll in degrees, pitch ratio) from keypoints alone; see the module docstring."""
    mid, ex, dist, angle = eye_geometry(face)
    if dist == 0.0:
        return 0.0, 0.0, 0.0
    ey = np.array([-ex[1], ex[0]])  # perpendicular pointing down the face
    nose = np.asarray(face.keypoints[NOSE_TIP]) - mid
    mouth = np.asarray(face.keypoints[MOUTH]) - mid
    yaw = float(nose @ ex) / dist
    mouth_drop = float(mouth @ ey)
    pitch = float(nose @ ey) / mouth_drop if abs(mouth_drop) > 1e-6 else 0.0
    return yaw, math.degrees(angle), pitch


def sample_affine(
    gray: np.ndarray, centre: np.ndarray, axes: np.ndarray, size: tuple[int, int], step: float
) -> np.ndarray:
    """Bilinear samples of `gray` on a rotated grid: output pixel (r, c) reads the frame at
    centre + ((c + 0.5 - w/2) * axes[0] + (r + 0.5 - h/2) * axes[1]) * step.

    Outside the frame reads the nearest edge pixel, so a face cut by the border is padded
    with plausible skin instead of a black bar the classifier never saw in training.
    """
    h, w = size
    cols = (np.arange(w) + 0.5 - w / 2) * step
    rows = (np.arange(h) + 0.5 - h / 2) * step
    x = centre[0] + cols[None, :] * axes[0][0] + rows[:, None] * axes[1][0] - 0.5
    y = centre[1] + cols[None, :] * axes[0][1] + rows[:, None] * axes[1][1] - 0.5
    x = np.clip(x, 0, gray.shape[1] - 1)
    y = np.clip(y, 0, gray.shape[0] - 1)
    if step > 1.5:  # shrinking: average step x step neighbourhoods first to avoid aliasing
        k = int(step)
        left, top = max(0, int(x.min()) - k), max(0, int(y.min()) - k)
        gray = _box_blur(gray[top : int(y.max()) + k + 2, left : int(x.max()) + k + 2], k)
        x, y = x - left, y - top
    x0 = np.minimum(np.floor(x).astype(np.intp), max(gray.shape[1] - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.intp), max(gray.shape[0] - 2, 0))
    x1 = np.minimum(x0 + 1, gray.shape[1] - 1)
    y1 = np.minimum(y0 + 1, gray.shape[0] - 1)
    fx = (x - x0).astype(np.float32)
    fy = (y - y0).astype(np.float32)
    top = gray[y0, x0] * (1 - fx) + gray[y0, x1] * fx
    bottom = gray[y1, x0] * (1 - fx) + gray[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _box_blur(gray: np.ndarray, k: int) -> np.ndarray:
    """k x k mean with edge replication, centred (an even k is shifted by half a pixel,
    which is well below the keypoints' own error)."""
    pad = np.pad(gray, ((k // 2, k - 1 - k // 2), (k // 2, k - 1 - k // 2)), mode="edge")
    c = np.cumsum(np.cumsum(pad, axis=0, dtype=np.float64), axis=1)
    c = np.pad(c, ((1, 0), (1, 0)))
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (s / (k * k)).astype(np.float32)


CROP_MARGIN = 0.2
"""The crop's side is the box's larger side plus this share of it."""
CROP_RAISE = 0.0
"""How far the crop's centre sits above the box centre, up the face, as a share of its side.

Zero, measured: centred on BlazeFace's box, the crop puts the eyes higher (0.316 of the side
from the top, 0.356 of it apart) than FER2013's own crops do (0.385, 0.367). Moving the
window up to match (margin 0.17, raise 0.07, fitted on FER2013 Training) read PublicTest
through this path no better with the vgg48 of the time (68.69 % against 68.60 %) and read
fewer subtle smiles as happy (38.1 % against 42.0 %), so it was not adopted: the models
learned with shifted and scaled crops and do not need it. Reproduce: `python -m
agent.bench.framing --npz ../shared/data/fer2013/fer2013_train_public.npz --framing 0.2,0
--framing 0.17,0.07`.
"""


def crop_frame(
    face: Face, margin: float = CROP_MARGIN, raise_: float = CROP_RAISE
) -> tuple[np.ndarray, np.ndarray, float]:
    """Where a face's crop lies in the frame: centre (x, y), axes (rows: along the eye line,
    down the face; unit vectors) and side, in frame pixels."""
    _, ex, _, _ = eye_geometry(face)
    axes = np.array([ex, [-ex[1], ex[0]]])
    side = max(face.width, face.height) * (1.0 + margin)
    centre = np.asarray(face.center, np.float64) - raise_ * side * axes[1]
    return centre, axes, side


def align_face(
    image: np.ndarray,
    face: Face,
    size: tuple[int, int] = (64, 64),
    margin: float = CROP_MARGIN,
    raise_: float = CROP_RAISE,
    *,
    gray: np.ndarray | None = None,
) -> np.ndarray:
    """The face as an upright gray uint8 crop of `size` (h, w), framed as `crop_frame` says.

    Rotation levels the eyes; the crop is loosely framed like the FER2013 faces. `gray` lets
    a caller convert a frame once for several faces.
    """
    g = to_gray(image) if gray is None else gray
    centre, axes, side = crop_frame(face, margin, raise_)
    crop = sample_affine(g, centre, axes, size, side / max(size))
    return np.clip(np.rint(crop), 0, 255).astype(np.uint8)


def laplacian_variance(crop: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the crop's interior (a standard focus
    measure: edges and texture give a wide spread, blur flattens it)."""
    f = crop.astype(np.float32)
    if f.shape[0] < 3 or f.shape[1] < 3:
        return 0.0
    lap = f[:-2, 1:-1] + f[2:, 1:-1] + f[1:-1, :-2] + f[1:-1, 2:] - 4 * f[1:-1, 1:-1]
    return float(lap.var())


DEFAULT_LIMITS = QualityLimits()


def face_quality(
    face: Face, crop: np.ndarray, limits: QualityLimits = DEFAULT_LIMITS
) -> FaceQuality:
    """Score one face from its detection, keypoints and aligned crop."""
    size = max(face.width, face.height)
    yaw, roll, pitch = pose_proxies(face)
    sharp = laplacian_variance(crop)
    span = max(limits.good_size_px - limits.min_size_px, 1e-6)
    size_factor = min(1.0, max(0.0, (size - limits.min_size_px) / span))
    pose_factor = max(0.0, 1.0 - abs(yaw) / limits.max_abs_yaw)
    blur_factor = sharp / (sharp + limits.sharpness_half)
    overall = face.score * size_factor * pose_factor * blur_factor
    return FaceQuality(
        detector_score=face.score,
        size_px=size,
        yaw=yaw,
        roll_deg=roll,
        pitch_ratio=pitch,
        sharpness=sharp,
        overall=float(overall),
    )


def align_faces(
    image: np.ndarray,
    faces: Sequence[Face],
    size: tuple[int, int] = (64, 64),
    margin: float = CROP_MARGIN,
    limits: QualityLimits = DEFAULT_LIMITS,
    raise_: float = CROP_RAISE,
) -> list[AlignedFace]:
    """Crop and score every face of one frame (the frame is converted to gray once)."""
    if not faces:
        return []
    gray = to_gray(image)
    out = []
    for face in faces:
        crop = align_face(image, face, size, margin, raise_, gray=gray)
        out.append(AlignedFace(face, crop, face_quality(face, crop, limits)))
    return out


def quality_summary(aligned: Sequence[AlignedFace]) -> list[dict[str, Any]]:
    """Quality numbers only (no pixels, no positions): safe to log."""
    return [a.quality.as_dict() for a in aligned]


def faces_json(
    paths: Iterable[Path | str],
    detector: FaceDetector | None = None,
    *,
    classifier_size: Sequence[int] = (64, 64),
    classifier: Any = None,
) -> list[dict[str, Any]]:
    """What `emotion-agent faces IMAGE...` prints: per image, its faces, their quality, and
    the detection time. Local diagnostics only: nothing here is ever published.

    Images are decoded by the session reader (PGM/PPM with numpy, PNG/JPEG with Pillow);
    an unreadable file raises its `SessionError`, which names the file.
    """
    from agent.sources.session import read_image  # only this diagnostic decodes files

    detector = detector or load_detector()
    results = []
    for path in paths:
        image = read_image(path)
        t0 = time.perf_counter()
        faces = detector.detect(image)
        ms = (time.perf_counter() - t0) * 1000.0
        size = tuple(classifier.size) if classifier is not None else tuple(classifier_size)
        aligned = align_faces(image, faces, size)
        entries = [a.face.as_dict() | {"quality": a.quality.as_dict()} for a in aligned]
        if classifier is not None and aligned:
            from agent.events import EXPRESSIONS

            for entry, probs in zip(
                entries, classifier.predict([a.crop for a in aligned]), strict=True
            ):
                entry["expression"] = {
                    k: round(float(p), 4) for k, p in zip(EXPRESSIONS, probs, strict=True)
                }
                entry["emotion"] = EXPRESSIONS[int(probs.argmax())]
        results.append(
            {
                "path": str(path),
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "detect_ms": round(ms, 2),
                "detector": f"{detector.spec.name} ({detector.model.runtime})",
                "faces": entries,
            }
        )
    return results
