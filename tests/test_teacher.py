"""Distillation targets from int8 teachers (models/teacher.py, train_expressions --teacher)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytest.importorskip("ai_edge_litert", reason="teacher.py reads features with ai-edge-litert")
sys.path.insert(0, str(ROOT / "models"))
import teacher

from agent.sources.session import demo_session_path
from agent.vision.expressions import ExpressionClassifier
from agent.vision.interpreter import load_model

VGG48 = ROOT / "models" / "emotion_vgg48_int8.tflite"


def demo_faces() -> np.ndarray:
    """Grey 48x48 crops of the demo session's frames (real faces of one actor)."""
    from PIL import Image

    frames = sorted((demo_session_path() / "frames").glob("*.png"))[:24]
    assert frames, "the demo session ships frames"
    out = []
    for f in frames:
        img = Image.open(f).convert("L")
        w, h = img.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        out.append(np.asarray(img.crop(box).resize((48, 48), Image.BILINEAR)))
    return np.stack(out).astype(np.uint8)


def test_a_teachers_float_logits_read_the_faces_as_its_int8_file_does() -> None:
    faces = demo_faces()
    logits = teacher.teacher_logits(VGG48, faces)
    assert logits.shape == (len(faces), 7) and np.isfinite(logits).all()
    int8 = ExpressionClassifier(load_model(VGG48)).predict(faces).argmax(axis=1)
    # the float last layer on the file's own int8 features: the same class on nearly all
    assert np.mean(logits.argmax(axis=1) == int8) >= 0.9


def test_soft_targets_are_distributions_softened_by_the_temperature() -> None:
    faces = demo_faces()
    sharp = teacher.teacher_targets([VGG48], faces, 1.0)
    soft = teacher.teacher_targets([VGG48], faces, 3.0)
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert (soft.max(axis=1) <= sharp.max(axis=1) + 1e-6).all()
    np.testing.assert_array_equal(soft.argmax(axis=1), sharp.argmax(axis=1))
    # two teachers are averaged: the same file twice gives its own targets
    np.testing.assert_allclose(teacher.teacher_targets([VGG48, VGG48], faces, 3.0), soft, atol=1e-6)
    with pytest.raises(ValueError, match="no teacher"):
        teacher.teacher_targets([], faces, 1.0)
    mini = ROOT / "models" / "emotion_minixception_int8.tflite"  # no dense last layer
    with pytest.raises(ValueError, match=r"emotion_minixception_int8\.tflite: cannot teach"):
        teacher.teacher_logits(mini, faces[:2])
    with pytest.raises(ValueError, match="temperature"):
        teacher.softmax(np.zeros((1, 7)), 0.0)
