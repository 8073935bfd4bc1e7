"""The shipped TFLite models, the interpreter interface, expression probabilities and metrics.

Everything here runs on generated inputs; the one test that reads FER2013 from ../shared
skips (with the reason) where that folder is absent. Runtimes that are not installed are
skipped by name, so the same file proves both where both are present.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from agent.vision.expressions import (
    DEFAULT_EXPRESSION_MODEL,
    EXPRESSION_MODELS,
    EXPRESSIONS,
    FLOAT_REFERENCE_MODEL,
    MINIXCEPTION_MODEL,
    VGG48_MODEL,
    ExpressionClassifier,
    classification_metrics,
    evaluate,
    evaluate_npz,
    evaluate_npz_models,
    predict_labels,
    resize_faces,
    subsample,
    to_probabilities,
)
from agent.vision.interpreter import (
    ModelError,
    ModelSpec,
    PerThreadModel,
    RuntimeNotAvailable,
    TensorDetail,
    available_runtimes,
    dequantize,
    load_model,
    quantize,
    read_manifest,
)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MANIFEST = read_manifest(MODELS / "models.json")
FER_NPZ = ROOT.parent / "shared" / "data" / "fer2013" / "fer2013_train_public.npz"
INSTALLED = available_runtimes()
RUNTIME_PARAMS = [
    pytest.param(
        rt, marks=pytest.mark.skipif(rt not in INSTALLED, reason=f"{rt} is not installed here")
    )
    for rt in ("tflite-runtime", "ai-edge-litert")
]
needs_runtime = pytest.mark.skipif(not INSTALLED, reason="no TFLite runtime installed")


def synthetic_face(h: int = 96, w: int = 80) -> np.ndarray:
    """A drawn grey 'face': light oval, dark eyes, a smiling mouth on a dark background."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h / 2, w / 2
    img = np.full((h, w), 40.0, np.float32)
    img[((yy - cy) / (0.45 * h)) ** 2 + ((xx - cx) / (0.4 * w)) ** 2 <= 1] = 190.0
    for ex in (cx - 0.17 * w, cx + 0.17 * w):
        img[(yy - 0.4 * h) ** 2 + (xx - ex) ** 2 <= (0.05 * w) ** 2] = 30.0
    mouth = np.abs(yy - (0.68 * h + 0.002 * (xx - cx) ** 2)) < 2
    img[mouth & (np.abs(xx - cx) < 0.2 * w)] = 60.0
    return img.astype(np.uint8)


# ---------------------------------------------------------------- shipped models


def test_manifest_lists_every_shipped_model_and_models_md_mirrors_it() -> None:
    shipped = {p.name for p in MODELS.glob("*.tflite")}
    assert shipped == set(MANIFEST), "models/*.tflite and models.json disagree"
    spec = importlib.util.spec_from_file_location("build_models", MODELS / "build_models.py")
    assert spec and spec.loader
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)  # imports no TensorFlow: that is lazy, inside the step
    data = json.loads((MODELS / "models.json").read_text())
    assert build.models_md_table(data) in (MODELS / "MODELS.md").read_text()


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_shipped_model_loads_with_recorded_checksum_and_input(runtime: str, name: str) -> None:
    model = load_model(MODELS / name, runtime=runtime)
    entry = MANIFEST[name]
    assert model.runtime == runtime
    assert model.sha256 == entry["sha256"]
    assert list(model.input.shape) == entry["input"]["shape"]
    assert model.input.dtype.name == entry["input"]["dtype"]
    outs = model.run(*[np.zeros(d.shape, d.dtype) for d in model.inputs])
    assert [list(o.shape) for o in outs] == [o["shape"] for o in entry["outputs"]]


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
@pytest.mark.parametrize("name", EXPRESSION_MODELS)
def test_int8_model_io_is_int8_with_quantization_from_details(runtime: str, name: str) -> None:
    model = load_model(MODELS / name, runtime=runtime)
    raw = model._interpreter.get_input_details()[0]
    assert model.input.dtype == np.int8 and model.outputs[0].dtype == np.int8
    assert model.input.scale == pytest.approx(raw["quantization"][0]) and model.input.scale > 0
    assert model.input.zero_point == raw["quantization"][1]
    assert model.outputs[0].scale > 0
    recorded = MANIFEST[name]["input"]
    assert (model.input.scale, model.input.zero_point) == (
        pytest.approx(recorded["scale"]),
        recorded["zero_point"],
    )
    with pytest.raises(ValueError, match="wants int8"):
        model.run(np.zeros(model.input.shape, np.float32))  # forgot to quantize


