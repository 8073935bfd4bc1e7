"""`emotion-agent analyze`: features of a recording as JSON, clear errors on bad files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from tests.conftest import agent_cmd


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent_cmd("analyze", *args), capture_output=True, text=True, timeout=60)


def test_rr_and_eda_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rr = 800 + 40 * np.sin(2 * np.pi * 0.25 * np.arange(400) * 0.8) + rng.normal(0, 5, 400)
    (tmp_path / "rr.csv").write_text("rr_ms\n" + "\n".join(f"{x:.1f}" for x in rr) + "\n")
    eda = 2.0 + 0.001 * np.arange(4 * 300)
    (tmp_path / "eda.csv").write_text("\n".join(f"{x:.4f}" for x in eda))
    proc = run(
        "--rr",
        str(tmp_path / "rr.csv"),
        "--eda",
        str(tmp_path / "eda.csv"),
        "--eda-rate",
        "4",
        "--window",
        "150",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    windows = out["rr"]["windows"]
    assert len(windows) == 3  # 320 s: two of 150 s and the 20 s remainder
    f = windows[0]["features"]
    assert abs(f["mean_rr"] - 800) < 5
    assert f["hf"] > f["lf"]  # 0.25 Hz modulation is respiratory (HF)
    assert "lf" in windows[2]["features"]["missing"]  # 20 s is too short for LF: marked
    skin = out["eda"]["windows"][0]["features"]
    assert abs(skin["scl_slope_us_per_min"] - 0.24) < 0.02  # 0.001 uS per 0.25 s
    raw = json.loads(run("--rr", str(tmp_path / "rr.csv"), "--no-correction").stdout)
    assert raw["rr"]["artifact_correction"] is False


def test_bad_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "rr.csv").write_text("rr\n800\n810\nabc\n")
    proc = run("--rr", str(tmp_path / "rr.csv"))
    assert proc.returncode == 2
    assert "rr.csv, line 4: expected an RR interval in ms, got 'abc'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("--eda", str(tmp_path / "rr.csv"))
    assert proc.returncode == 2 and "--eda-rate" in proc.stderr
