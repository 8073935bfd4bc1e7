"""Temperature scaling of expression probabilities: the maths, and the shipped models' use of it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.vision.calibration import (
    PROBABILITY_FLOOR,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from agent.vision.expressions import EXPRESSION_MODELS, ExpressionClassifier
from agent.vision.interpreter import available_runtimes, load_model, read_manifest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
needs_runtime = pytest.mark.skipif(not available_runtimes(), reason="no TFLite runtime installed")


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_is_softmax_of_scaled_logits_and_keeps_the_ranking() -> None:
    z = np.random.default_rng(1).normal(0, 2, (50, 7))
    p = softmax(z)
    for t in (0.5, 1.7, 4.0):
        out = apply_temperature(p, t)
        np.testing.assert_allclose(out, softmax(z / t), atol=1e-5)
        assert (out.argmax(1) == p.argmax(1)).all()
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(apply_temperature(p, 1.0), p.astype(np.float32))
    assert apply_temperature(p, 3.0).max(1).mean() < p.max(1).mean()  # T > 1 softens


def test_zero_probabilities_from_int8_are_lifted_before_the_power() -> None:
    p = np.array([[1.0, 0.0, 0.0]])
    out = apply_temperature(p, 2.0)
    assert out[0, 1] > 0 and out[0, 1] == pytest.approx(out[0, 2])
    expected = np.sqrt(PROBABILITY_FLOOR) / (1 + 2 * np.sqrt(PROBABILITY_FLOOR))
    assert out[0, 1] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_temperature_that_is_not_a_positive_number_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.ones((1, 2)) / 2, bad)


def test_fit_recovers_the_temperature_that_made_the_data() -> None:
    """Labels drawn from softmax(z / 2.5): the model that says softmax(z) is over-confident."""
    rng = np.random.default_rng(7)
    z = rng.normal(0, 3, (20000, 7))
    truth = softmax(z / 2.5)
    y = np.array([rng.choice(7, p=row) for row in truth])
    t = fit_temperature(softmax(z), y)
    assert t == pytest.approx(2.5, rel=0.05)
    before = expected_calibration_error(softmax(z), y)
    after = expected_calibration_error(apply_temperature(softmax(z), t), y)
    assert after < 0.02 < before
    assert negative_log_likelihood(apply_temperature(softmax(z), t), y) < negative_log_likelihood(
        softmax(z), y
    )
    with pytest.raises(ValueError, match="no labelled rows"):
        fit_temperature(np.zeros((0, 7)), np.zeros(0, np.int64))


def test_ece_on_a_hand_made_case() -> None:
    # two rows at confidence 0.9 (one right), two at 0.6 (both right):
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.4
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(p, y) == pytest.approx(0.4)
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == 0.0


def test_every_shipped_expression_model_records_a_fitted_temperature() -> None:
    manifest = read_manifest(MODELS / "models.json")
    for name in EXPRESSION_MODELS:
        entry = manifest[name]
        for mode, key in (("plain", "temperature"), ("with_flip", "temperature_with_flip")):
            t = entry["inference"][key]
            cal = entry["evaluation"]["calibration"][mode]
            assert 0.2 < t < 10 and cal["temperature"] == t
            assert cal["nll_after_in_sample"] <= cal["nll_before"]  # what the fit minimises
            assert cal["after_cross_fitted"]["ece"] <= 0.05


@needs_runtime
def test_classifier_reads_the_manifest_and_applies_flip_and_temperature(tmp_path: Path) -> None:
    name = EXPRESSION_MODELS[0]
    h, w = read_manifest(MODELS / "models.json")[name]["input"]["shape"][1:3]
    # crops at the model's own size: resizing is exact only up to rounding, and a grey level
    # rounded the other way in a mirrored crop would be a different input
    crops = np.random.default_rng(3).integers(0, 256, (4, h, w), dtype=np.uint8)
    shutil.copy(MODELS / name, tmp_path / name)
    entry = dict(read_manifest(MODELS / "models.json")[name])
    entry["inference"] = {"temperature": 3.0, "temperature_with_flip": 2.0, "flip_average": True}
    (tmp_path / "models.json").write_text(json.dumps({"format": 1, "models": [entry]}))

    model = load_model(tmp_path / name)
    clf = ExpressionClassifier(model)
    assert clf.temperature == 2.0 and clf.flip_average
    raw = ExpressionClassifier(model, temperature=1.0, flip_average=False)
    mirrored = raw.predict(crops[:, :, ::-1].copy())
    expected = apply_temperature((raw.predict(crops) + mirrored) / 2, 2.0)
    np.testing.assert_allclose(clf.predict(crops), expected, atol=1e-6)
    # a crop and its mirror image read the same once flips are averaged
    np.testing.assert_allclose(clf.predict(crops[:, :, ::-1].copy()), expected, atol=1e-6)
    assert clf.predict(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)
    with pytest.raises(ValueError, match="temperature"):
        ExpressionClassifier(model, temperature=0.0)
    # flips turned off (the config's models.flip_average: false): the plain temperature
    plain = ExpressionClassifier(model, flip_average=False)
    assert plain.temperature == 3.0 and not plain.flip_average
    np.testing.assert_allclose(
        plain.predict(crops), apply_temperature(raw.predict(crops), 3.0), atol=1e-6
    )


def _data_module() -> object:
    import importlib.util

    sys.path.insert(0, str(MODELS))  # fer_data imports vgg48 beside it
    spec = importlib.util.spec_from_file_location("fer_data", MODELS / "fer_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # TensorFlow is imported only inside augment_fn
    return module


def test_ferplus_votes_blend_into_the_fer2013_targets() -> None:
    fd = _data_module()
    # columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
    # unknown, not-a-face
    votes = np.array(
        [
            [0, 8, 2, 0, 0, 0, 0, 0, 0, 0],  # happy, some surprise
            [5, 0, 0, 0, 3, 0, 0, 2, 0, 0],  # labelled angry; crowd: neutral, anger, contempt
            [-1] * 10,  # FER+ has no row
            [0, 0, 0, 0, 0, 0, 0, 0, 3, 7],  # no emotion vote at all
        ]
    )
    labels = np.array([3, 0, 4, 6])
    t = fd.ferplus_targets(votes, labels, 0.3)  # type: ignore[attr-defined]
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(t[0], [0, 0, 0, 0.7 + 0.3 * 0.8, 0, 0.3 * 0.2, 0], atol=1e-6)
    # contempt counts as disgust; neutral goes to index 6
    np.testing.assert_allclose(t[1], [0.7 + 0.09, 0.06, 0, 0, 0, 0, 0.15], atol=1e-6)
    np.testing.assert_array_equal(t[2], np.eye(7)[4])
    np.testing.assert_array_equal(t[3], np.eye(7)[6])
    np.testing.assert_array_equal(fd.ferplus_targets(votes, labels, 0.0), np.eye(7)[labels])  # type: ignore[attr-defined]


@needs_runtime
def test_config_flip_average_reaches_the_live_face_pipeline(tmp_path: Path) -> None:
    from agent.config_loader import load_config
    from agent.vision.stage import FacePipeline, expression_model_path, face_detector_path

    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text("models:\n  flip_average: true\n")
    m = load_config(cfg_path).models
    assert m.flip_average is True
    pipe = FacePipeline(
        face_detector_path(m), expression_model_path(m), m.runtime, 1, 24.0, m.flip_average
    )
    entry = read_manifest(MODELS / "models.json")[expression_model_path(m).name]
    assert pipe.classifier.flip_average
    assert pipe.classifier.temperature == entry["inference"]["temperature_with_flip"]
    default = FacePipeline(face_detector_path(m), expression_model_path(m), m.runtime, 1, 24.0)
    assert default.classifier.flip_average == entry["inference"]["flip_average"]


@pytest.mark.parametrize(
    ("inference", "problem"),
    [
        ({"temperature": "abc"}, "temperature must be a positive number"),
        ({"temperature": None}, "temperature must be a positive number"),
        ({"temperature": True}, "temperature must be a positive number"),
        ({"temperature_with_flip": -1}, "temperature_with_flip must be a positive number"),
        ({"flip_average": "false"}, "flip_average must be true or false"),
        ({"temprature": 1.2}, "unknown key 'temprature'"),
        ("x", "must be an object"),
    ],
)
def test_a_malformed_inference_entry_names_the_manifest_model_and_key(
    tmp_path: Path, inference: object, problem: str
) -> None:
    from agent.vision.interpreter import ModelError

    name = EXPRESSION_MODELS[0]
    shutil.copy(MODELS / name, tmp_path / name)
    entry = dict(read_manifest(MODELS / "models.json")[name])
    entry["inference"] = inference
    (tmp_path / "models.json").write_text(json.dumps({"format": 1, "models": [entry]}))
    with pytest.raises(ModelError) as err:
        load_model(tmp_path / name)
    text = str(err.value)
    assert str(tmp_path / "models.json") in text and name in text and problem in text


def test_a_fit_at_the_edge_of_its_range_is_refused() -> None:
    p = np.array([[0.6, 0.4], [0.4, 0.6]] * 50)
    y = np.array([0, 1] * 50)  # always right: the best temperature tends to 0
    with pytest.raises(ValueError, match="edge"):
        fit_temperature(p, y)


def test_float_outputs_keep_their_class_order_when_zeros_are_lifted() -> None:
    p = np.array([[0.9, 0.1, 0.0, 1e-9]])
    out = apply_temperature(p, 2.0)
    assert list(np.argsort(-out[0])) == [0, 1, 3, 2]


@needs_runtime
def test_flip_averaging_reads_a_large_crop_and_its_mirror_alike() -> None:
    name = EXPRESSION_MODELS[0]
    clf = ExpressionClassifier(load_model(MODELS / name), flip_average=True)
    h, w = clf.size
    # box-reduces by 4 with 2 rows and 2 columns left over, one trimmed off each side
    crop = np.random.default_rng(5).integers(0, 256, (4 * h + 2, 4 * w + 2), dtype=np.uint8)
    np.testing.assert_allclose(clf.predict(crop), clf.predict(crop[:, ::-1].copy()), atol=1e-6)