# ---------------------------------------------------------------- load-time checks


def _copy_with_manifest(tmp_path: Path, name: str, **changes: object) -> Path:
    dst = tmp_path / name
    shutil.copy(MODELS / name, dst)
    entry = {**MANIFEST[name], **changes}
    (tmp_path / "models.json").write_text(json.dumps({"format": 1, "models": [entry]}))
    return dst


@needs_runtime
def test_missing_file_names_it_and_the_rebuild_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_model(tmp_path / "face_detection_short_range.tflite")
    assert "face_detection_short_range.tflite" in str(err.value)
    assert "file not found" in str(err.value)
    assert "python models/build_models.py" in str(err.value)


@needs_runtime
def test_altered_bytes_fail_the_recorded_sha256(tmp_path: Path) -> None:
    for name in EXPRESSION_MODELS:
        path = _copy_with_manifest(tmp_path, name)
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ModelError) as err:
            load_model(path)
        msg = str(err.value)
        assert name in msg and "sha256" in msg
        assert MANIFEST[name]["rebuild"] in msg  # the manifest's own rebuild command
    assert "build_models.py vgg48" in MANIFEST[VGG48_MODEL]["rebuild"]


@needs_runtime
def test_sha256_mismatch_against_an_explicit_spec(tmp_path: Path) -> None:
    spec = ModelSpec("x.tflite", sha256="0" * 64, rebuild="python models/build_models.py faces")
    with pytest.raises(ModelError, match=r"face_detection_short_range\.tflite.*sha256.*faces"):
        load_model(MODELS / "face_detection_short_range.tflite", expected=spec)


@needs_runtime
def test_wrong_input_shape_or_dtype(tmp_path: Path) -> None:
    path = _copy_with_manifest(tmp_path, MINIXCEPTION_MODEL, input={"shape": [1, 48, 48, 1]})
    with pytest.raises(ModelError, match=r"emotion_minixception_int8\.tflite.*input shape"):
        load_model(path)
    spec = ModelSpec(MINIXCEPTION_MODEL, input_dtype="uint8")
    with pytest.raises(ModelError, match=r"input dtype is int8, expected uint8.*build_models"):
        load_model(MODELS / MINIXCEPTION_MODEL, expected=spec)


@needs_runtime
def test_not_a_model_and_unlisted_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ModelError, match=r"junk\.tflite.*cannot load"):
        load_model(junk)
    own = tmp_path / "my_model.tflite"  # a user's model: no manifest, loads unchecked
    shutil.copy(MODELS / MINIXCEPTION_MODEL, own)
    assert load_model(own).input.shape == (1, 64, 64, 1)


def test_runtime_choice_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown TFLite runtime"):
        load_model(MODELS / DEFAULT_EXPRESSION_MODEL, runtime="onnx")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(RuntimeNotAvailable, match="pip install"):
        load_model(MODELS / DEFAULT_EXPRESSION_MODEL, runtime="ai-edge-litert")


# ---------------------------------------------------------------- quantization


def test_quantize_and_dequantize_use_the_details_given() -> None:
    d = TensorDetail("x", 0, (4,), np.dtype(np.int8), scale=0.5, zero_point=3)
    q = quantize(np.array([0.0, 1.0, -1.25, 1000.0]), d)
    assert q.dtype == np.int8 and q.tolist() == [3, 5, 1, 127]  # -2.5 ties up to -2
    assert dequantize(q, d).tolist() == [0.0, 1.0, -1.0, 62.0]
    raw = {"index": 0, "shape": [2], "dtype": np.uint8, "quantization": (2.0, 128)}
    assert quantize(np.array([-300.0, 4.0]), raw).tolist() == [0, 130]
    f = TensorDetail("f", 0, (2,), np.dtype(np.float32), 0.0, 0)
    assert quantize(np.array([0.3, 2]), f).dtype == np.float32
    assert dequantize(np.array([1, 2], np.float32), f).tolist() == [1.0, 2.0]


