"""Where the live crop sits on a face, and the bench that compares it with FER2013's framing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agent.bench import framing
from agent.vision.align import CROP_MARGIN, align_face, crop_frame
from agent.vision.faces import Face

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photo")


def tilted_face(cx: float, cy: float, box: float, eye_gap: float, eyes_up: float, deg: float):
    """A face whose eyes are `eye_gap` apart and `eyes_up` above the box centre, the whole
    face rolled by `deg` degrees about the box centre."""
    a = math.radians(deg)
    ex, ey = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    c = np.array([cx, cy])
    right, left = c - eyes_up * ey - eye_gap / 2 * ex, c - eyes_up * ey + eye_gap / 2 * ex
    nose, mouth = c + 0.05 * box * ey, c + 0.25 * box * ey
    points = tuple(tuple(map(float, p)) for p in (right, left, nose, mouth, right, left))
    return Face((cx - box / 2, cy - box / 2, cx + box / 2, cy + box / 2), 0.9, points)


def test_crop_frame_moves_up_the_face_even_when_it_is_rolled() -> None:
    face = tilted_face(100, 80, 40, 14, 8, 30)
    centre, axes, side = crop_frame(face, 0.25, 0.0)
    np.testing.assert_allclose(centre, [100, 80])
    assert side == pytest.approx(50)
    np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-12)
    raised, _, _ = crop_frame(face, 0.25, 0.1)
    up = np.array([math.sin(math.radians(30)), -math.cos(math.radians(30))])  # up the face
    np.testing.assert_allclose(raised - centre, 0.1 * 50 * up, atol=1e-9)
    # the agent's own framing stays centred on the box: raising it was measured, not adopted
    np.testing.assert_allclose(crop_frame(face)[0], [100, 80])
    assert crop_frame(face)[2] == pytest.approx(40 * (1 + CROP_MARGIN))


def test_fitted_framing_puts_the_eyes_where_the_native_crops_have_them() -> None:
    faces = [tilted_face(50 + 7 * i, 60, 40 + 3 * i, 14 + i, 6, 10 * i - 20) for i in range(5)]
    native_eyes = np.tile([0.5, 0.39], (5, 1))
    native_dist = np.full(5, 0.37)
    margin, raise_ = framing.fit_framing(native_eyes, native_dist, faces)
    eyes = [framing.eyes_in_crop(f, margin, raise_) for f in faces]
    assert np.mean([e[0][1] for e in eyes]) == pytest.approx(0.39, abs=1e-9)
    assert np.mean([d for _, d in eyes]) == pytest.approx(0.37, abs=1e-9)
    assert all(e[0][0] == pytest.approx(0.5) for e in eyes)  # eyes centred across


def test_camera_frame_maps_back_to_the_native_crop() -> None:
    crop = np.zeros((48, 48), np.uint8)
    crop[30, 10] = 255  # one bright pixel, row 30, column 10
    frame = framing.as_camera_frame(crop)
    assert frame.shape == (72 * framing.UPSCALE, 72 * framing.UPSCALE)
    r, c = np.unravel_index(np.argmax(frame), frame.shape)
    x, y = framing.to_native(np.array([c + 0.5, r + 0.5]), 48)
    assert x == pytest.approx(10.5 / 48, abs=0.5 / 48)
    assert y == pytest.approx(30.5 / 48, abs=0.5 / 48)


@pytest.fixture(scope="module")
def fer_like_crops() -> np.ndarray:
    """The astronaut's face cut and shrunk like a FER2013 crop (48x48 grey), and mirrored."""
    photo = skimage_data.astronaut()
    face = tilted_face(224, 125, 95, 42, 22, 0)
    crop = align_face(photo, face, (48, 48), 0.15, 0.05)
    return np.stack([crop, crop[:, ::-1]])


def test_bench_finds_the_faces_and_scores_each_framing(fer_like_crops, capsys) -> None:
    from agent.vision.expressions import ExpressionClassifier
    from agent.vision.faces import load_detector
    from agent.vision.interpreter import load_model, models_dir

    clf = ExpressionClassifier(load_model(models_dir() / "emotion_vgg48_int8.tflite"))
    happy = np.array([3, 3])
    votes = np.array([[0, 10, 0, 0, 0, 0, 0, 0, 0, 0]] * 2)
    report = framing.run(
        fer_like_crops, happy, votes, clf, load_detector(), [(0.2, 0.0), (0.17, 0.07)]
    )
    assert report["detected"] == 2
    assert set(report["scores"]) == {
        "native",
        "live margin 0.2 raise 0",
        "live margin 0.17 raise 0.07",
    }
    native = report["geometry"]["native"]
    assert 0.3 < native["eyes_xy"][1] < 0.5 and 0.3 < native["eye_distance"] < 0.5
    low, high = (report["geometry"][k]["eyes_xy"][1] for k in list(report["scores"])[1:])
    assert high > low + 0.04  # raising the window lowers the eyes in the crop
    assert report["scores"]["native"]["accuracy"] == 1.0  # she smiles
    assert report["scores"]["native"]["crowd"]["clear_smiles"] == 2
    json.dumps(report)  # --json prints it as it is
    print(framing.format_report(report))
    assert "fitted framing" in capsys.readouterr().out


def test_bench_refuses_a_file_without_the_split(tmp_path, capsys) -> None:
    path = tmp_path / "faces.npz"
    np.savez(path, x_train=np.zeros((1, 48, 48), np.uint8), y_train=np.zeros(1, np.int64))
    assert framing.main(["--npz", str(path), "--split", "public"]) == 2
    assert "x_public" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        framing.main(["--npz", str(path), "--framing", "0.2"])
