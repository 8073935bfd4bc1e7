"""`emotion-agent replay SESSION --plot FILE`: the timeline PNG (agent/plot.py)."""

from __future__ import annotations

import importlib.util
import itertools
import math
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.plot import MISSING, PlotUnavailable, require_matplotlib
from tests.conftest import ROOT, Broker, agent_cmd

DEMO = str(ROOT / "agent" / "sessions" / "synthetic")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
MODALITY_MIXES = [
    list(c) for n in range(4) for c in itertools.combinations(["face", "heart", "eda"], n)
]
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib (extra: plot) missing"
)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payload(i: int, t0: float = 1_714_554_000.0, phase: float = 0.0, **over: Any) -> dict:
    """The i-th 10 s window's state as published, with keys this plot does not know."""
    start, end = t0 + 10 * i, t0 + 10 * (i + 1)
    mods = MODALITY_MIXES[i % len(MODALITY_MIXES)]
    face, heart = "face" in mods, "heart" in mods
    state = {
        "v": 1,
        "device": "testdev",
        "seq": i + 1,
        "ts": iso(end),
        "window": {"start": iso(start), "end": iso(end), "seconds": 10.0},
        "status": "ok" if mods else "insufficient_data",
        "valence": round(math.sin(i / 5 + phase) * 0.9, 3) if face else None,
        "arousal": round(math.cos(i / 7 + phase) * 0.7, 3) if mods else None,
        "stress": round(0.5 + 0.4 * math.sin(i / 9 + phase), 3) if heart else None,
        "emotion": EMOTIONS[i % len(EMOTIONS)] if face else None,
        "confidence": round(0.2 + 0.7 * (i % 5) / 4, 3) if mods else None,
        "modalities": mods,
        "evidence": {"frames": 50 * face, "faces": 48 * face, "beats": 12 * heart},
        # the payload grows (mode, baseline, contributions): unknown keys are ignored
        "mode": "personal",
        "baseline": {"windows": 6, "hr_bpm": 64.0},
        "contributions": {"face": 0.5, "heart": 0.3, "eda": 0.2},
    }
    state.update(over)
    return state


def synthetic(n: int = 48, phase: float = 0.0) -> list[dict]:
    states = [payload(i, phase=phase) for i in range(n)]
    for i in range(3):  # the baseline forming
        states[i] |= {
            "status": "calibrating",
            "valence": None,
            "arousal": None,
            "stress": None,
            "emotion": None,
            "confidence": None,
        }
    states[20] = payload(20, status="insufficient_data", modalities=[], valence=None)
    states[21] = payload(21, status="paused")  # a status this version does not know
    return states


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@needs_matplotlib
def test_timeline_png_of_synthetic_states(tmp_path: Path) -> None:
    from agent.plot import plot_timeline

    out = plot_timeline(synthetic(), str(tmp_path / "t.png"), title="synthetic")
    assert out == tmp_path / "t.png"
    data = out.read_bytes()
    assert png_size(data) == (1200, 840)
    assert b"Matplotlib version" not in data  # no version string: the same bytes everywhere


@needs_matplotlib
def test_timeline_is_deterministic_and_shows_its_input(tmp_path: Path) -> None:
    from matplotlib.image import imread

    from agent.plot import plot_timeline

    a = plot_timeline(synthetic(), tmp_path / "a.png")
    again = plot_timeline(synthetic(), tmp_path / "again.png")
    b = plot_timeline(synthetic(phase=1.5), tmp_path / "b.png")
    assert a.read_bytes() == again.read_bytes()
    pa, pb = imread(a), imread(b)
    assert pa.shape == pb.shape == (840, 1200, 4)
    assert (abs(pa - pb).max(axis=2) > 0.1).sum() > 1000  # the lines moved


@needs_matplotlib
def test_timeline_edge_cases(tmp_path: Path) -> None:
    from agent.plot import plot_timeline

    # one window; all nulls; a gap in time (a restart); a window known only by ts + seconds
    cases = {
        "one": [payload(0)],
        "nulls": [payload(i, status="insufficient_data", modalities=[]) for i in range(6)],
        "gap": [payload(i) for i in (*range(5), *range(30, 40))],
        "ts_only": [{**payload(0), "window": {"seconds": 10.0}}, payload(1)],
        "long": [payload(i) for i in range(0, 720, 12)],  # 2 h: h:mm ticks
    }
    for name, states in cases.items():
        data = plot_timeline(states, tmp_path / f"{name}.png").read_bytes()
        assert png_size(data) == (1200, 840), name
    with pytest.raises(ValueError, match="no state with a readable window"):
        plot_timeline([{"status": "ok"}], tmp_path / "none.png")


def test_missing_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotUnavailable, match=r"pip install 'emotion-agent\[plot\]'"):
        require_matplotlib()


def test_replay_without_matplotlib_exits_2_before_replaying(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from agent.cli import main\n"
        f"raise SystemExit(main(['replay', {DEMO!r}, '--plot', {str(tmp_path / 'x.png')!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"emotion-agent: {MISSING}"
    assert proc.stdout == ""  # nothing replayed, nothing published
    assert not (tmp_path / "x.png").exists()


@needs_matplotlib
def test_replay_plot_into_a_missing_folder_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        agent_cmd("replay", DEMO, "--plot", str(tmp_path / "nope" / "t.png")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no such folder" in proc.stderr
    assert proc.stdout == ""


@needs_matplotlib
def test_replay_plot_without_consent_exits_2(tmp_path: Path) -> None:
    """Nothing would be published, so nothing drawn: said before the replay, not after."""
    proc = subprocess.run(
        agent_cmd("replay", DEMO, "--plot", str(tmp_path / "t.png")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "privacy.consent false" in proc.stderr
    assert proc.stdout == ""


@needs_matplotlib
def test_replay_plot_end_to_end(broker: Broker, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"device: {{name: testdev, state_dir: {tmp_path / 'state'}}}\n"
        f"mqtt: {{broker: {broker.url!r}}}\n"
        "privacy: {consent: true}\n"
        "runtime: {shutdown_timeout_s: 5}\n"
    )
    out = tmp_path / "timeline.png"
    args = ["--speed", "500", "--duration", "120", "--plot", str(out), "-c", str(cfg)]
    proc = subprocess.run(
        agent_cmd("replay", DEMO, *args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    published = [line for line in proc.stdout.splitlines() if line.split(" ")[0].endswith("/state")]
    assert len(published) == 12
    assert f"timeline of 12 state(s) written to {out}" in proc.stderr
    assert png_size(out.read_bytes()) == (1200, 840)
