"""Labelled faces through the whole agent: FER2013 PublicTest happy, neutral, sad and angry
faces replayed (camera -> face stage -> windows -> outbox -> a real Mosquitto), and the
mean valence of the published states orders happy > neutral > sad and angry.

Needs the FER2013 reference file, which stays out of the repository: it is found at
$EMOTION_AGENT_DATA/fer2013/fer2013_train_public.npz, else ../shared/data/fer2013/ beside
the checkout; the test skips when it is absent. The session is built into tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.bench.fer_session import build_fer_session
from tests.conftest import ROOT, agent_cmd

DATA = Path(os.environ.get("EMOTION_AGENT_DATA") or ROOT.parent / "shared" / "data")
FER_NPZ = DATA / "fer2013" / "fer2013_train_public.npz"
PER_CLASS = 40  # 6 windows per class; a random 40-face draw orders correctly ~99.9 % of times
LEAD_IN_S = 60.0  # unscored neutral faces first: room for a baseline to form (`calibrating`)
SPEED = 24.0  # 300 s of session in 12.5 s


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.skipif(
    not FER_NPZ.is_file(),
    reason=f"FER2013 reference data absent ({FER_NPZ}): "
    "set EMOTION_AGENT_DATA to the folder that holds fer2013/",
)
def test_replayed_fer_faces_order_valence(tmp_path: Path, broker, subscriber_factory) -> None:
    began = time.monotonic()
    built = build_fer_session(FER_NPZ, tmp_path / "fer", per_class=PER_CLASS, lead_in_s=LEAD_IN_S)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"device: {{name: fer-bench, state_dir: {tmp_path / 'state'}}}\n"
        f"mqtt: {{broker: '{broker.url}'}}\nprivacy: {{consent: true}}\n"
        "runtime: {shutdown_timeout_s: 5}\n"
    )
    sub = subscriber_factory(broker.port, "#")
    proc = subprocess.run(
        agent_cmd("replay", built["path"], "-c", str(cfg), "--speed", str(SPEED)),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    def states(messages: list[tuple[str, bytes, bool]]) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in messages if t.endswith("/state")]

    windows = round(built["duration_s"] / built["window_s"])
    sub.wait_for(lambda m: len(states(m)) >= windows, timeout=15)
    with sub.lock:
        published = states(list(sub.messages))
    assert published, f"no state reached the broker; agent stderr:\n{proc.stderr[-3000:]}"

    # Window bounds are on the replay's rebased clock; the last window ends with the session.
    origin = max(_seconds(s["window"]["end"]) for s in published) - built["duration_s"]
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"valence": [], "arousal": [], "frames": 0, "faces": 0, "windows": 0}
    )
    statuses: dict[str, int] = defaultdict(int)
    for s in published:
        statuses[s["status"]] += 1
        mid = (_seconds(s["window"]["start"]) + _seconds(s["window"]["end"])) / 2 - origin
        seg = next((g for g in built["segments"] if g["start_s"] <= mid < g["end_s"]), None)
        if seg is None:
            continue
        acc = per[seg["class"]]
        evidence = s.get("evidence") or {}
        acc["frames"] += int(evidence.get("frames") or 0)
        acc["faces"] += int(evidence.get("faces") or 0)
        acc["windows"] += 1
        if s["status"] == "ok" and s.get("valence") is not None:
            acc["valence"].append(float(s["valence"]))
            if s.get("arousal") is not None:
                acc["arousal"].append(float(s["arousal"]))

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    analysed = sum(a["frames"] for a in per.values())
    faces = sum(a["faces"] for a in per.values())
    shown = sum(g["faces"] for g in built["segments"]) * built["layout"]["frames_per_face"]
    print(
        f"\nFER2013 PublicTest, {PER_CLASS} faces/class, {built['frames']} frames at "
        f"{SPEED:g}x (first {LEAD_IN_S:g} s unscored): {len(published)} states "
        f"{dict(statuses)}; scored frames analysed "
        f"{analysed}/{shown}, detection rate {faces / max(analysed, 1):.3f}; "
        f"{time.monotonic() - began:.1f} s"
    )
    print(f"{'class':<8} {'valence':>8} {'arousal':>8} {'ok/win':>7} {'frames':>7} {'det':>6}")
    for seg in built["segments"]:
        a = per[seg["class"]]
        print(
            f"{seg['class']:<8} {mean(a['valence']):+8.3f} {mean(a['arousal']):+8.3f} "
            f"{len(a['valence']):>3}/{a['windows']:<3} {a['frames']:>7} "
            f"{a['faces'] / max(a['frames'], 1):6.3f}"
        )

    for seg in built["segments"]:
        assert per[seg["class"]]["valence"], f"no 'ok' window with valence for {seg['class']}"
    v = {c: mean(a["valence"]) for c, a in per.items()}
    assert v["happy"] > v["neutral"] > v["sad"], v
    assert v["neutral"] > v["angry"], v
