"""evaluate-faces: labelled photos through the live face path, overall and per group.

Photos: frames of the bundled demo session (CREMA-D actor 1001, whose file names say the
acted expression), a blank frame with no face, and rows that cannot be used.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.bench.faces_eval import block
from agent.events import EXPRESSIONS
from agent.sources.session import demo_session_path
from tests.conftest import agent_cmd

BLOCK_KEYS = {
    "n",
    "detected",
    "detection_rate",
    "accuracy",
    "macro_f1",
    "per_class_recall",
    "confusion_by_label",
}


def test_block_counts_a_photo_without_a_face_as_null_and_wrong() -> None:
    b = block(["happy", "happy", "neutral", "neutral"], ["happy", None, "neutral", "happy"])
    assert set(b) == BLOCK_KEYS
    assert (b["n"], b["detected"], b["detection_rate"], b["accuracy"]) == (4, 3, 0.75, 0.5)
    assert b["per_class_recall"] == {"happy": 0.5, "neutral": 0.5}
    assert b["confusion_by_label"] == {
        "happy": {"happy": 1, "null": 1},
        "neutral": {"neutral": 1, "happy": 1},
    }
    # F1 happy = 2*1/(2+1+1) = 0.5, neutral = 2*1/(2+0+1) = 0.667
    assert b["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-4)


def test_evaluate_faces_json_per_group_and_bad_rows(tmp_path: Path) -> None:
    frames = demo_session_path() / "frames"
    rows = ["file,expression,group"]
    for name in ("happy_0030.png", "happy_0025.png", "neutral_0000.png", "neutral_0010.png",
                 "angry_0060.png", "angry_0070.png"):  # fmt: skip
        shutil.copy(frames / name, tmp_path / name)
        rows.append(f"{name},{name.split('_')[0]},{'a' if name.endswith('0.png') else 'b'}")
    from PIL import Image

    Image.fromarray(np.full((96, 128), 128, np.uint8)).save(tmp_path / "blank.png")
    rows.append("blank.png,neutral,a")  # no face: predicted null
    rows.append("gone.png,happy,a")  # missing file
    rows.append("happy_0030.png,smirk,b")  # not a FER2013 class
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows.append("broken.png,sad,b")  # unreadable
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    preds = tmp_path / "predictions.csv"
    proc = subprocess.run(
        agent_cmd("evaluate-faces", str(labels), "--by", "group", "--json",
                  "--predictions", str(preds)),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert set(r) == {"n", "overall", "by"} and r["n"] == 7
    overall = r["overall"]
    assert set(overall) == BLOCK_KEYS
    assert overall["detected"] == 6 and overall["confusion_by_label"]["neutral"].get("null") == 1
    predicted = sum(sum(row.values()) for row in overall["confusion_by_label"].values())
    assert predicted == 7
    right = sum(row.get(c, 0) for c, row in overall["confusion_by_label"].items())
    assert overall["accuracy"] == pytest.approx(right / 7, abs=1e-4)
    assert set(r["by"]["group"]) == {"a", "b"}
    assert sum(b["n"] for b in r["by"]["group"].values()) == 7
    assert "line 9: no such file" in proc.stderr
    assert "line 10: unknown expression 'smirk'" in proc.stderr
    assert "line 11:" in proc.stderr and "cannot decode image" in proc.stderr
    assert "3 of 10 rows left out" in proc.stderr

    # --predictions: one row per usable photo, agreeing with the report
    with open(preds, newline="") as f:
        written = list(csv.DictReader(f))
    assert [w["line"] for w in written] == ["2", "3", "4", "5", "6", "7", "8"]
    assert written[6]["file"] == "blank.png" and written[6]["predicted"] == ""
    assert written[6]["p_happy"] == "" and written[0]["group"] == "a"
    for w in written[:6]:
        probs = [float(w[f"p_{c}"]) for c in EXPRESSIONS]
        assert sum(probs) == pytest.approx(1.0, abs=0.02)
        assert w["predicted"] == EXPRESSIONS[int(np.argmax(probs))]
    right = sum(w["predicted"] == w["expression"] for w in written)
    assert right / 7 == pytest.approx(overall["accuracy"], abs=1e-4)

    # the same photos compared with a model that reads every face as happy, paired
    other = tmp_path / "other.csv"
    with open(other, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(written[0]))
        out.writeheader()
        out.writerows({**w, "predicted": "happy"} for w in written)
    cmp = subprocess.run(
        [sys.executable, "-m", "agent.bench.paired", str(preds), str(other), "--by", "expression"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cmp.returncode == 0, cmp.stderr
    only_a = sum(w["predicted"] == w["expression"] != "happy" for w in written)
    only_b = sum(w["expression"] == "happy" != w["predicted"] for w in written)
    assert only_a > 0  # the all-happy model loses every non-happy face read right
    assert f"right only by A {only_a}, only by B {only_b}, of 7)" in cmp.stdout
    happy_rows = [w for w in written if w["expression"] == "happy"]
    assert f"only by A 0, only by B {only_b}, of {len(happy_rows)})" in cmp.stdout
    assert "expression=neutral" in cmp.stdout and "overall" in cmp.stdout
    # files that do not cover the same photos are refused
    with open(other, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(written[0]))
        out.writeheader()
        out.writerows(written[:3])
    bad = subprocess.run([sys.executable, "-m", "agent.bench.paired", str(preds), str(other)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "cover different photos" in bad.stderr

    table = subprocess.run(
        agent_cmd("evaluate-faces", str(labels), "--by", "group"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert table.returncode == 0 and "group=a" in table.stdout and "overall" in table.stdout


def test_groups_average_f1_over_the_same_classes() -> None:
    # a "sad" read only in group a must not change group b's macro-F1 denominator
    classes = ["sad", "happy", "neutral"]
    b = block(["happy", "neutral"], ["happy", "neutral"], classes)
    assert b["macro_f1"] == pytest.approx(2 / 3, abs=1e-4)  # sad: F1 0 counts in the mean
    assert block(["happy", "neutral"], ["happy", "neutral"])["macro_f1"] == 1.0


def test_evaluate_faces_with_no_usable_row_says_so(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("file,expression,gender\ngone.png,happy\n")  # short row, missing file
    proc = subprocess.run(
        agent_cmd("evaluate-faces", str(labels), "--by", "gender"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "no usable row" in proc.stderr, proc.stderr


def test_evaluate_faces_names_a_missing_column(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,expression\nx.png,happy\n")
    proc = subprocess.run(
        agent_cmd("evaluate-faces", str(labels), "--by", "gender"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no column file, gender" in proc.stderr


def test_evaluate_faces_refuses_predictions_that_would_overwrite_or_clash(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    for header, target, message in (
        ("file,expression", labels, "is the labels file itself"),
        ("file,expression,predicted", tmp_path / "p.csv", "column predicted would clash"),
    ):
        labels.write_text(f"{header}\nx.png,happy\n")
        before = labels.read_text()
        proc = subprocess.run(
            agent_cmd("evaluate-faces", str(labels), "--predictions", str(target)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert labels.read_text() == before  # nothing read, nothing overwritten
