"""Soft targets from teacher models, for distillation (train_expressions.py --teacher).

A build-time tool (numpy, ai-edge-litert; no TensorFlow here). Each teacher is an int8
expression model with one dense last layer (vgg48 and its refits): its pooled int8
features of every Training face are read as the agent reads the face (refit_head.features)
and its float last layer gives the logits, so a probability is not lost to the int8
output's 1/256 steps. A teacher's targets are softmax(logits / T); several teachers are
averaged (an ensemble teacher). The student then learns
`(1 - MIX) * recipe targets + MIX * teacher targets`.

This is distillation on the teacher's reading of each face as it is, not of each augmented
view the student sees (the teachers are TFLite files, and reading them inside the training
step would cost more than the step); the student's augmentation still applies to the face.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from int8_layers import interpreter  # noqa: E402
from refit_head import Head, features, find_head  # noqa: E402

from agent.vision.calibration import check_temperature  # noqa: E402


def check_teacher(path: Path) -> Head:
    """The last layer of an int8 model that ends in one dense layer; ValueError naming the
    file otherwise."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return find_head(interpreter(path))
    except ValueError as exc:
        raise ValueError(f"{path}: cannot teach ({exc}; a teacher ends in one dense layer, "
                         f"as vgg48 does)") from None  # fmt: skip


def teacher_logits(path: Path, faces: np.ndarray) -> np.ndarray:
    """(N, classes) float logits of an int8 model's last layer, on its int8 features.

    They are not clipped to the range the file's int8 output can hold (about +-4.5 for
    vgg48), so where the file's own probability saturates, the teacher's is sharper."""
    head = check_teacher(path)
    return features(path, faces) @ head.w.T.astype(np.float32) + head.b.astype(np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Rows of softmax(logits / temperature), in float64."""
    z = np.asarray(logits, np.float64) / check_temperature(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def teacher_targets(paths: Sequence[Path], faces: np.ndarray, temperature: float) -> np.ndarray:
    """(N, classes) float32: the teachers' softened probabilities, averaged."""
    if not paths:
        raise ValueError("no teacher given")
    probs = [softmax(teacher_logits(p, faces), temperature) for p in paths]
    return np.mean(probs, axis=0).astype(np.float32)
