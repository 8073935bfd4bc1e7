"""Read the layers of an int8 TFLite file as numbers: a build-time helper (ai-edge-litert).

Used by the `smiles` step (refit_head.py: the last layer and its input features) and by a
fine-tune's start (vgg48.py load_int8_weights: every layer, dequantized).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def interpreter(path: Path) -> Any:
    """An ai-edge-litert interpreter that keeps every tensor readable, with the reference
    kernels (no XNNPACK delegate), so every run gives the same bytes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        str(path),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    return it


def tensor_per_face(it: Any, index: int, faces: np.ndarray) -> np.ndarray:
    """(N, *shape) int8: tensor `index` of interpreter `it` for each uint8 face, one face per
    invoke, the face preprocessed and quantized as the agent does."""
    from agent.vision.expressions import preprocess
    from agent.vision.interpreter import quantize

    inp = it.get_input_details()[0]
    shape = next(d["shape"] for d in it.get_tensor_details() if d["index"] == index)
    x = preprocess(faces, tuple(inp["shape"][1:3]))
    out = np.empty((len(x), *shape[1:]), np.int8)
    for i in range(len(x)):
        it.set_tensor(inp["index"], quantize(x[i : i + 1], inp))
        it.invoke()
        out[i] = it.get_tensor(index)[0]
    return out


def per_channel(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Stored integers as real numbers, float64: each times its output channel's scale (axis
    0), as TFLite stores int8 weights and int32 biases (zero point 0)."""
    v = np.asarray(q, np.float64)
    return v * np.asarray(scales, np.float64).reshape((-1,) + (1,) * (v.ndim - 1))


def float_layers(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every CONV_2D and FULLY_CONNECTED layer of an int8 file in graph order, dequantized
    into Keras' layout: (kernel (kh, kw, in, out) or (in, out), bias), float32.

    The int8 weights are per output channel with zero point 0 and the int32 bias carries
    its own per-channel scale, so each value is its integer times its channel's scale.
    A network fine-tuned from these starts where the int8 file is, BatchNorm folded in.
    """
    it = interpreter(path)
    details = {d["index"]: d for d in it.get_tensor_details()}

    def real(index: int) -> np.ndarray:
        q = details[index]["quantization_parameters"]
        if np.any(np.asarray(q["zero_points"]) != 0):
            raise ValueError(f"{path.name}: tensor {index} has a non-zero weight zero point")
        return per_channel(it.get_tensor(index), q["scales"])

    out = []
    for op in it._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        _, weight, bias = (int(i) for i in op["inputs"])
        w = real(weight)  # (out, kh, kw, in) or (out, in)
        kernel = w.transpose(1, 2, 3, 0) if w.ndim == 4 else w.T
        out.append((kernel.astype(np.float32), real(bias).astype(np.float32)))
    return out
