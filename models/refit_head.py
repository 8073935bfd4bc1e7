"""Refit the last layer of an int8 expression model on its own frozen features, in place.

A build-time step (`python models/build_models.py smiles --fer2013 PATH`), needing
ai-edge-litert (`pip install -e ".[litert]"`: it reads the features), numpy and scipy, and
no TensorFlow. Why: the features of the trained vgg48
already tell subtle smiles apart, but FER2013's labels call most of them neutral or
something else, so the last layer learned to as well (agent/bench/ferplus.py,
`crowd_smile_labels`). Refitting that one layer with the crowd's word on smiles costs
minutes, where retraining the network costs hours.

1. Features: every FER2013 Training face through the int8 file with the reference kernels
   (no XNNPACK delegate, so every run gives the same bytes), read at the input of the one
   FULLY_CONNECTED op (the global average pool, int8, dequantized).
2. Fit: multinomial logistic regression (L-BFGS from the shipped weights) with the
   training recipe's own targets, label smoothing and class weights
   (models/fer_data.py; the weights from the FER2013 label counts, as in
   training, each face weighted by the class it is now labelled), on
   `crowd_smile_labels`; L2 `LAMBDA`. Training faces only: PublicTest is never fitted on.
3. Requantize as TFLite does (per output channel: weight scale max|w| / 127, bias scale
   feature scale x weight scale) and write the new weights, bias and their scales over the
   old ones in a copy of the file. Every other byte is unchanged: same graph, same op set,
   same size, same output quantization. The output's int8 range was set for the old
   layer, so a refitted logit beyond it is clipped: how many faces that touches is
   recorded (`logits_clipped`), since a clipped top logit only lowers a confident face's
   probability, not its class, unless two clip together.

Deterministic on one machine: the same input file, data and package versions (recorded)
give the same output file there. The fit is float arithmetic (numpy, scipy's L-BFGS), so
another CPU may round differently: on an AVX-512 machine the step gave sha256 ccc3cb88...
where the shipped file (built on an AVX2 one) is 631825f3..., 21 bytes apart, with the same
top-1 class on every PublicTest face and probabilities within 0.011; on another, 03124391...,
401 bytes apart, 11 PublicTest faces of 3,589 changing class, probabilities within 0.015.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # int8_layers.py beside this file

from int8_layers import interpreter, per_channel, tensor_per_face  # noqa: E402

from agent.bench.ferplus import crowd_smile_labels  # noqa: E402
from agent.vision.expressions import EXPRESSIONS  # noqa: E402
from agent.vision.interpreter import dequantize  # noqa: E402

LAMBDA = 1e-4
"""L2 weight on the layer's weights (mean loss per face); fixed before any result."""
LABEL_SMOOTHING = 0.1  # as the recipe (vgg48.DEFAULTS)
FERPLUS_MIX = 0.3
CLASS_WEIGHT_POWER = 0.5


@dataclass
class Head:
    """The FULLY_CONNECTED layer of an int8 model: tensors, quantization, float weights."""

    feature: int  # tensor index of its input (the pooled features)
    weight: int
    bias: int
    feature_scale: float
    feature_zero: int
    weight_scales: np.ndarray  # (classes,)
    weight_q: np.ndarray  # (classes, features) int8
    bias_scales: np.ndarray  # (classes,) float32, as stored
    bias_q: np.ndarray  # (classes,) int32
    logit_range: tuple[float, float]  # what the layer's int8 output can hold

    @property
    def w(self) -> np.ndarray:
        return per_channel(self.weight_q, self.weight_scales)

    @property
    def b(self) -> np.ndarray:
        return per_channel(self.bias_q, self.bias_scales)


