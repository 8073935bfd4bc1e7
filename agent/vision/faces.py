"""Face detection with BlazeFace (MediaPipe's short-range and full-range TFLite models).

The model outputs raw SSD regressions for a fixed grid of anchors; everything that turns
them into faces lives here, re-derived from MediaPipe's graph options so that a face found
here is the face MediaPipe would find:

- anchors: MediaPipe's SSD anchor scheme. Short range: 128x128 input, strides 8,16,16,16;
  layers that share a stride share a feature map, each layer adding its own scale plus an
  interpolated one, so 16x16x2 + 8x8x6 = 896 anchors. Full range: 192x192, one stride-4
  layer, 48x48x1 = 2304 anchors. Both use fixed (unit) anchor sizes.
- decoding: offsets are in input pixels, so they are divided by the input size and added
  to the anchor centre; 16 values = box (cx, cy, w, h) + 6 keypoints (x, y).
- scores: logits clipped to +-100 before the sigmoid (an int overflow guard in MediaPipe,
  kept so that extreme logits behave identically), then thresholded.
- weighted NMS: MediaPipe's blending. Overlapping detections are not discarded but averaged,
  weighted by score, which steadies boxes and keypoints from frame to frame.
- letterbox: the frame is scaled to fit the square input keeping its aspect, centred, and
  the padding removed again when coordinates are mapped back to frame pixels. A Pi lores
  stream of 128x96 goes in at scale 1 with no resampling at all.

Input dtype and quantization come from the model's tensor details (interpreter.py), never
assumed. A `FaceDetector` owns one `Model` and is not thread-safe: build one per worker
thread. Nothing is kept between calls: no frames, no crops, no identities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.vision.interpreter import Model, dequantize, load_model, models_dir, quantize

KEYPOINT_NAMES: tuple[str, ...] = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth",
    "right_ear",
    "left_ear",
)
"""Keypoint order of BlazeFace, named from the subject's point of view: in an unmirrored
camera image the subject's right eye is on the image's left."""

RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)
SCORE_CLIP = 100.0
DEFAULT_DETECTOR_MODEL = "face_detection_short_range.tflite"


@dataclass(frozen=True)
class DetectorSpec:
    """The MediaPipe graph options that go with one BlazeFace model file."""

    name: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_score: float
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: float = 0.5

    @property
    def num_anchors(self) -> int:
        return len(ssd_anchors(self))


SHORT_RANGE = DetectorSpec("short_range", 128, (8, 16, 16, 16), 1.0, 0.5)
FULL_RANGE = DetectorSpec("full_range", 192, (4,), 0.0, 0.6)
SPECS: tuple[DetectorSpec, ...] = (SHORT_RANGE, FULL_RANGE)


def ssd_anchors(spec: DetectorSpec) -> np.ndarray:
    """Anchor centres (N, 2) in normalized input coordinates, in the model's output order.

    Consecutive layers with the same stride are one feature map; each contributes one
    anchor at its own scale (aspect ratio 1) and, when `interpolated_scale_aspect_ratio`
    is set, one more at the geometric mean of its scale and the next. With fixed anchor
    sizes only the count per cell matters, not the scales themselves.
    """
    centres: list[np.ndarray] = []
    strides = spec.strides
    layer = 0
    while layer < len(strides):
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 2 if spec.interpolated_scale_aspect_ratio > 0 else 1
            last += 1
        cells = math.ceil(spec.input_size / strides[layer])
        grid = (np.arange(cells, dtype=np.float32) + spec.anchor_offset) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")  # row-major: y outer, x inner
        cell_xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell_xy, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


def spec_for_model(model: Model) -> DetectorSpec:
    """Pick the spec whose input size and anchor count match the model's tensors."""
    d = model.input
    if len(d.shape) != 4 or d.shape[1] != d.shape[2] or d.shape[3] != 3:
        raise ValueError(f"{model.path.name}: expected a [1, S, S, 3] input, got {list(d.shape)}")
    anchors = {o.shape[1] for o in model.outputs if len(o.shape) == 3}
    for spec in SPECS:
        if spec.input_size == d.shape[1] and spec.num_anchors in anchors:
            return spec
    raise ValueError(
        f"{model.path.name}: input {d.shape[1]}x{d.shape[2]} with {sorted(anchors)} anchors is "
        "neither BlazeFace short range (128, 896) nor full range (192, 2304)"
    )


