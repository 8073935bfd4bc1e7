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
    head = refit_head.find_head(refit_head._interpreter(BASE))
    layer_bytes = 7 * 192 + 7 * 4 + 2 * 7 * 4  # weights, bias, their two scale arrays
    assert 0 < len(changed) <= layer_bytes

    # the new file's layer, read back, is a requantized layer on the same features
    again = refit_head.find_head(refit_head._interpreter(out))
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