def find_head(it: Any) -> Head:
    fcs = [op for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    if len(fcs) != 1:
        raise ValueError(f"expected one FULLY_CONNECTED op, found {len(fcs)}")
    feature, weight, bias = (int(i) for i in fcs[0]["inputs"])
    details = {d["index"]: d for d in it.get_tensor_details()}
    oq = details[int(fcs[0]["outputs"][0])]["quantization_parameters"]
    o_scale, o_zero = float(oq["scales"][0]), int(oq["zero_points"][0])
    fq = details[feature]["quantization_parameters"]
    wq = details[weight]["quantization_parameters"]
    bq = details[bias]["quantization_parameters"]
    return Head(
        feature,
        weight,
        bias,
        float(fq["scales"][0]),
        int(fq["zero_points"][0]),
        np.asarray(wq["scales"], np.float64),
        it.get_tensor(weight).copy(),
        np.asarray(bq["scales"], np.float32),
        it.get_tensor(bias).copy(),
        ((-128 - o_zero) * o_scale, (127 - o_zero) * o_scale),
    )


def features(path: Path, faces: np.ndarray) -> np.ndarray:
    """(N, features) float: the pooled features of each uint8 face, as the int8 file has them."""
    it = interpreter(path)
    head = find_head(it)
    pooled = next(d for d in it.get_tensor_details() if d["index"] == head.feature)
    q = tensor_per_face(it, head.feature, faces)
    return dequantize(q, pooled).reshape(len(q), -1).astype(np.float32)


def training_targets(y: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, ...]:
    """The refit's labels (`crowd_smile_labels`), its targets (the recipe's blend with the
    crowd's votes, then label smoothing) and each face's class weight, all float64."""
    from fer_data import class_weights, ferplus_targets

    labels = crowd_smile_labels(y, votes)
    targets = ferplus_targets(votes, labels, FERPLUS_MIX)  # float32, as the refit shipped
    targets = targets * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / len(EXPRESSIONS)
    weights = class_weights(y, CLASS_WEIGHT_POWER)[labels]
    return labels, targets.astype(np.float64), weights.astype(np.float64)


def fit_head(
    feats: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    w0: np.ndarray,
    b0: np.ndarray,
    lam: float = LAMBDA,
    free_rows: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Weighted soft-target cross-entropy + lam * |W|^2, by L-BFGS from (w0, b0):
    weights, bias, and whether and in how many iterations it converged. `free_rows`: the
    output classes whose weights and bias are fitted (default all); the others stay."""
    from scipy.optimize import minimize

    n = len(feats)
    f = feats.astype(np.float64)
    rows = np.arange(len(w0)) if free_rows is None else np.asarray(free_rows)
    w_all, b_all = np.array(w0, np.float64), np.array(b0, np.float64)
    size = len(rows) * w0.shape[1]

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, b = w_all.copy(), b_all.copy()
        w[rows], b[rows] = theta[:size].reshape(len(rows), -1), theta[size:]
        return w, b

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = unpack(theta)
        z = f @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -(weights[:, None] * targets * logp).sum() / n + lam * (w**2).sum()
        g = (np.exp(logp) * targets.sum(axis=1, keepdims=True) - targets) * weights[:, None] / n
        gw, gb = g.T @ f + 2 * lam * w, g.sum(axis=0)
        return loss, np.concatenate([gw[rows].ravel(), gb[rows]])

    theta0 = np.concatenate([w_all[rows].ravel(), b_all[rows]])
    res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    fit = {"converged": bool(res.success), "iterations": int(res.nit)}
    w, b = unpack(res.x)
    return w, b, fit


def requantize_layer(head: Head, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """int8 weights, int32 bias and their new scales, per output channel as TFLite does:
    weight scale max|w| / 127, bias scale feature scale x weight scale."""
    scales = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
    wq = np.clip(np.rint(w / scales[:, None]), -127, 127).astype(np.int8)
    bias_scales = scales * head.feature_scale
    bq = np.rint(b / bias_scales).astype(np.int32)
    return wq, bq, scales.astype(np.float32), bias_scales.astype(np.float32)


def patch(model: bytes, old: np.ndarray, new: np.ndarray) -> bytes:
    """`model` with the one occurrence of `old`'s bytes replaced by `new`'s."""
    a, b = old.tobytes(), new.astype(old.dtype).tobytes()
    if len(a) != len(b):
        raise ValueError(f"new {old.dtype} buffer is {len(b)} bytes, the old one {len(a)}")
    if model.count(a) != 1:
        raise ValueError(f"the layer's {old.dtype} buffer occurs {model.count(a)} times")
    return model.replace(a, b)


def with_layer(model: bytes, head: Head, w: np.ndarray, b: np.ndarray) -> bytes:
    """`model` (the file `head` was read from) with float layer (w, b) requantized into it."""
    wq, bq, scales, bias_scales = requantize_layer(head, w, b)
    for old, new in (
        (head.weight_q, wq),
        (head.bias_q, bq),
        (head.weight_scales.astype(np.float32), scales),
        (head.bias_scales, bias_scales),
    ):
        model = patch(model, old, new)
    return model


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("ai-edge-litert", "numpy", "scipy")}


def refit(base: Path, out: Path, fer2013: Path) -> dict[str, Any]:
    """Write `base` with its last layer refitted to `out`; return what models.json records,
    and the float layer's PublicTest predictions (`float_public_pred`, on the int8 features)
    for the int8 agreement check."""
    with np.load(fer2013) as d:
        x, y, votes = d["x_train"], d["y_train"].astype(np.int64), d["ferplus_train"]
        x_public = d["x_public"]
    labels, targets, weights = training_targets(y, votes)
    original = base.read_bytes()
    head = find_head(interpreter(base))
    feats = features(base, x)
    w, b, fit = fit_head(feats, targets, weights, head.w, head.b)
    data = with_layer(original, head, w, b)
    public_logits = features(base, x_public) @ w.T + b  # read before `out` overwrites
    out.write_bytes(data)
    lo, hi = head.logit_range

    def clipped(logits: np.ndarray) -> float:
        return round(float(np.mean(((logits < lo) | (logits > hi)).any(axis=1))), 4)

    return {
        "float_public_pred": public_logits.argmax(axis=1),
        "base_sha256": hashlib.sha256(original).hexdigest(),
        "relabelled_happy": int(np.sum(labels != y)),
        "training_faces": len(y),
        "l2": LAMBDA,
        "label_smoothing": LABEL_SMOOTHING,
        "ferplus_mix": FERPLUS_MIX,
        "class_weight_power": CLASS_WEIGHT_POWER,
        "labels": "FER2013 labels; faces whose FER+ crowd plurality is happy labelled happy "
        "(agent/bench/ferplus.py crowd_smile_labels)",
        "fit": fit,
        "logits_clipped": {
            "output_range": [round(lo, 4), round(hi, 4)],
            "training_faces": clipped(feats @ w.T + b),
            "public_faces": clipped(public_logits),
        },
        "versions": _versions(),
        "train_accuracy_vs_new_labels": round(
            float(np.mean((feats @ w.T + b).argmax(axis=1) == labels)), 4
        ),
    }
