"""Smoke test of `python -m agent.bench.faces_bench`: a few frames, no fer peer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.bench.faces_bench import installed_runtimes

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(not installed_runtimes(), reason="no TFLite runtime installed"),
    pytest.mark.skipif(
        importlib.util.find_spec("skimage") is None, reason="scikit-image (the frames) missing"
    ),
]


def test_bench_runs_each_runtime_and_finds_the_smiling_astronaut() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.bench.faces_bench", "--frames=3", "--warmup=1", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## Speed" in proc.stderr  # the table goes to stderr when --json is given
    report = json.loads(proc.stdout)
    assert set(report["pipelines"]) == {f"ours/{rt}" for rt in installed_runtimes()}
    assert report["comparison"] == {}
    for p in report["pipelines"].values():
        assert p["threads"] == 1
        assert p["ru_maxrss_mb"] > 0
        for fmt in ("main", "lores"):
            f = p["formats"][fmt]
            assert f["frames"] == 3
            assert 0 < f["ms_median"] <= f["ms_p95"] + 1e-9
            assert f["fps_sustained"] > 0
            assert f["detections"]["original"]["faces"] == 1
            assert f["detections"]["original"]["top"] == "happy"
