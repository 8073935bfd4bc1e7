"""Face detection and alignment on a real photograph (scikit-image's astronaut, 512x512 RGB).

The reference geometry was measured by hand on the image (a zoomed view with an 8-pixel
grid), not produced by the code under test: face from hairline to chin and cheek to cheek,
and the centres of the eyes, the nose tip and the mouth.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.vision.align import (
    align_face,
    align_faces,
    face_quality,
    faces_json,
    laplacian_variance,
    pose_proxies,
)
from agent.vision.faces import (
    DEFAULT_DETECTOR_MODEL,
    FULL_RANGE,
    LEFT_EYE,
    MOUTH,
    NOSE_TIP,
    RIGHT_EYE,
    SHORT_RANGE,
    Face,
    FaceDetector,
    Letterbox,
    iou,
    letterbox,
    sigmoid_scores,
    ssd_anchors,
    weighted_nms,
)
from agent.vision.interpreter import TensorDetail, load_model, models_dir
from tests import picamera2_standin as standin

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photo")
ndimage = pytest.importorskip("scipy.ndimage")

HAND_BOX = (181.0, 80.0, 268.0, 166.0)  # x0, y0, x1, y1 in the 512x512 photo
HAND_POINTS = {
    RIGHT_EYE: (203.0, 101.0),  # the subject's right eye: the image's left
    LEFT_EYE: (245.5, 102.5),
    NOSE_TIP: (224.0, 127.5),
    MOUTH: (224.0, 145.0),
}


def model_path(name: str) -> Path:
    path = models_dir() / name
    if not path.is_file():
        pytest.skip(f"{path} is not built yet (models/MODELS.md says how)")
    return path


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(load_model(model_path(DEFAULT_DETECTOR_MODEL)))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def face(detector: FaceDetector, photo: np.ndarray) -> Face:
    faces = detector.detect(photo)
    assert len(faces) == 1
    return faces[0]


def box_iou(a, b) -> float:
    return float(iou(np.asarray(a, float), np.asarray([b], float))[0])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def test_anchor_grids_follow_mediapipe_options():
    short = ssd_anchors(SHORT_RANGE)
    assert short.shape == (896, 2)
    # stride 8: a 16x16 grid, 2 anchors per cell, x varying fastest
    assert np.allclose(short[0], [0.5 / 16, 0.5 / 16]) and np.allclose(short[1], short[0])
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16])
    # then stride 16 (three layers sharing one 8x8 map): 6 anchors per cell
    assert np.allclose(short[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(short[518], [1.5 / 8, 0.5 / 8])
    full = ssd_anchors(FULL_RANGE)
    assert full.shape == (2304, 2)
    assert np.allclose(full[1], [1.5 / 48, 0.5 / 48])


def test_score_sigmoid_is_clipped_without_overflow():
    with np.errstate(over="raise"):
        s = sigmoid_scores(np.array([-1e4, -100.0, 0.0, 100.0, 1e4]))
    assert s[2] == pytest.approx(0.5)
    assert s[0] == s[1] and s[3] == s[4] == pytest.approx(1.0)


def test_astronaut_face_where_it_is(face: Face):
    assert face.score > 0.8
    assert box_iou(face.box, HAND_BOX) >= 0.5
    for index, (x, y) in HAND_POINTS.items():
        eye_distance = HAND_POINTS[LEFT_EYE][0] - HAND_POINTS[RIGHT_EYE][0]
        kx, ky = face.keypoints[index]
        assert math.hypot(kx - x, ky - y) < 0.25 * eye_distance, index


def test_keypoints_inside_box_and_in_face_order(face: Face):
    x0, y0, x1, y1 = face.box
    for index in (RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH):
        x, y = face.keypoints[index]
        assert x0 < x < x1 and y0 < y < y1
    eyes_y = max(face.keypoints[RIGHT_EYE][1], face.keypoints[LEFT_EYE][1])
    assert eyes_y < face.keypoints[NOSE_TIP][1] < face.keypoints[MOUTH][1]
    assert face.keypoints[RIGHT_EYE][0] < face.keypoints[NOSE_TIP][0] < face.keypoints[LEFT_EYE][0]
    margin = 0.1 * face.width  # ears sit on the box's side edges
    for x, _ in face.keypoints[4:]:
        assert x0 - margin < x < x1 + margin


def test_letterbox_is_exact_on_a_non_square_crop(photo: np.ndarray):
    crop = photo[100:228, 150:406]  # 256 wide, 128 high
    tensor, box = letterbox(crop, 128)
    assert (box.scale, box.pad_x, box.pad_y) == (0.5, 0.0, 32.0)
    blocks = crop.astype(np.float32).reshape(64, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.array_equal(tensor[32:96], blocks)
    assert not tensor[:32].any() and not tensor[96:].any()
    # scale 1 (a Pi lores frame of 128x96): a plain copy between two 16-row bands
    lores = photo[::4, ::4][:96]
    tensor, box = letterbox(lores, 128)
    assert (box.scale, box.pad_y) == (1.0, 16.0)
    assert np.array_equal(tensor[16:112], lores.astype(np.float32))
    # the continuous map round-trips, pixel centres included
    points = np.array([[0.5, 0.5], [255.5, 127.5], [100.25, 60.75]])
    box = Letterbox.fit(256, 128, 128)
    assert np.allclose(box.to_frame(box.to_input(points)), points)
    assert np.allclose(box.to_input([[0.0, 0.0], [256.0, 128.0]]), [[0, 32], [128, 96]])


def test_detection_on_a_crop_maps_back_to_the_photo(detector: FaceDetector, photo, face):
    top, left = 40, 60
    crop = photo[top:360, left:480]  # 420x320: letterboxed with a non-integer scale
    (found,) = detector.detect(crop)
    shifted = np.add(found.box, [left, top, left, top])
    assert box_iou(shifted, face.box) > 0.85
    moved = np.add(found.keypoints, [left, top])
    assert np.abs(moved[:4] - np.asarray(face.keypoints[:4])).max() < 0.06 * face.width


def test_no_face_in_a_blank_image(detector: FaceDetector):
    assert detector.detect(np.zeros((96, 128), np.uint8)) == []
    assert detector.detect(np.full((480, 640, 3), 200, np.uint8)) == []


def test_min_face_size_and_max_faces(detector: FaceDetector, photo, face):
    strict = FaceDetector(detector.model, min_face_px=face.width + 1)
    assert strict.detect(photo) == []
    assert len(FaceDetector(detector.model, max_faces=0).detect(photo)) == 0


def test_weighted_nms_blends_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0.10, 0.10, 0.30, 0.30], [0.12, 0.12, 0.32, 0.32], [0.60, 0.60, 0.80, 0.80]])
    scores = np.array([0.9, 0.6, 0.7])
    keypoints = np.zeros((3, 6, 2))
    keypoints[:, :, 0] = boxes[:, :1]  # each detection's keypoints at its box's x0
    out_boxes, out_scores, out_points = weighted_nms(boxes, scores, keypoints, 0.3)
    assert out_scores.tolist() == [0.9, 0.7]  # the best score survives, not the average
    expected = (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5
    assert np.allclose(out_boxes[0], expected)
    assert np.allclose(out_points[0, :, 0], expected[0])
    assert np.allclose(out_boxes[1], boxes[2])
    # a zero-area best box cannot loop forever
    degenerate = np.array([[0.5, 0.5, 0.5, 0.5]])
    assert len(weighted_nms(degenerate, np.array([0.9]), np.zeros((1, 6, 2)))[1]) == 1


def test_y_plane_and_rgb_find_the_same_face(detector: FaceDetector):
    size = (256, 192)  # a Pi lores stream: 4:3 like the sensor
    rgb = standin.scene_rgb(size)
    y_plane = standin.yuv420_planes(rgb, 256)[:192, :256]  # what Pi 4's lores gives
    (from_rgb,) = detector.detect(rgb)
    (from_gray,) = detector.detect(y_plane)
    assert box_iou(from_rgb.box, from_gray.box) > 0.8


def test_integer_input_tensor_is_quantized_from_its_details(detector: FaceDetector, photo):
    class Uint8Model:  # same outputs, but an input quantized as a uint8 model's would be
        path = Path("face_uint8.tflite")
        runtime = "stub"
        outputs = detector.model.outputs
        input = TensorDetail("input", 0, (1, 128, 128, 3), np.dtype(np.uint8), 1 / 127.5, 128)

    stub = FaceDetector(Uint8Model())  # type: ignore[arg-type]
    tensor, _ = stub.prepare(photo)
    assert tensor.dtype == np.uint8 and tensor.shape == (1, 128, 128, 3)
    pixels, _ = letterbox(photo, 128)
    assert np.abs(tensor[0].astype(np.float32) - np.clip(np.rint(pixels + 0.5), 0, 255)).max() <= 1


def test_aligned_crop_levels_the_eyes(detector: FaceDetector, photo, face):
    crop = align_face(photo, face, (64, 64))
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    rotated = ndimage.rotate(photo, 25, reshape=False, order=1)
    (turned,) = detector.detect(rotated)
    roll_before, roll_after = pose_proxies(face)[1], pose_proxies(turned)[1]
    assert roll_after - roll_before == pytest.approx(-25, abs=8)
    # aligned, the turned photo's crop shows the same upright face; unaligned it does not
    level = Face(turned.box, turned.score, ((0.0, 0.0), (1.0, 0.0), *turned.keypoints[2:]))
    aligned = correlation(crop, align_face(rotated, turned, (64, 64)))
    unaligned = correlation(crop, align_face(rotated, level, (64, 64)))
    assert aligned > 0.6 and aligned > unaligned + 0.2


def test_quality_drops_for_blur_size_and_turned_faces(detector: FaceDetector, photo, face):
    (good,) = align_faces(photo, [face])
    assert good.quality.overall > 0.6 and abs(good.quality.yaw) < 0.15
    blurred = ndimage.gaussian_filter(photo, (3, 3, 0))
    (soft,) = align_faces(blurred, detector.detect(blurred))
    assert soft.quality.sharpness < good.quality.sharpness / 4
    assert soft.quality.overall < good.quality.overall
    small = photo[::4, ::4]  # the face is about 24 px wide: found, but too small to read
    (tiny,) = align_faces(small, detector.detect(small))
    assert tiny.quality.size_px < 30 and tiny.quality.overall < good.quality.overall / 2
    eyes_x = face.keypoints[LEFT_EYE][0] - face.keypoints[RIGHT_EYE][0]
    points = list(face.keypoints)
    points[NOSE_TIP] = (face.keypoints[LEFT_EYE][0] + 0.1 * eyes_x, face.keypoints[NOSE_TIP][1])
    turned = Face(face.box, face.score, tuple(points))
    q = face_quality(turned, good.crop)
    assert q.yaw > 0.5 and q.overall == 0.0
    assert laplacian_variance(np.full((64, 64), 128, np.uint8)) == 0.0


def test_faces_json_reports_faces_and_timing(tmp_path, detector: FaceDetector, photo):
    path = tmp_path / "astronaut.ppm"  # netpbm: readable without Pillow
    path.write_bytes(b"P6\n512 512\n255\n" + photo.tobytes())
    blank = tmp_path / "blank.pgm"
    blank.write_bytes(b"P5\n64 48\n255\n" + bytes(64 * 48))
    result = faces_json([path, blank], detector)
    assert [len(r["faces"]) for r in result] == [1, 0]
    first = result[0]
    assert (first["width"], first["height"]) == (512, 512) and first["detect_ms"] > 0
    assert box_iou(first["faces"][0]["box"], HAND_BOX) >= 0.5
    assert set(first["faces"][0]["keypoints"]) >= {"right_eye", "left_eye", "nose_tip", "mouth"}
    assert 0 < first["faces"][0]["quality"]["overall"] <= 1


def test_full_range_model_finds_the_face_too(photo):
    model = load_model(model_path("face_detection_full_range.tflite"))
    (found,) = FaceDetector(model).detect(photo)
    assert box_iou(found.box, HAND_BOX) >= 0.5
