"""The `smiles` build step's mechanics: refit an int8 model's last layer and write it in place.

Run on the shipped vgg48 with a few synthetic faces (the real refit reads FER2013 from
../shared, which the suite never needs); what is checked is what must hold for any data:
only the layer's bytes change, the file still loads and runs, and it computes the layer
that was fitted.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytest.importorskip("ai_edge_litert", reason="the refit reads features with ai-edge-litert")
pytest.importorskip("scipy.optimize", reason="the refit fits with scipy")
sys.path.insert(0, str(ROOT / "models"))
import int8_layers
import refit_head

BASE = ROOT / "models" / "emotion_vgg48_int8.tflite"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(0)
    n = 60
    path = tmp_path_factory.mktemp("fer") / "mini.npz"
    votes = rng.integers(0, 6, (n, 10))
    votes[:20] = [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]  # a third of the faces: all vote happy
    votes[20:, 1] = 0  # and no other face
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n, 48, 48), dtype=np.uint8),
        y_train=np.arange(n) % 7,
        ferplus_train=votes,
        x_public=rng.integers(0, 256, (10, 48, 48), dtype=np.uint8),
    )
    return path


def test_refit_changes_only_the_last_layer_and_the_file_computes_it(tmp_path, data) -> None:
    out = tmp_path / "refit.tflite"
    info = refit_head.refit(BASE, out, data)
    assert info["relabelled_happy"] == sum(1 for i in range(20) if i % 7 != 3)
    assert len(info.pop("float_public_pred")) == 10
    assert info["fit"]["iterations"] > 0 and set(info["versions"]) >= {"ai-edge-litert", "numpy"}
    lo, hi = info["logits_clipped"]["output_range"]
    assert lo < 0 < hi and 0 <= info["logits_clipped"]["training_faces"] <= 1

    old, new = BASE.read_bytes(), out.read_bytes()
    assert len(old) == len(new)
    changed = np.flatnonzero(np.frombuffer(old, np.uint8) != np.frombuffer(new, np.uint8))
    head = refit_head.find_head(int8_layers.interpreter(BASE))
    layer_bytes = 7 * 192 + 7 * 4 + 2 * 7 * 4  # weights, bias, their two scale arrays
    assert 0 < len(changed) <= layer_bytes

    # the new file's layer, read back, is a requantized layer on the same features
    again = refit_head.find_head(int8_layers.interpreter(out))
    assert again.weight_q.shape == head.weight_q.shape
    assert np.abs(again.weight_q).max() == 127  # per-channel scales fit the new weights
    assert not np.array_equal(again.weight_q, head.weight_q)
    faces = np.load(data)["x_public"]
    feats = refit_head.features(out, faces)
    np.testing.assert_array_equal(feats, refit_head.features(BASE, faces))  # frozen below

    from agent.vision.expressions import ExpressionClassifier
    from agent.vision.interpreter import load_model

    probs = ExpressionClassifier(load_model(out, runtime="ai-edge-litert"), temperature=1.0)
    logits = feats @ again.w.T + again.b
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(probs.predict(faces), expected, atol=0.05)


def test_refit_is_deterministic(tmp_path, data) -> None:
    a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
    refit_head.refit(BASE, a, data)
    refit_head.refit(BASE, b, data)
    assert a.read_bytes() == b.read_bytes()


def test_patch_refuses_a_buffer_that_is_not_there_once_or_a_new_size() -> None:
    with pytest.raises(ValueError, match="occurs 0 times"):
        refit_head.patch(b"abc", np.array([9, 9], np.int8), np.array([1, 1], np.int8))
    with pytest.raises(ValueError, match="occurs 2 times"):
        refit_head.patch(b"xyxy", np.frombuffer(b"xy", np.int8), np.zeros(2, np.int8))
    with pytest.raises(ValueError, match="4 bytes, the old one 28"):
        refit_head.patch(b"x" * 40, np.zeros(7, np.float32), np.zeros(1, np.float32))


def _conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3 'same' convolution of (H, W, C) with a Keras-layout kernel (kh, kw, in, out)."""
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))
    return np.einsum("hwcij,ijco->hwo", windows, kernel) + bias


def test_float_layers_compute_what_the_int8_file_computes() -> None:
    """The weights a fine-tune starts from (models/vgg48.py load_int8_weights): in Keras'
    layout, they give each layer's output from its input as the int8 file does, up to its
    rounding; a transposed kernel or a channel order mixed up would not."""
    layers = int8_layers.float_layers(BASE)
    assert [k.shape for k, _ in layers][:2] == [(3, 3, 1, 24), (3, 3, 24, 24)]
    assert layers[-1][0].shape == (192, 7) and len(layers) == 10  # 9 convs, dense

    it = int8_layers.interpreter(BASE)
    inp = it.get_input_details()[0]
    face = np.random.default_rng(1).integers(-128, 128, (1, 48, 48, 1), dtype=np.int8)
    it.set_tensor(inp["index"], face)
    it.invoke()
    details = {d["index"]: d for d in it.get_tensor_details()}

    def real(index: int) -> np.ndarray:
        q = details[index]["quantization_parameters"]
        return (it.get_tensor(index).astype(np.float64) - q["zero_points"][0]) * q["scales"][0]

    ops = [op for op in it._get_ops_details() if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    for n in (0, 1, 9):  # the stem, a 24-channel conv, the dense layer
        src, dst = int(ops[n]["inputs"][0]), int(ops[n]["outputs"][0])
        kernel, bias = layers[n]
        x = real(src)
        if n == 9:
            want = x.reshape(1, -1) @ kernel + bias
        else:
            want = np.maximum(_conv_same(x[0], kernel, bias), 0)[None]  # ReLU is fused
        got = real(dst)
        step = details[dst]["quantization_parameters"]["scales"][0]
        err = np.abs(got - want)
        assert np.quantile(err, 0.99) <= 2 * step, (n, float(err.max()), step)
        assert np.std(want) > 10 * step  # a layer that computes something