def test_grey_levels_stay_distinct_after_input_quantization() -> None:
    d = TensorDetail("x", 0, (256,), np.dtype(np.int8), scale=2 / 255, zero_point=-1)
    x = np.arange(256, dtype=np.float32) / 255 * 2 - 1
    assert len(np.unique(quantize(x, d))) == 255  # only 0 and 1 share -128 (the clip)


# ---------------------------------------------------------------- expressions


def test_resize_is_opencv_bilinear() -> None:
    crop = np.array([[[0, 100], [100, 200]]], np.uint8)
    out = resize_faces(crop, (4, 4))[0]
    assert out[0].tolist() == [0, 25, 75, 100]
    assert out[:, 0].tolist() == [0, 25, 75, 100]
    assert out[3].tolist() == [100, 125, 175, 200]
    big = np.tile(np.array([[0, 255]], np.uint8), (256, 128))[None]  # 256x256 stripes
    assert resize_faces(big, (64, 64)).std() < 1.0  # averaged, not aliased


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
@pytest.mark.parametrize("name", [*EXPRESSION_MODELS, FLOAT_REFERENCE_MODEL])
def test_probabilities_are_valid_for_crops_of_any_size(runtime: str, name: str) -> None:
    clf = ExpressionClassifier(load_model(MODELS / name, runtime=runtime))
    one = clf.predict(synthetic_face())
    assert one.shape == (1, 7) and one.dtype == np.float32
    assert np.all((one >= 0) & (one <= 1)) and one.sum() == pytest.approx(1.0, abs=1e-5)
    mixed = clf.predict([synthetic_face(48, 48), synthetic_face(200, 170), synthetic_face(64, 64)])
    assert mixed.shape == (3, 7) and np.allclose(mixed.sum(axis=1), 1.0, atol=1e-5)
    batch = clf.predict(np.stack([synthetic_face(), 255 - synthetic_face()]))
    assert batch.shape == (2, 7) and np.allclose(batch[0], one[0])
    assert clf.predict([]).shape == (0, 7)
    assert clf.labels == EXPRESSIONS


def test_to_probabilities_renormalises_or_softmaxes() -> None:
    near = to_probabilities(np.array([[0.5, 0.49609375, 0.0078125]]))  # int8 softmax, sums 1.004
    assert near.sum() == pytest.approx(1.0) and near.argmax() == 0
    logits = to_probabilities(np.array([[2.0, 1.0, -3.0]]))
    assert logits.sum() == pytest.approx(1.0) and logits[0, 0] > logits[0, 1] > logits[0, 2]


@needs_runtime
def test_per_thread_model_builds_one_interpreter_per_thread() -> None:
    shared = PerThreadModel(MODELS / DEFAULT_EXPRESSION_MODEL)  # eager: built here
    seen: list[object] = []  # the models themselves: a freed one's id() could be reused

    def work() -> None:
        m = shared.get()
        assert shared.get() is m
        m.run(np.zeros(m.input.shape, m.input.dtype))
        seen.append(m)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shared.built == 4 and len({id(m) for m in seen}) == 3
    m = shared.get()
    with m._lock, pytest.raises(RuntimeError, match="concurrently"):
        m.run(np.zeros(m.input.shape, m.input.dtype))


# ---------------------------------------------------------------- metrics


def test_metrics_on_a_hand_made_confusion() -> None:
    # angry: 3 true, 2 right, 1 called fear; disgust: 1 true, called angry;
    # fear: 2 true, both right; happy: 4 true, all right; sad, surprise: never true nor
    # predicted; neutral: 2 true, 1 right, 1 called happy.
    y_true = [0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 6, 6]
    y_pred = [0, 0, 2, 0, 2, 2, 3, 3, 3, 3, 6, 3]
    m = classification_metrics(np.array(y_true), np.array(y_pred))
    assert m["n"] == 12 and m["accuracy"] == pytest.approx(9 / 12)
    rec = m["per_class_recall"]
    assert rec == pytest.approx(
        {
            "angry": 2 / 3,
            "disgust": 0,
            "fear": 1,
            "happy": 1,
            "sad": 0,
            "surprise": 0,
            "neutral": 0.5,
        }
    )
    # F1: angry p=2/3 r=2/3 -> 2/3; fear p=2/3 r=1 -> 0.8; happy p=4/5 r=1 -> 8/9; neutral 2/3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 8 / 9 + 2 / 3) / 7)
    cm = np.array(m["confusion"])
    assert cm.sum() == 12 and cm[0, 2] == 1 and cm[1, 0] == 1 and cm[6, 3] == 1
    assert np.trace(cm) == 9
    with pytest.raises(ValueError, match="class indices"):
        classification_metrics(np.array([7]), np.array([0]))