@dataclass(frozen=True, slots=True, eq=False)
class Face:
    """One detected face in frame pixels: box (x0, y0, x1, y1), score, 6 keypoints (x, y).

    The box is not clipped to the frame: a face at the edge keeps its true extent.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: tuple[tuple[float, float], ...]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def keypoint(self, name: str) -> tuple[float, float]:
        return self.keypoints[KEYPOINT_NAMES.index(name)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "keypoints": {
                n: [round(x, 1), round(y, 1)]
                for n, (x, y) in zip(KEYPOINT_NAMES, self.keypoints, strict=True)
            },
        }


@dataclass(frozen=True)
class Letterbox:
    """The map between frame pixels and the model's square input (continuous coordinates).

    input = frame * scale + pad, where pixel centres sit at i + 0.5 on both sides.
    """

    size: int
    scale: float
    pad_x: float
    pad_y: float
    frame_w: int
    frame_h: int

    @classmethod
    def fit(cls, frame_w: int, frame_h: int, size: int) -> Letterbox:
        scale = min(size / frame_w, size / frame_h)
        return cls(
            size,
            scale,
            (size - frame_w * scale) / 2,
            (size - frame_h * scale) / 2,
            frame_w,
            frame_h,
        )

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Frame pixel coordinates (..., 2) -> input pixel coordinates."""
        return np.asarray(xy, np.float64) * self.scale + (self.pad_x, self.pad_y)

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Input pixel coordinates (..., 2) -> frame pixel coordinates."""
        return (np.asarray(xy, np.float64) - (self.pad_x, self.pad_y)) / self.scale


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) gray, (H, W, 1) or (H, W, 3) uint8 -> (H, W, 3). Gray is replicated: the model
    was trained on colour, but detects faces in grey well enough to spare Pi 4 a colour stream."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected a gray (H, W) or RGB (H, W, 3) image, got shape {image.shape}")


def _axis_taps(n_out: int, n_in: int, n_frame: int, scale: float, pad: float, step: int):
    """Bilinear taps along one axis for input = frame * scale + pad, reading a source whose
    pixel i covers frame pixels [i*step, (i+1)*step); plus which outputs lie inside the
    frame's footprint (the rest are letterbox padding)."""
    centres = np.arange(n_out, dtype=np.float64) + 0.5
    inside = (centres >= pad) & (centres < pad + n_frame * scale)
    src = np.clip((centres - pad) / (scale * step) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32), inside


def _block_mean(image: np.ndarray, step: int) -> np.ndarray:
    """Mean of step x step blocks (the remainder rows/columns are dropped). Strided adds:
    about 10x faster than a reshape-mean over two axes."""
    hb, wb = image.shape[0] // step, image.shape[1] // step
    f = image[: hb * step, : wb * step].astype(np.float32)
    rows = sum(f[i::step] for i in range(1, step)) + f[0::step]
    cols = sum(rows[:, j::step] for j in range(1, step)) + rows[:, 0::step]
    return cols * np.float32(1.0 / (step * step))


def letterbox(image: np.ndarray, size: int, fill: float = 0.0) -> tuple[np.ndarray, Letterbox]:
    """Fit a frame into a size x size float32 image (0-255 scale) keeping its aspect ratio.

    A large frame is first averaged over step x step blocks (an area filter: bilinear alone
    aliases when it skips pixels). A block's centre is exactly step times its index in
    frame coordinates, so bilinear sampling still lands exactly on the `Letterbox` map.
    """
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    box = Letterbox.fit(w, h, size)
    if box.scale == 1.0 and box.pad_x.is_integer() and box.pad_y.is_integer():
        out = np.full((size, size, 3), fill, np.float32)  # a Pi lores frame: a plain paste
        out[int(box.pad_y) : int(box.pad_y) + h, int(box.pad_x) : int(box.pad_x) + w] = rgb
        return out, box
    step = max(1, int(1.0 / box.scale + 1e-9))
    src = _block_mean(rgb, step) if step > 1 else rgb.astype(np.float32)
    y0, y1, wy, in_y = _axis_taps(size, src.shape[0], h, box.scale, box.pad_y, step)
    x0, x1, wx, in_x = _axis_taps(size, src.shape[1], w, box.scale, box.pad_x, step)
    rows = src[y0] * (1 - wy)[:, None, None] + src[y1] * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    out[~in_y] = fill
    out[:, ~in_x] = fill
    return out, box


