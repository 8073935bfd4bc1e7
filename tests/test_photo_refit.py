"""models/photo_refit.py: the last layer refitted with labelled photos seen through the live
path, judged by folds by person.

The real run reads FER2013 and the London set from ../shared, which the suite never needs:
here the demo session's own frames (one actor) and a few synthetic FER2013 faces check the
mechanics that must hold for any data.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, mini_fer2013

pytest.importorskip("ai_edge_litert", reason="photo_refit reads features with ai-edge-litert")
pytest.importorskip("scipy.optimize", reason="the refit fits with scipy")
sys.path.insert(0, str(ROOT / "models"))
import photo_refit
import refit_head

from agent.sources.session import demo_session_path
from agent.vision.expressions import EXPRESSIONS

BASE = ROOT / "models" / "emotion_vgg48_int8.tflite"


def test_folds_keep_each_persons_photos_together_and_deal_every_group() -> None:
    rows = [
        {"person": f"{i:03d}", "gender": "female" if i % 3 else "male", "file": f"{i}_{e}"}
        for i in range(30)
        for e in ("n", "s")
    ]
    folds = photo_refit.person_folds(rows, 5, ["gender"])
    by_person: dict[str, set[int]] = {}
    for r, f in zip(rows, folds, strict=True):
        by_person.setdefault(r["person"], set()).add(int(f))
    assert all(len(f) == 1 for f in by_person.values())  # never on both sides
    for k in range(5):
        genders = {r["gender"] for r, f in zip(rows, folds, strict=True) if f == k}
        assert genders == {"female", "male"}
    assert np.array_equal(folds, photo_refit.person_folds(rows[::-1], 5, ["gender"])[::-1])

    # another deal with a seed: the same guarantees, other groupings, stable for a subset
    seeded = photo_refit.person_folds(rows, 5, ["gender"], seed=3)
    for k in range(5):
        genders = {r["gender"] for r, f in zip(rows, seeded, strict=True) if f == k}
        assert genders == {"female", "male"}
    assert all(seeded[i] == seeded[i + 1] for i in range(0, len(rows), 2))  # photos together
    assert not np.array_equal(seeded, folds)
    assert not np.array_equal(seeded, photo_refit.person_folds(rows, 5, ["gender"], seed=4))
    assert np.array_equal(seeded, photo_refit.person_folds(rows[::-1], 5, ["gender"], 3)[::-1])


def test_photo_targets_are_smoothed_one_hot_and_a_photo_weighs_w() -> None:
    y = np.array([EXPRESSIONS.index("happy"), EXPRESSIONS.index("neutral")])
    t, w = photo_refit.photo_targets(y, 6, 30.0)
    assert t.shape == (12, 7) and w.shape == (12,)
    assert np.allclose(t.sum(axis=1), 1.0)
    assert (t[:6].argmax(axis=1) == y[0]).all() and (t[6:].argmax(axis=1) == y[1]).all()
    assert w[:6].sum() == pytest.approx(30.0) and w[6:].sum() == pytest.approx(30.0)


def test_fit_head_with_free_rows_moves_only_those_rows() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(400, 12))
    t = rng.dirichlet(np.ones(7), 400)
    w0, b0 = rng.normal(size=(7, 12)), rng.normal(size=7)
    weights = np.ones(400)
    w, b, fit = refit_head.fit_head(f, t, weights, w0, b0, free_rows=[3])
    assert fit["iterations"] > 0
    assert np.array_equal(np.delete(w, 3, 0), np.delete(w0, 3, 0))
    assert np.array_equal(np.delete(b, 3), np.delete(b0, 3))
    assert not np.allclose(w[3], w0[3])
    # by default every row is fitted: each moves, and the loss is at a minimum in all of them
    wd, bd, _ = refit_head.fit_head(f, t, weights, w0, b0)
    assert all(not np.allclose(wd[k], w0[k]) for k in range(7))
    z = f @ wd.T + bd
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    grad_w = (p - t).T @ f / len(f) + 2 * refit_head.LAMBDA * wd
    assert np.abs(grad_w).max() < 1e-3
    assert np.abs(w[3] - wd[3]).max() > 1e-3  # the other rows fixed: another optimum for row 3


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    frames = demo_session_path() / "frames"
    rows = ["file,expression,person,gender"]
    for i, name in enumerate(("neutral_0000.png", "neutral_0010.png", "happy_0030.png")):
        shutil.copy(frames / name, d / name)
        rows.append(f"{name},{name.split('_')[0]},p{i},male")
    from PIL import Image

    Image.fromarray(np.full((96, 128), 128, np.uint8)).save(d / "blank.png")
    rows.append("blank.png,neutral,p9,female")  # no face: left out, named
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return d / "labels.csv"


def test_photo_crops_are_the_live_crop_and_its_views(photos: Path, capsys) -> None:
    got = photo_refit.photo_crops(photos)
    crops = got["crops"]
    views = len(photo_refit.MARGINS)
    assert crops.shape == (3, 2 * views, 48, 48) and crops.dtype == np.uint8
    assert [r["file"] for r in got["rows"]] == ["neutral_0000.png", "neutral_0010.png",
                                                 "happy_0030.png"]  # fmt: skip
    assert got["lines"] == [2, 3, 4]
    assert np.array_equal(crops[:, views:], crops[:, :views, :, ::-1])  # the mirrors
    assert not np.array_equal(crops[:, 0], crops[:, 1])  # another margin, another crop
    assert "line 5: no face found" in capsys.readouterr().err

    # the first view is what the live path classifies: the same class as the agent's own
    from agent.config import AgentConfig
    from agent.sources.session import read_image
    from agent.vision.stage import FacePipeline, expression_model_path, face_detector_path

    m = AgentConfig().models
    pipe = FacePipeline(face_detector_path(m), expression_model_path(m), "ai-edge-litert", 1,
                        m.min_face_px, False)  # fmt: skip
    live = [pipe.analyse(read_image(photos.parent / r["file"]))[0][0] for r in got["rows"]]
    by_crop = pipe.classifier.predict(crops[:, 0])
    assert np.allclose(np.array(live), by_crop)


def test_a_heavily_weighted_photo_is_learnt_by_the_happy_row(photos: Path, tmp_path) -> None:
    fer = mini_fer2013(tmp_path / "mini.npz", train=60)
    got = photo_refit.photo_crops(photos)
    crops, y = got["crops"], got["y"].copy()
    happy = EXPRESSIONS.index("happy")
    y[0] = happy  # a neutral frame, labelled happy on purpose
    n_photos, v = crops.shape[:2]
    feats = refit_head.features(BASE, crops.reshape(n_photos * v, 48, 48))
    refitter = photo_refit.Refitter(BASE, fer)
    before = photo_refit.predict_file(BASE.read_bytes(), crops[:, 0])
    assert before[0] != happy
    model, info = refitter.fit(feats, y, 500.0, [happy])
    assert info["iterations"] > 0
    after = photo_refit.predict_file(model, crops[:, 0])
    assert after[0] == happy and after[2] == happy
    assert len(model) == BASE.stat().st_size


def _conv3x3_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W, C) 'same' 3x3 convolution + bias + ReLU, in numpy."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, wd = x.shape[1:3]
    out = sum(p[:, i : i + h, j : j + wd, :] @ w[i, j] for i in range(3) for j in range(3))
    return np.maximum(out + b, 0.0)


def test_stage4_cache_reads_the_files_own_stage3_and_last_layers(photos: Path, tmp_path) -> None:
    import stage4_refit

    fer = mini_fer2013(tmp_path / "mini.npz", train=14, public=5)
    out = tmp_path / "s3.npz"
    stage4_refit.cache(fer, photos, BASE, out)
    c = dict(np.load(out))
    assert c["fer"].shape == (14, 6, 6, 96) and c["fer"].dtype == np.int8
    assert c["photos"].shape == (3, 2 * len(photo_refit.MARGINS), 6, 6, 96)
    assert c["fer_targets"].shape == (14, 7) and c["public"].shape == (5, 6, 6, 96)
    assert c["layer0_w"].shape == (3, 3, 96, 192) and c["layer3_w"].shape == (192, 7)

    # the cached map through the cached layers, in float, is what the int8 file computes
    x = stage4_refit.real(c, c["photos"].reshape(-1, 6, 6, 96))
    for i in range(3):
        x = _conv3x3_relu(x, c[f"layer{i}_w"], c[f"layer{i}_b"])
    logits = x.mean(axis=(1, 2)) @ c["layer3_w"] + c["layer3_b"]
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    float_probs = z / z.sum(axis=1, keepdims=True)
    crops = photo_refit.photo_crops(photos)["crops"].reshape(-1, 48, 48)
    from agent.vision.expressions import ExpressionClassifier
    from agent.vision.interpreter import load_model

    int8_probs = ExpressionClassifier(load_model(BASE), temperature=1.0).predict(crops)
    agree = np.mean(float_probs.argmax(axis=1) == int8_probs.argmax(axis=1))
    assert agree >= 0.85, agree
    assert np.abs(float_probs - int8_probs).max() < 0.05


def test_target_ratio_is_the_worst_london_figure_over_its_target() -> None:
    happy, neutral = EXPRESSIONS.index("happy"), EXPRESSIONS.index("neutral")
    # 4 women, 4 men, each a smile and a neutral photo
    y = np.array([happy, neutral] * 8)
    men = np.repeat([False, True], 8)
    pred = y.copy()
    assert photo_refit.target_ratio(y, pred, [~men, men]) == pytest.approx(1 / 0.95)
    pred[[8, 10]] = neutral  # two of the four men's smiles missed: 0.5 / 0.65
    assert photo_refit.target_ratio(y, pred, [~men, men]) == pytest.approx(0.5 / 0.65)
    assert photo_refit.target_ratio(y, pred, []) == pytest.approx(0.75 / 0.75)
    pred[[1, 3, 5]] = happy  # and 3 of 8 neutral faces read happy: 0.625 / 0.95
    assert photo_refit.target_ratio(y, pred, [~men, men]) == pytest.approx(0.625 / 0.95)


def test_choose_weight_takes_the_best_score_and_the_smaller_w_on_a_tie() -> None:
    assert photo_refit.choose_weight({30.0: 0.9, 100.0: 1.02, 200.0: 0.99}) == 100.0
    assert photo_refit.choose_weight({200.0: 1.02, 30.0: 0.9, 100.0: 1.02}) == 100.0


def _people(n: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """n people, half women, each a neutral and a smiling photo; every crop's first pixel is
    its photo's index, every feature its photo's index, so a fake refit and reader can
    tell which photos they were given."""
    happy, neutral = EXPRESSIONS.index("happy"), EXPRESSIONS.index("neutral")
    rows = [{"person": f"{i:02d}", "gender": "female" if i % 2 else "male",
             "expression": e, "file": f"{i:02d}_{e}.jpg"}
            for i in range(n) for e in ("neutral", "happy")]  # fmt: skip
    y = np.array([happy if r["expression"] == "happy" else neutral for r in rows])
    crops = np.zeros((len(rows), 2, 48, 48), np.uint8)
    crops[:, :, 0, 0] = np.arange(len(rows))[:, None]
    return crops, y, rows


@pytest.mark.parametrize("seed", [None, 5])
def test_nested_never_fits_on_the_people_it_reads(monkeypatch, tmp_path, seed) -> None:
    """Every layer that reads an outer fold's people, and every layer that helped choose its
    W, was fitted without them; each inner fit without exactly its inner fold; the W chosen
    is the one whose held-out reading meets the targets."""
    crops, y, rows = _people(12)
    feats = np.arange(len(rows), dtype=np.float64)[:, None, None] * np.ones((len(rows), 2, 4))
    fits: list[tuple[set[int], float]] = []

    class Recorder:
        def fit(self, f, yy, weight, free):
            fits.append(({int(i) for i in f[:, 0]}, weight))
            return f"W={weight:g}".encode(), {}

    def read(model: bytes, c: np.ndarray) -> np.ndarray:
        ids = c[:, 0, 0].astype(int)  # W=100 reads every photo right, W=30 no smile
        return y[ids] if model == b"W=100" else np.full(len(ids), EXPRESSIONS.index("neutral"))

    monkeypatch.setattr(photo_refit, "predict_file", read)
    a = type("A", (), {"folds": 3, "inner_folds": 2, "by": ["gender"], "weights": [30.0, 100.0],
                       "out": tmp_path / "nested.json", "fold_seed": seed})()  # fmt: skip
    pred = photo_refit.nested(a, Recorder(), feats, crops, y, rows, None)
    assert np.array_equal(pred, y)  # every outer fold read by the W=100 layer

    outer = photo_refit.person_folds(rows, 3, ["gender"], seed)
    per_fold = 2 * 2 + 1  # 2 weights x 2 inner folds, then the fit that reads the fold
    assert len(fits) == 3 * per_fold + 2 * 2  # and the choice on everyone
    for k in range(3):
        held = set(np.flatnonzero(outer == k).tolist())
        keep = np.flatnonzero(outer != k)
        inner = photo_refit.person_folds([rows[i] for i in keep], 2, ["gender"], seed)
        block = fits[k * per_fold : (k + 1) * per_fold]
        for j, (seen, _) in enumerate(block[:-1]):
            assert seen == set(keep[inner != j % 2].tolist())  # exactly its inner fold out
        assert block[-1] == (set(keep.tolist()), 100.0)
        assert not any(seen & held for seen, _ in block)
    report = json.loads(a.out.read_text())
    assert [f["W"] for f in report["outer_folds"].values()] == [100.0] * 3
    assert report["on_everyone"]["W"] == 100.0
    assert report["nested"]["gender"]["male"]["smiles_happy"] == "6/6"


def test_cv_reads_each_fold_with_a_layer_fitted_without_it(monkeypatch) -> None:
    crops, y, rows = _people(10)
    feats = np.arange(len(rows), dtype=np.float64)[:, None, None] * np.ones((len(rows), 2, 4))
    fitted: list[set[int]] = []

    class Recorder:
        def fit(self, f, yy, weight, free):
            fitted.append({int(i) for i in f[:, 0]})
            return str(len(fitted) - 1).encode(), {}

    read_by: dict[int, int] = {}

    def read(model: bytes, c: np.ndarray) -> np.ndarray:
        for i in c[:, 0, 0].astype(int):
            read_by[int(i)] = int(model)
        return y[c[:, 0, 0].astype(int)]

    monkeypatch.setattr(photo_refit, "predict_file", read)
    folds = photo_refit.person_folds(rows, 5, ["gender"])
    pred = photo_refit.cv_predict(Recorder(), feats, crops, y, folds, 30.0, None)
    assert np.array_equal(pred, y) and len(fitted) == 5
    assert sorted(read_by) == list(range(len(rows)))
    for i, model in read_by.items():
        assert i not in fitted[model]
        assert fitted[model] == set(np.flatnonzero(folds != folds[i]).tolist())


def test_nested_command_writes_predictions_the_paired_tool_reads(
    photos: Path, tmp_path, capsys
) -> None:
    from agent.bench.paired import read_predictions

    fer = mini_fer2013(tmp_path / "mini.npz", train=60)
    out, preds = tmp_path / "nested.json", tmp_path / "nested.csv"
    labels = photos.with_name("labels_cased.csv")  # a label as a person might type it
    labels.write_text(photos.read_text().replace(",happy,", ",Happy ,"))
    argv = ["nested", "--fer2013", str(fer), "--labels", str(labels), "--base", str(BASE),
            "--weights", "30", "300", "--folds", "3", "--inner-folds", "2", "--free", "happy",
            "--out", str(out), "--predictions", str(preds)]  # fmt: skip
    assert photo_refit.main(argv) == 0
    assert re.search(r"\(build --weight (30|300) --free happy\)", capsys.readouterr().out)
    got = read_predictions(preds)
    assert sorted(got) == ["happy_0030.png", "neutral_0000.png", "neutral_0010.png"]
    report = json.loads(out.read_text())
    happy = sum(got[f]["predicted"] == "happy" for f in got if got[f]["expression"] == "happy")
    assert report["nested"]["overall"]["smiles_happy"] == f"{happy}/1"
    assert got["neutral_0000.png"]["line"] == "2"


def test_nested_refuses_to_write_predictions_over_its_labels(photos: Path, tmp_path) -> None:
    from agent.bench.faces_eval import LabelsError

    fer = mini_fer2013(tmp_path / "mini.npz", train=20)
    labels = photos.with_name("labels_copy.csv")
    labels.write_text(photos.read_text())
    before = labels.read_text()
    argv = ["nested", "--fer2013", str(fer), "--labels", str(labels), "--base", str(BASE),
            "--folds", "3", "--inner-folds", "2", "--predictions", str(labels)]  # fmt: skip
    with pytest.raises(LabelsError, match="is the labels file itself"):
        photo_refit.main(argv)
    assert labels.read_text() == before
    with pytest.raises(SystemExit):
        photo_refit.main(["cv", "--fer2013", str(fer), "--labels", str(labels), "--base",
                          str(BASE), "--predictions", str(tmp_path / "p.csv")])  # fmt: skip