def test_evaluate_with_a_stub_classifier() -> None:
    class Stub:
        labels = EXPRESSIONS

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.eye(7, dtype=np.float32)[x[:, 0, 0].astype(int) % 7]

    x = np.zeros((10, 8, 8), np.uint8)
    x[:, 0, 0] = [0, 1, 2, 3, 4, 5, 6, 0, 1, 3]
    y = np.array([0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    result = evaluate(Stub(), x, y)  # type: ignore[arg-type]
    assert result["accuracy"] == pytest.approx(0.9) and result["ms_per_face"] >= 0
    assert result["per_class_recall"]["fear"] == pytest.approx(0.5)


@needs_runtime
def test_evaluate_npz_on_a_generated_file(tmp_path: Path) -> None:
    faces = np.stack([synthetic_face(48, 48), 255 - synthetic_face(48, 48)] * 3)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, faces=faces, labels=np.array([3, 0] * 3, np.int8))
    result = evaluate_npz(npz, "faces", "labels")
    assert result["n"] == 6 and result["model"] == DEFAULT_EXPRESSION_MODEL
    assert result["sha256"] == MANIFEST[DEFAULT_EXPRESSION_MODEL]["sha256"]
    assert 0 <= result["accuracy"] <= 1 and len(result["confusion"]) == 7
    with pytest.raises(KeyError, match=r"no array 'x_public'.*faces"):
        evaluate_npz(npz, "x_public", "labels")


@needs_runtime
@pytest.mark.skipif(not FER_NPZ.is_file(), reason=f"FER2013 reference data absent ({FER_NPZ})")
def test_int8_tracks_the_float_reference_on_fer2013_publictest() -> None:
    with np.load(FER_NPZ) as data:
        x, y = subsample(data["x_public"], data["y_public"], 400)
    preds = {}
    for name in (MINIXCEPTION_MODEL, FLOAT_REFERENCE_MODEL):
        preds[name], _ = predict_labels(ExpressionClassifier(load_model(MODELS / name)), x)
    int8, flt = preds[MINIXCEPTION_MODEL], preds[FLOAT_REFERENCE_MODEL]
    assert np.mean(flt == y) > 0.6  # full PublicTest: 65.4 %
    assert np.mean(int8 == y) > 0.57  # full PublicTest: 63.5-63.8 % by runtime
    assert np.mean(int8 == flt) > 0.84  # full PublicTest: 88.9-89.2 %


# ---------------------------------------------------------------- the project's own model


def test_default_expression_model_and_the_other_stays_selectable() -> None:
    from agent.config import ModelsConfig
    from agent.vision.stage import expression_model_path

    assert DEFAULT_EXPRESSION_MODEL in EXPRESSION_MODELS
    assert expression_model_path(ModelsConfig()).name == DEFAULT_EXPRESSION_MODEL
    for name in EXPRESSION_MODELS:
        chosen = MODELS / name
        assert expression_model_path(ModelsConfig(expression=str(chosen))) == chosen
    entry = MANIFEST[VGG48_MODEL]
    assert entry["bytes"] <= 2_000_000 and (MODELS / VGG48_MODEL).stat().st_size == entry["bytes"]
    assert entry["input"]["shape"] == [1, 48, 48, 1]


def test_the_default_is_the_better_model_on_publictest() -> None:
    """The policy, checked on the recorded figures: the default leads on accuracy and macro-F1."""
    score = {n: MANIFEST[n]["evaluation"]["this_model"] for n in EXPRESSION_MODELS}
    best = DEFAULT_EXPRESSION_MODEL
    for name in EXPRESSION_MODELS:
        assert score[best]["accuracy"] >= score[name]["accuracy"]
        assert score[best]["macro_f1"] >= score[name]["macro_f1"]


@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
def test_vgg48_is_integer_only(runtime: str) -> None:
    """Full int8: int8 in and out, and not one float tensor anywhere in the graph."""
    model = load_model(MODELS / VGG48_MODEL, runtime=runtime)
    details = model._interpreter.get_tensor_details()
    floats = [d["name"] for d in details if np.dtype(d["dtype"]).kind == "f"]
    assert floats == []
    assert model.input.dtype == np.int8 and model.outputs[0].dtype == np.int8
    assert model.input.shape == (1, 48, 48, 1) and model.outputs[0].shape == (1, 7)
    # an int8 softmax: its scale covers [0, 1] in 256 steps from -128
    assert model.outputs[0].scale == pytest.approx(1 / 256) and model.outputs[0].zero_point == -128


@needs_runtime
def test_both_runtimes_agree_on_vgg48() -> None:
    if len(INSTALLED) < 2:
        pytest.skip("needs both tflite-runtime and ai-edge-litert")
    faces = [synthetic_face(48, 48), 255 - synthetic_face(48, 48), synthetic_face(120, 100)]
    probs = [
        ExpressionClassifier(load_model(MODELS / VGG48_MODEL, runtime=rt)).predict(faces)
        for rt in INSTALLED
    ]
    # the two runtimes' int8 kernels may round differently, by a few output steps at most
    assert np.abs(probs[0] - probs[1]).max() <= 0.05


@needs_runtime
@pytest.mark.parametrize("runtime", RUNTIME_PARAMS)
@pytest.mark.parametrize("name", EXPRESSION_MODELS)
def test_the_astronaut_smiles(runtime: str, name: str) -> None:
    """A real photograph (NASA, public domain, shipped by scikit-image): Eileen Collins smiles.

    The whole vision path: BlazeFace finds the face, align_faces cuts it at the model's own
    input size, and the model must read it as happy, with margin.
    """
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photo")
    from agent.vision.align import align_faces
    from agent.vision.faces import load_detector

    photo = skimage_data.astronaut()
    faces = load_detector(runtime=runtime).detect(photo)
    assert len(faces) == 1
    clf = ExpressionClassifier(load_model(MODELS / name, runtime=runtime))
    (aligned,) = align_faces(photo, faces, clf.size)
    p = clf.predict(aligned.crop)[0]
    assert EXPRESSIONS[int(p.argmax())] == "happy"
    assert p[EXPRESSIONS.index("happy")] > 0.5


@needs_runtime
def test_two_models_in_one_evaluation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces = np.stack([synthetic_face(48, 48), 255 - synthetic_face(48, 48)] * 3)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, faces=faces, labels=np.array([3, 0] * 3, np.int8))
    result = evaluate_npz_models(npz, "faces", "labels", [VGG48_MODEL, MINIXCEPTION_MODEL])
    assert [r["model"] for r in result["models"]] == [VGG48_MODEL, MINIXCEPTION_MODEL]
    assert [s["model"] for s in result["summary"]] == [VGG48_MODEL, MINIXCEPTION_MODEL]
    assert result["n"] == 6 and all(r["n"] == 6 for r in result["models"])
    assert result["models"][0]["sha256"] == MANIFEST[VGG48_MODEL]["sha256"]

    from agent.cli import main

    argv = ["evaluate-expressions", "--npz", str(npz), "--x", "faces", "--y", "labels"]
    assert main([*argv, "--model", VGG48_MODEL, "--model", MINIXCEPTION_MODEL]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [s["model"] for s in printed["summary"]] == [VGG48_MODEL, MINIXCEPTION_MODEL]
    assert main(argv) == 0  # one model: the default, the single-result form
    assert json.loads(capsys.readouterr().out)["model"] == DEFAULT_EXPRESSION_MODEL


@needs_runtime
@pytest.mark.skipif(not FER_NPZ.is_file(), reason=f"FER2013 reference data absent ({FER_NPZ})")
def test_expression_models_match_their_recorded_figures_on_fer2013_publictest() -> None:
    """On a fixed 600-face PublicTest sample (the full split is in models/MODELS.md)."""
    with np.load(FER_NPZ) as data:
        x, y = subsample(data["x_public"], data["y_public"], 600)
    m = {}
    for name in EXPRESSION_MODELS:
        pred, _ = predict_labels(ExpressionClassifier(load_model(MODELS / name)), x)
        m[name] = classification_metrics(y, pred)
        recorded = MANIFEST[name]["evaluation"]["this_model"]
        assert m[name]["accuracy"] == pytest.approx(recorded["accuracy"], abs=0.04)
        assert m[name]["macro_f1"] == pytest.approx(recorded["macro_f1"], abs=0.05)
