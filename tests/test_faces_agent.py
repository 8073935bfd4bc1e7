"""Frames through the whole agent: replayed photos -> face stage -> state with valence."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import agent_cmd

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")


def write_session(folder: Path, seconds: int = 40, fps: float = 2.0) -> None:
    """A session whose camera shows the astronaut photo (public domain, NASA) for the first
    half and an empty grey wall for the second."""
    folder.mkdir()
    photo = skimage_data.astronaut()[:384]  # 512x384, 4:3 like a camera
    gray = (photo @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    face = folder / "face.pgm"
    face.write_bytes(b"P5\n512 384\n255\n" + gray.tobytes())
    (folder / "wall.pgm").write_bytes(b"P5\n512 384\n255\n" + bytes([128]) * (512 * 384))
    rows = ["t,file,license"]
    for i in range(int(seconds * fps)):
        t = i / fps
        name = "face.pgm" if t < seconds / 2 else "wall.pgm"
        lic = "public domain (NASA; via scikit-image)" if name == "face.pgm" else "CC0"
        rows.append(f"{t:.3f},{name},{lic}")
    (folder / "frames.csv").write_text("\n".join(rows) + "\n")
    (folder / "manifest.yaml").write_text(
        f"format: emotion-agent-session\nversion: 1\nstart: 2026-01-01T00:00:00Z\n"
        f"duration_s: {seconds}\nsynthetic: true\ndescription: test photo then a wall\n"
        f"license: CC0\nmodalities:\n  camera: {{frames: frames.csv}}\n"
    )


def test_replayed_faces_give_valence_and_emotion(tmp_path: Path) -> None:
    write_session(tmp_path / "session")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"device: {{name: cam, state_dir: {tmp_path / 'state'}}}\n"
        "mqtt: {broker: 'mqtt://127.0.0.1:9'}\nprivacy: {consent: true}\n"
        "runtime: {shutdown_timeout_s: 2}\n"
    )
    proc = subprocess.run(
        agent_cmd("replay", str(tmp_path / "session"), "-c", str(cfg), "--speed", "4"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.split(" ", 1) for line in proc.stdout.splitlines()]
    states = [json.loads(p) for t, p in lines if t.endswith("/state")]
    summaries = [json.loads(p) for t, p in lines if t.endswith("/summary")]
    assert len(states) == 4
    assert len(summaries) == 1 and summaries[0]["states"]["total"] == 4
    first, last = states[0], states[-1]
    assert first["modalities"] == ["face"] and first["status"] == "ok"
    assert first["emotion"] == "happy" and first["valence"] > 0.5  # he smiles
    assert first["evidence"]["faces"] >= 1
    assert last["evidence"]["faces"] == 0 and last["status"] == "insufficient_data"
    assert last["evidence"]["frames"] > 0  # the wall was looked at
    raw = proc.stdout
    assert "box" not in raw and "keypoints" not in raw  # no positions leave the stage
