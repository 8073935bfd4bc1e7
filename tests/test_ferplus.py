"""The FER+ crowd's votes, read in FER2013's classes, and the figures vision_eval prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.bench.ferplus import HAPPY, NEUTRAL, crowd_metrics, vote_distribution
from agent.vision.interpreter import available_runtimes
from tests.conftest import ROOT, mini_fer2013

# columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
VOTES = np.array(
    [
        [0, 10, 0, 0, 0, 0, 0, 0, 0, 0],  # a clear smile
        [4, 6, 0, 0, 0, 0, 0, 0, 0, 0],  # a subtle smile (0.6)
        [6, 3, 0, 0, 0, 0, 0, 0, 1, 0],  # a subtle smile (a third of the emotion votes)
        [8, 2, 0, 0, 0, 0, 0, 0, 0, 0],  # neutral with a hint: not subtle (0.2)
        [0, 0, 0, 0, 3, 0, 0, 7, 0, 0],  # contempt counts as disgust: majority disgust
        [-1] * 10,  # FER+ has no row
        [0, 0, 0, 0, 0, 0, 0, 0, 2, 8],  # no emotion vote
    ]
)


def test_votes_become_shares_of_fer2013_classes() -> None:
    dist, has = vote_distribution(VOTES)
    assert has.tolist() == [True, True, True, True, True, False, False]
    np.testing.assert_allclose(dist[has].sum(axis=1), 1.0)
    assert dist[0, HAPPY] == 1.0
    np.testing.assert_allclose(dist[2, [HAPPY, NEUTRAL]], [1 / 3, 2 / 3])  # "unknown" left out
    np.testing.assert_allclose(dist[4, [0, 1]], [0.3, 0.7])  # anger, disgust (+ contempt)
    assert not dist[5:].any()
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        vote_distribution(np.zeros((3, 4)))


def test_crowd_metrics_count_subtle_smiles_and_the_majority() -> None:
    pred = np.array([HAPPY, NEUTRAL, HAPPY, NEUTRAL, 1, 0, 0])
    m = crowd_metrics(pred, VOTES)
    assert m["n_with_votes"] == 5
    assert m["subtle_smiles"] == 2 and m["subtle_smiles_read_happy"] == 0.5
    assert m["clear_smiles"] == 1 and m["clear_smiles_read_happy"] == 1.0
    # majorities: happy, happy, neutral, neutral, disgust
    assert m["ferplus_majority_accuracy"] == pytest.approx(3 / 5)
    assert m["neutral_predicted_share"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="predictions"):
        crowd_metrics(pred[:3], VOTES)
    with pytest.raises(ValueError, match="no image"):
        crowd_metrics(pred[5:], VOTES[5:])


@pytest.mark.skipif(not available_runtimes(), reason="no TFLite runtime installed")
def test_vision_eval_reports_the_crowd_figures_from_the_votes_beside_the_crops(
    tmp_path: Path,
) -> None:
    n = 40
    npz = mini_fer2013(tmp_path / "mini.npz", train=n + 5, public=n)
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "agent.bench.vision_eval", "--npz", str(npz), "--repeats", "2",
           "--model", "emotion_vgg48_int8.tflite", "--model", "emotion_minixception_int8.tflite",
           "--runtime", available_runtimes()[0], "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "subtle smiles read happy" in proc.stdout
    assert "read as happy without being happy" in proc.stdout
    report = json.loads(out.read_text())
    assert report["votes"] == "ferplus_public"
    (r,) = report["runtimes"].values()
    crowd = r["emotion_vgg48_int8.tflite"]["crowd"]
    assert crowd["n_with_votes"] == n
    assert 0.0 <= crowd["ferplus_majority_accuracy"] <= 1.0
    # the second model is compared with the first on the same faces, paired
    pair = r["paired"]["emotion_minixception_int8.tflite"]
    assert pair["against"] == "emotion_vgg48_int8.tflite"
    acc = pair["accuracy"]
    assert acc["n"] == n and acc["b"] - acc["a"] == pytest.approx(acc["difference"])
    assert acc["b"] == pytest.approx(r["emotion_minixception_int8.tflite"]["accuracy"])
    assert pair["subtle_smiles_read_happy"]["n"] == crowd["subtle_smiles"]
    assert "paired against the first model" in proc.stdout
    # a missing votes array named on the command line is refused, not ignored
    bad = subprocess.run([*cmd, "--votes", "nope"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "no array 'nope'" in bad.stderr
    # votes for other crops (another split), or not votes at all, are refused, not misread
    for key in ("ferplus_train", "y_public"):
        wrong = subprocess.run([*cmd, "--votes", key], cwd=ROOT, capture_output=True,
                               text=True, timeout=300)  # fmt: skip
        assert wrong.returncode == 2 and "not FER+ votes for the 40 crops" in wrong.stderr


def test_crowd_smile_labels_trust_the_crowd_for_smiles_only() -> None:
    from agent.bench.ferplus import crowd_smile_labels

    labels = np.array([NEUTRAL, 0, NEUTRAL, NEUTRAL, 0, NEUTRAL, 2])
    # the crowd's plurality is happy for rows 0 and 1 only; rows 5 and 6 have no votes
    assert crowd_smile_labels(labels, VOTES).tolist() == [HAPPY, HAPPY, *labels[2:].tolist()]
    happy = np.full(7, HAPPY)  # a face labelled happy stays happy whatever the crowd says
    assert crowd_smile_labels(happy, VOTES).tolist() == happy.tolist()
    with pytest.raises(ValueError, match="labels for"):
        crowd_smile_labels(labels[:3], VOTES)
    # ties go to the class first in FER2013 order: happy beats neutral, anger beats happy
    ties = np.array([[5, 5, 0, 0, 0, 0, 0, 0, 0, 0], [0, 5, 0, 0, 5, 0, 0, 0, 0, 0]])
    assert crowd_smile_labels(np.array([NEUTRAL, NEUTRAL]), ties).tolist() == [HAPPY, NEUTRAL]


def test_happy_readings_say_what_reading_smiles_costs() -> None:
    from agent.bench.ferplus import happy_readings

    c = np.zeros((7, 7), int)
    c[HAPPY, HAPPY] = 8
    c[2, HAPPY] = 2  # fear read as happy: negative
    c[2, 2] = 8
    c[NEUTRAL, HAPPY] = 1
    c[NEUTRAL, NEUTRAL] = 9
    h = happy_readings(c.tolist())
    assert h["happy_precision"] == pytest.approx(8 / 11, abs=1e-4)
    assert h["non_happy_read_happy"] == pytest.approx(3 / 20)
    assert h["negative_read_happy"] == pytest.approx(2 / 10)
    assert happy_readings(np.zeros((7, 7), int).tolist())["happy_precision"] is None