def sigmoid_scores(raw: np.ndarray, clip: float = SCORE_CLIP) -> np.ndarray:
    """Logits -> probabilities, clipped first as MediaPipe does."""
    z = np.clip(np.asarray(raw, np.float64), -clip, clip)  # float64: exp(100) overflows float32
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def decode(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Regressions (N, 16) -> boxes (N, 4) as x0,y0,x1,y1 and keypoints (N, 6, 2), normalized."""
    raw = raw.astype(np.float32) / np.float32(input_size)
    centre = raw[:, 0:2] + anchors
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    return boxes, keypoints


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (4,) with each of `boxes` (N, 4)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    Take the best remaining detection and every remaining one overlapping it by more than
    `iou_threshold` (itself included); emit the score-weighted average of their boxes and
    keypoints with the best one's score; repeat with the rest. Averaging many anchors'
    votes gives steadier geometry than keeping the single best anchor.
    """
    order = np.argsort(-scores, kind="stable")
    out_b, out_s, out_k = [], [], []
    while order.size:
        overlap = iou(boxes[order[0]], boxes[order]) > iou_threshold
        overlap[0] = True  # a degenerate (zero-area) best box still absorbs itself
        group = order[overlap]
        weights = scores[group].astype(np.float64)
        total = weights.sum()
        out_b.append((boxes[group] * weights[:, None]).sum(axis=0) / total)
        out_k.append((keypoints[group] * weights[:, None, None]).sum(axis=0) / total)
        out_s.append(scores[order[0]])
        order = order[~overlap]
    if not out_s:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2))
    return np.array(out_b), np.array(out_s), np.array(out_k)


class FaceDetector:
    """BlazeFace on any frame: `detect(image) -> list[Face]`, best score first.

    `min_face_px` drops faces narrower than that in frame pixels (too small for the
    expression model to read anything); `max_faces` keeps the best ones.
    """

    def __init__(
        self,
        model: Model,
        *,
        min_score: float | None = None,
        iou_threshold: float = 0.3,
        min_face_px: float = 0.0,
        max_faces: int | None = None,
    ) -> None:
        self.model = model
        self.spec = spec_for_model(model)
        self.anchors = ssd_anchors(self.spec)
        self.min_score = self.spec.min_score if min_score is None else min_score
        self.iou_threshold = iou_threshold
        self.min_face_px = min_face_px
        self.max_faces = max_faces
        by_last_dim = {o.shape[-1]: o for o in model.outputs}
        if 16 not in by_last_dim or 1 not in by_last_dim:
            shapes = [list(o.shape) for o in model.outputs]
            raise ValueError(
                f"{model.path.name}: expected [1,N,16] and [1,N,1] outputs, got {shapes}"
            )
        self._regressors_at = model.outputs.index(by_last_dim[16])
        self._scores_at = model.outputs.index(by_last_dim[1])

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Frame -> the model's input tensor (in its dtype and quantization) and the map back.

        Pixels go to [-1, 1] as MediaPipe feeds the model; padding is black (-1). An integer
        input tensor gets those values quantized with its own scale and zero point, or raw
        0-255 pixels when it carries no quantization.
        """
        pixels, box = letterbox(image, self.input_size)
        d = self.model.input
        if d.dtype.kind in "iu" and not d.quantized:
            return quantize(pixels[None], d), box
        return quantize(pixels[None] / np.float32(127.5) - np.float32(1.0), d), box

    def detect(self, image: np.ndarray) -> list[Face]:
        tensor, box = self.prepare(image)
        outputs = self.model.run(tensor)
        raw_boxes = dequantize(
            outputs[self._regressors_at], self.model.outputs[self._regressors_at]
        )
        raw_scores = dequantize(outputs[self._scores_at], self.model.outputs[self._scores_at])
        return self.postprocess(raw_boxes.reshape(-1, 16), raw_scores.reshape(-1), box)

    __call__ = detect

    def postprocess(
        self, raw_boxes: np.ndarray, raw_scores: np.ndarray, box: Letterbox
    ) -> list[Face]:
        """Raw model outputs -> faces in frame pixels (threshold, decode, NMS, unletterbox)."""
        scores = sigmoid_scores(raw_scores)
        keep = np.flatnonzero(scores >= self.min_score)
        if keep.size == 0:
            return []
        boxes, keypoints = decode(raw_boxes[keep], self.anchors[keep], self.input_size)
        boxes, merged_scores, keypoints = weighted_nms(
            boxes, scores[keep], keypoints, self.iou_threshold
        )
        size = self.input_size
        corners = box.to_frame(boxes.reshape(-1, 2, 2) * size).reshape(-1, 4)
        points = box.to_frame(keypoints * size)
        faces = [
            Face(
                box=(float(c[0]), float(c[1]), float(c[2]), float(c[3])),
                score=float(s),
                keypoints=tuple((float(x), float(y)) for x, y in p),
            )
            for c, s, p in zip(corners, merged_scores, points, strict=True)
            if c[2] - c[0] >= self.min_face_px
        ]
        return faces[: self.max_faces] if self.max_faces is not None else faces


def load_detector(
    path: Path | str | None = None,
    *,
    runtime: str = "auto",
    num_threads: int = 1,
    **detector_kwargs: Any,
) -> FaceDetector:
    """Load a BlazeFace model (default: models/face_detection_short_range.tflite)."""
    model = load_model(
        path or models_dir() / DEFAULT_DETECTOR_MODEL, runtime=runtime, num_threads=num_threads
    )
    return FaceDetector(model, **detector_kwargs)
