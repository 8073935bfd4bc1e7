"""The README's first command: the demo shows emotion from a real face and a real body.

The bundled session (agent/sessions/demo) is built by agent/sessions/build_demo.py from
../shared; the rebuild test runs only where that folder exists, everything else runs on a
fresh clone.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from agent.demo import Part, session_parts, states_by_part, summary_lines
from agent.publish.homeassistant import OBJECT_IDS
from agent.sessions import build_demo
from agent.sources.session import demo_session_path, load_session
from tests.conftest import ROOT, Broker, agent_cmd
from tests.test_contract import assert_nothing_raw

DEMO = demo_session_path()
SHARED = ROOT.parent / "shared"
PREFIX = "emotion-agent/demo"

pytestmark = pytest.mark.timeout(240)


def test_demo_session_is_real_small_and_says_what_it_is() -> None:
    session = load_session(DEMO)
    assert session.synthetic is False
    assert set(session.modalities) == {"heart", "eda", "camera"}
    assert "COMPOSITE of two real recordings of two different people" in session.description
    for cite in ("doi:10.1109/TAFFC.2014.2336244", "doi:10.3390/s22218135"):
        assert cite in session.description
    frames = session.frame_rows()
    assert len(frames) == session.duration_s * build_demo.FPS
    assert all("Database Contents License 1.0" in f.license for f in frames)
    files = {f.file for f in frames}
    for f in list(files)[:10]:
        image = session.load_frame(next(r for r in frames if r.file == f))
        assert image.shape == (96, 128) and image.dtype == np.uint8  # the lores Y plane
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < 2_000_000
    parts = session_parts()
    assert [p.name for p in parts] == ["rest", "stress task", "relief"]
    assert parts[-1].end_s == session.duration_s
    # every shipped media file is named in NOTICE with its licence
    notice = (ROOT / "NOTICE.md").read_text()
    for needle in ("CREMA-D", "Database Contents License", "Stress-Predict", "MIT"):
        assert needle in notice


@pytest.mark.skipif(
    not (SHARED / "media" / "cremad_1001").is_dir(), reason="needs ../shared (the inputs)"
)
def test_build_demo_rebuilds_the_shipped_session_byte_for_byte(tmp_path: Path) -> None:
    out = build_demo.build(
        SHARED / "media" / "cremad_1001" / "frames_10fps",
        SHARED / "data" / "stress" / "stress_predict",
        tmp_path / "demo",
    )
    shipped = {p.relative_to(DEMO): p.read_bytes() for p in DEMO.rglob("*") if p.is_file()}
    rebuilt = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert shipped.keys() == rebuilt.keys()
    assert [k for k in shipped if shipped[k] != rebuilt[k]] == []


def test_summary_lines_report_parts_and_stress() -> None:
    def state(i: int, emotion: str | None, stress: float) -> dict:
        start = f"2026-01-01T00:{i // 6:02d}:{(i % 6) * 10:02d}.000Z"
        end = f"2026-01-01T00:{(i + 1) // 6:02d}:{((i + 1) % 6) * 10:02d}.000Z"
        return {
            "status": "ok",
            "emotion": emotion,
            "valence": None if emotion is None else 0.1,
            "stress": stress,
            "window": {"start": start, "end": end},
        }

    states = [state(i, "happy" if i < 3 else None, 0.2 + 0.1 * i) for i in range(6)]
    parts = [
        Part("calm", 0, 30, ("neutral",), ""),
        Part("busy", 30, 60, ("angry",), ""),
    ]
    lines = summary_lines(states, parts)
    assert lines[0] == "6 states: 6 ok"
    assert "3 of 6 ok states carry an emotion and a valence" in lines[1]
    assert "happy 3" in lines[1]
    assert lines[2] == "stress ranged 0.20 to 0.70"
    calm, busy = lines[4], lines[5]
    assert calm.startswith("calm (0-30 s)") and "0.30" in calm and "happy" in calm
    assert busy.startswith("busy (30-60 s)") and "0.60" in busy and busy.endswith("3")
    assert summary_lines([], parts) == ["no state was published"]


def test_demo_shows_emotion_and_stress_on_a_real_broker(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    """The README's demo, to a real Mosquitto, with Home Assistant discovery and a plot."""
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    sub = subscriber_factory(broker.port, "#", client_id="demo-all")
    plot = tmp_path / "timeline.png"
    proc = subprocess.run(
        agent_cmd(
            "demo",
            "--broker",
            broker.url,
            "--speed",
            "40",
            "--homeassistant",
            "--plot",
            str(plot),
            "--state-dir",
            str(tmp_path / "state"),
        ),
        capture_output=True,
        text=True,
        timeout=200,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sub.wait_for(
        lambda m: any(t == f"{PREFIX}/availability" and b"offline" in p for t, p, _ in m)
    )
    messages = list(sub.messages)
    states = [json.loads(p) for t, p, _ in messages if t == f"{PREFIX}/state"]
    assert len(states) == 48 and [s["seq"] for s in states] == list(range(1, 49))

    # the headline: emotion and valence from the face, at least three emotions
    ok = [s for s in states if s["status"] == "ok"]
    both = [s for s in ok if s["emotion"] is not None and s["valence"] is not None]
    assert len(both) >= 0.5 * len(ok) > 0
    assert len({s["emotion"] for s in both}) >= 3
    assert "face" in Counter(m for s in ok for m in s["modalities"])

    # stress rises during the task and falls after it
    parts = session_parts()
    by_part = {
        part.name: [s["stress"] for s in mine if s["stress"] is not None]
        for part, mine in zip(parts, states_by_part(states, parts), strict=True)
    }
    mean = {k: sum(v) / len(v) for k, v in by_part.items() if v}
    assert mean["stress task"] > mean["rest"] + 0.1, mean
    assert mean["stress task"] > mean["relief"] + 0.1, mean

    # the summary in words, and the plot
    assert "demo summary" in proc.stderr
    assert re.search(r"\d+ of \d+ ok states carry an emotion and a valence", proc.stderr)
    assert "stress ranged" in proc.stderr and "stress task (180-360 s)" in proc.stderr
    assert "--homeassistant-remove" in proc.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Home Assistant discovery: one retained config per entity, the Emotion an enum
    configs = {t: json.loads(p) for t, p, _ in messages if t.startswith("homeassistant/") and p}
    assert len(configs) == len(OBJECT_IDS)
    emotion = next(c for t, c in configs.items() if t.endswith("/emotion/config"))
    assert emotion["device_class"] == "enum" and "neutral" in emotion["options"]
    assert emotion["state_topic"] == f"{PREFIX}/state"

    # nothing raw left the agent: no RR, no EDA sample, no pixels, no coordinates
    rr = [
        v
        for row in csv.DictReader((DEMO / "heart.csv").open())
        for v in row["rr_ms"].split()
        if len(re.sub(r"\D", "", v)) >= 6
    ]
    eda = [
        row["microsiemens"]
        for row in csv.DictReader((DEMO / "eda.csv").open())
        if len(re.sub(r"\D", "", row["microsiemens"])) >= 6
    ]
    assert len(rr) > 30 and len(eda) > 1000
    session = load_session(DEMO)
    face = session.load_frame(session.frame_rows()[0])
    assert_nothing_raw(messages, rr + eda, [face[r, 56:72] for r in (30, 45, 60)])

    # and the device can be removed from Home Assistant in one command
    removed = subprocess.run(
        agent_cmd("demo", "--homeassistant-remove", "--broker", broker.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert removed.returncode == 0, removed.stderr
    import paho.mqtt.publish as publish

    late = subscriber_factory(broker.port, "#", client_id="demo-late")
    # retained messages reach a new subscriber before anything published after it joined
    publish.single("done/x", b"1", hostname="127.0.0.1", port=broker.port)
    assert late.wait_for(lambda m: any(t == "done/x" for t, _, _ in m))
    kept = [t for t, p, retained in late.messages if retained and p]
    assert not [t for t in kept if t.startswith("homeassistant/")], kept


def test_faces_reads_png_and_jpeg_out_of_the_box(tmp_path: Path) -> None:
    """`emotion-agent faces` on the bundled PNG frame and the same frame as JPEG."""
    from PIL import Image

    png = DEMO / "frames" / "happy_0033.png"
    jpeg = tmp_path / "happy.jpg"
    Image.open(png).save(jpeg, format="JPEG", quality=92)
    proc = subprocess.run(
        agent_cmd("faces", str(png), str(jpeg)), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert [len(r["faces"]) for r in results] == [1, 1]
    probs = [r["faces"][0]["expression"] for r in results]
    assert all(abs(sum(p.values()) - 1.0) < 0.05 for p in probs)
    assert all(max(p, key=p.get) == "happy" for p in probs)  # the actor's smile
