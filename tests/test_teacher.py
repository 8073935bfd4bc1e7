"""Distillation targets from int8 teachers (models/teacher.py, train_expressions --teacher)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

pytest.importorskip("ai_edge_litert", reason="teacher.py reads features with ai-edge-litert")
sys.path.insert(0, str(ROOT / "models"))
import teacher

from agent.sources.session import demo_session_path

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


def test_a_teachers_float_logits_are_what_its_int8_last_layer_computes() -> None:
    from int8_layers import interpreter, tensor_per_face
    from refit_head import find_head

    faces = demo_faces()
    logits = teacher.teacher_logits(VGG48, faces)
    assert logits.shape == (len(faces), 7) and np.isfinite(logits).all()
    it = interpreter(VGG48)
    head = find_head(it)
    fc = next(op for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED")
    out = next(d for d in it.get_tensor_details() if d["index"] == int(fc["outputs"][0]))
    scale, zero = out["quantization_parameters"]["scales"][0], out["quantization"][1]
    int8 = (tensor_per_face(it, out["index"], faces).astype(np.float64) - zero) * scale
    # the file's own layer output is the float logit, clipped to its range and rounded
    np.testing.assert_allclose(np.clip(logits, *head.logit_range), int8, atol=0.51 * scale + 1e-4)


def test_soft_targets_are_distributions_softened_by_the_temperature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faces = demo_faces()
    sharp = teacher.teacher_targets([VGG48], faces, 1.0)
    soft = teacher.teacher_targets([VGG48], faces, 3.0)
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert (soft.max(axis=1) <= sharp.max(axis=1) + 1e-6).all()
    np.testing.assert_allclose(soft, teacher.softmax(teacher.teacher_logits(VGG48, faces), 3.0))
    # several teachers are averaged
    a, b = np.zeros((2, 7)), np.zeros((2, 7))
    a[:, 0], b[:, 3] = 50.0, 50.0  # each teacher sure of another class
    logits = {"a": a, "b": b}
    monkeypatch.setattr(teacher, "teacher_logits", lambda path, faces: logits[str(path)])
    both = teacher.teacher_targets([Path("a"), Path("b")], faces[:2], 1.0)
    np.testing.assert_allclose(both[:, [0, 3]], 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="no teacher"):
        teacher.teacher_targets([], faces, 1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            teacher.softmax(np.zeros((1, 7)), bad)


def test_a_model_that_cannot_teach_is_named() -> None:
    mini = ROOT / "models" / "emotion_minixception_int8.tflite"  # no dense last layer
    with pytest.raises(ValueError, match=r"emotion_minixception_int8\.tflite: cannot teach"):
        teacher.check_teacher(mini)
    with pytest.raises(ValueError, match="no such file"):
        teacher.check_teacher(ROOT / "models" / "nope.tflite")


def test_a_runs_soft_targets_are_kept_with_what_they_were_made_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import train_expressions as te

    faces = demo_faces()[:6]
    args = argparse.Namespace(teacher=[VGG48], distil=None, teacher_temperature=None)
    cfg = te.teacher_config(args)
    assert (cfg["mix"], cfg["temperature"], cfg["files"][0]["file"]) == (0.5, 2.0, VGG48.name)
    made = te.distil_targets(args, cfg, faces, tmp_path)
    np.testing.assert_allclose(made, teacher.teacher_targets([VGG48], faces, 2.0), atol=1e-6)
    # a resumed run reads them back without the teacher file
    again = te.distil_targets(argparse.Namespace(teacher=None), cfg, faces, tmp_path)
    np.testing.assert_array_equal(again, made)
    # made from another temperature or other faces: never reused; without the teacher, refused
    for other_cfg, other_faces in (({**cfg, "temperature": 4.0}, faces), (cfg, faces[::-1])):
        with pytest.raises(SystemExit, match="pass the run's teachers again"):
            te.distil_targets(argparse.Namespace(teacher=None), other_cfg, other_faces, tmp_path)
    assert "made from other teachers or faces" in capsys.readouterr().out
    hotter = te.distil_targets(args, {**cfg, "temperature": 4.0}, faces, tmp_path)
    assert hotter.max(axis=1).mean() < made.max(axis=1).mean()
    # bad settings stop before any training
    mini = ROOT / "models" / "emotion_minixception_int8.tflite"
    for bad, message in (
        ({"distil": 1.0}, "in \\(0, 1\\)"),
        ({"teacher_temperature": 0.0}, "temperature"),
        ({"teacher": [mini]}, "cannot teach"),
        ({"teacher": [tmp_path / "gone.tflite"]}, "no such file"),
    ):
        with pytest.raises(SystemExit, match=message):
            te.teacher_config(argparse.Namespace(**{**vars(args), **bad}))
