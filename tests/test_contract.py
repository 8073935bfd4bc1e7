"""The MQTT contract, end to end: real Mosquitto, full replays, a subscriber on `#`.

- every published message validates against its schema (or is a known plain payload);
- no published byte carries raw data (RR intervals, EDA samples, pixels, face boxes);
- consent false -> nothing but availability; audience mode with too few faces -> no state;
- pause and resume over MQTT and by the local file flag, echoed retained;
- the demo's stress segment raises arousal and stress above the calibrated baseline;
- Home Assistant discovery: complete, re-sent when HA comes online, removed when disabled.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest

from agent.contract import validation_errors
from agent.publish.homeassistant import OBJECT_IDS
from tests.conftest import Broker, agent_cmd

pytest.importorskip("jsonschema", reason="schema validation needs jsonschema (test extra)")
skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "agent" / "sessions" / "synthetic"
Messages = list[tuple[str, bytes, bool]]
PREFIX = "emotion-agent/contract"


def make_session(folder: Path, seconds: int = 120, camera_s: int = 120) -> dict[str, Any]:
    """The demo's heart and EDA plus the astronaut photo on camera (1 fps).

    EDA samples get six decimals (a distinctive marker: published numbers are rounded to
    three), so a leak of any sample would be found by its text. Returns what was replayed.
    """
    folder.mkdir()
    heart = (DEMO / "heart.csv").read_text().splitlines()
    kept = [heart[0]] + [ln for ln in heart[1:] if float(ln.split(",")[0]) <= seconds]
    (folder / "heart.csv").write_text("\n".join(kept) + "\n")
    rows = [r for r in csv.DictReader((DEMO / "eda.csv").open()) if float(r["t"]) <= seconds]
    eda = []
    with (folder / "eda.csv").open("w") as f:
        f.write("t,microsiemens\n")
        for i, row in enumerate(rows):
            v = float(row["microsiemens"]) + (i % 899 + 101) * 1e-6
            eda.append(f"{v:.6f}")
            f.write(f"{row['t']},{eda[-1]}\n")
    photo = skimage_data.astronaut()[:384]
    gray = (photo @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    (folder / "face.pgm").write_bytes(b"P5\n512 384\n255\n" + gray.tobytes())
    with (folder / "frames.csv").open("w") as f:
        f.write("t,file,license\n")
        for t in range(camera_s):
            f.write(f"{t}.5,face.pgm,public domain (NASA; via scikit-image)\n")
    (folder / "manifest.yaml").write_text(
        "format: emotion-agent-session\nversion: 1\nstart: 2024-05-01T09:00:00Z\n"
        f"duration_s: {seconds}\nsynthetic: true\ndescription: demo physiology and a photo\n"
        "license: CC0-1.0\nmodalities:\n  heart: {file: heart.csv}\n"
        "  eda: {file: eda.csv, rate_hz: 4}\n  camera: {frames: frames.csv}\n"
    )
    rr = [
        v
        for row in csv.DictReader((DEMO / "heart.csv").open())
        for v in row["rr_ms"].split()
        if float(row["t"]) <= seconds
    ]
    return {"rr": rr, "eda": eda, "pixels": gray}


def write_config(tmp_path: Path, broker: Broker, more: str = "", name: str = "contract") -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        f"device: {{name: {name}, state_dir: {tmp_path / ('state-' + name)}}}\n"
        f"mqtt: {{broker: {broker.url}, reconnect: {{initial_s: 0.2, max_s: 1}}}}\n"
        "runtime: {shutdown_timeout_s: 5}\n" + more
    )
    return cfg


def replay_to_end(session: Path, cfg: Path, speed: float, sub) -> subprocess.CompletedProcess:
    """Replay a session to its end; wait until the subscriber saw the agent go offline."""
    proc = subprocess.run(
        agent_cmd("replay", str(session), "-c", str(cfg), "--speed", str(speed)),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    assert sub.wait_for(
        lambda m: any(t.endswith("/availability") and b"offline" in p for t, p, _ in m)
    )
    return proc


def ha_config_ok(topic: str, payload: bytes) -> list[str]:
    """Home Assistant's requirements for an MQTT discovery config (sensor or switch)."""
    if payload == b"":
        return []  # removal
    c = json.loads(payload)
    problems = [
        f"{topic}: missing {k}"
        for k in ("name", "unique_id", "availability", "device", "origin")
        if k not in c
    ]
    component = topic.split("/")[1]
    if component == "sensor":
        problems += [
            f"{topic}: missing {k}" for k in ("state_topic", "value_template") if k not in c
        ]
        if "expire_after" not in c:
            problems.append(f"{topic}: no expire_after")
        if c.get("device_class") == "enum" and not c.get("options"):
            problems.append(f"{topic}: enum without options")
    elif component == "switch":
        for k in ("command_topic", "state_topic", "payload_on", "payload_off"):
            if k not in c:
                problems.append(f"{topic}: missing {k}")
    else:
        problems.append(f"{topic}: unexpected component {component}")
    dev = c.get("device", {})
    if not dev.get("identifiers") or not dev.get("name"):
        problems.append(f"{topic}: device without identifiers or name")
    for a in c.get("availability", []):
        if a.get("topic") != f"{PREFIX}/availability" or "value_template" not in a:
            problems.append(f"{topic}: availability {a}")
    return problems


def check_contract(messages: Messages, prefix: str = PREFIX) -> dict[str, int]:
    """Validate every message by topic; returns counts per kind."""
    counts: dict[str, int] = {}
    problems: list[str] = []
    for topic, payload, _retain in messages:
        if topic.startswith("homeassistant/"):
            kind = "homeassistant"
            problems += ha_config_ok(topic, payload)
        elif topic == f"{prefix}/paused":
            kind = "paused"
            if payload not in (b"ON", b"OFF"):
                problems.append(f"{topic}: {payload!r}")
        elif topic.startswith(f"{prefix}/set/"):
            kind = "command"  # what the test itself sent
        else:
            kind = topic.removeprefix(f"{prefix}/")
            if kind not in ("state", "summary", "stats", "availability"):
                problems.append(f"unexpected topic {topic}")
                continue
            problems += [f"{topic}: {e}" for e in validation_errors(kind, json.loads(payload))]
        counts[kind] = counts.get(kind, 0) + 1
    assert not problems, "\n".join(problems[:20])
    return counts


def numbers_and_keys(obj: Any, keys: set[str], arrays: list[list]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            keys.add(k)
            numbers_and_keys(v, keys, arrays)
    elif isinstance(obj, list):
        arrays.append(obj)
        for v in obj:
            numbers_and_keys(v, keys, arrays)


def test_full_replay_publishes_only_valid_aggregates(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    raw = make_session(tmp_path / "session")
    sub = subscriber_factory(broker.port, "#", client_id="contract-all")
    cfg = write_config(
        tmp_path,
        broker,
        "privacy: {consent: true}\npublish: {vitals: true, stats_interval_s: 1}\n"
        "baseline: {calibration_s: 30}\nhomeassistant: {enabled: true}\n",
    )
    replay_to_end(tmp_path / "session", cfg, 8, sub)
    messages = list(sub.messages)
    counts = check_contract(messages)
    print("validated:", counts)
    assert counts["state"] == 12 and counts["summary"] == 2
    assert counts["homeassistant"] == len(OBJECT_IDS) and counts["paused"] == 1
    assert counts.get("stats", 0) >= 3 and counts["availability"] == 2
    states = [json.loads(p) for t, p, _ in messages if t == f"{PREFIX}/state"]
    assert [s["seq"] for s in states] == list(range(1, 13))
    # with a skin-conductance level, stress comes from skin (agent/affect/stress_model.json)
    assert any(s["modalities"] == ["face", "eda"] for s in states)
    assert all(s["emotion"] is not None for s in states if s["status"] == "ok")

    # -- no raw data in any byte that left the agent --
    rr = [v for v in raw["rr"] if len(re.sub(r"\D", "", v)) >= 6]  # distinctive values only
    assert len(rr) > 100 and len(raw["eda"]) > 400
    assert_nothing_raw(
        messages, rr + raw["eda"], [raw["pixels"][r, 200:216] for r in (100, 150, 200)]
    )


def assert_nothing_raw(messages: Messages, samples: list[str], pixel_runs: list) -> None:
    """No raw sample's text, no pixel run (as bytes or as text), no coordinate-like key and
    no numeric array in any byte that left the agent: only named aggregates."""
    blob = b"\n".join(p for _, p, _ in messages)
    hits = [v for v in samples if v.encode() in blob]
    assert not hits, f"raw samples published: {hits[:5]}"
    keys: set[str] = set()
    arrays: list[list] = []
    for _topic, p, _ in messages:
        if p[:1] == b"{":
            numbers_and_keys(json.loads(p), keys, arrays)
    forbidden = {"box", "bbox", "boxes", "keypoints", "landmarks", "x", "y", "width", "height"}
    forbidden |= {"rr", "rr_ms", "samples", "microsiemens", "pixels", "image", "frame"}
    assert not keys & forbidden, keys & forbidden
    numeric_arrays = [a for a in arrays if any(isinstance(v, int | float) for v in a)]
    assert numeric_arrays == []  # no series, no coordinates: only named aggregates
    for run in pixel_runs:  # rows through a face
        assert bytes(run) not in blob
        assert ",".join(map(str, run)).encode() not in blob


def test_consent_false_publishes_nothing_but_availability(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    make_session(tmp_path / "session", seconds=40, camera_s=40)
    sub = subscriber_factory(broker.port, "#", client_id="no-consent")
    cfg = write_config(
        tmp_path,
        broker,
        "privacy: {consent: false}\npublish: {stats_interval_s: 1}\n"
        "homeassistant: {enabled: true}\n",
    )
    proc = replay_to_end(tmp_path / "session", cfg, 8, sub)
    assert {t for t, _, _ in sub.messages} == {f"{PREFIX}/availability"}
    assert "4 withheld (privacy.consent is false)" in proc.stderr


@pytest.mark.parametrize(("min_faces", "published"), [(2, False), (1, True)])
def test_audience_mode_needs_k_faces_and_publishes_group_aggregates(
    broker: Broker, tmp_path: Path, subscriber_factory, min_faces: int, published: bool
) -> None:
    make_session(tmp_path / "session", seconds=30, camera_s=30)  # one face per frame
    sub = subscriber_factory(broker.port, f"{PREFIX}/#", client_id="audience")
    cfg = write_config(
        tmp_path,
        broker,
        f"privacy: {{consent: true, mode: audience, min_faces: {min_faces}}}\n",
    )
    proc = replay_to_end(tmp_path / "session", cfg, 6, sub)
    states = [json.loads(p) for t, p, _ in sub.messages if t == f"{PREFIX}/state"]
    if not published:
        assert states == []
        assert "3 withheld (fewer than 2 faces, audience mode)" in proc.stderr
        return
    assert len(states) == 3
    for s in states:
        assert s["mode"] == "audience" and s["modalities"] == ["face"]  # bodies ignored
        assert "vitals" not in s and s["contributions"]["body"] is None
        assert "beats" not in s["evidence"] and s["evidence"]["faces_max"] == 1
    check_contract(list(sub.messages))


def _publish(port: int, topic: str, payload: bytes) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="commander")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def _last_paused(m: Messages) -> bytes | None:
    echoes = [p for t, p, _ in m if t == f"{PREFIX}/paused"]
    return echoes[-1] if echoes else None


def test_pause_and_resume_over_mqtt_and_by_file(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    cfg = write_config(
        tmp_path,
        broker,
        f"sources: {{replay: {{session: {DEMO}, speed: 10}}}}\n"
        "windows: {state_s: 1}\nbaseline: {calibration_s: 5}\nprivacy: {consent: true}\n",
    )
    sub = subscriber_factory(broker.port, f"{PREFIX}/#", client_id="pauser")
    agent = subprocess.Popen(agent_cmd("run", "-c", str(cfg)), stderr=subprocess.PIPE, text=True)

    def n_states(m: Messages | None = None) -> int:
        if m is None:
            with sub.lock:
                m = list(sub.messages)
        return sum(1 for t, _, _ in m if t == f"{PREFIX}/state")

    try:
        assert sub.wait_for(lambda m: _last_paused(m) == b"OFF")  # echoed on connect
        assert sub.wait_for(lambda m: n_states(m) >= 3)
        _publish(broker.port, f"{PREFIX}/set/paused", b"ON")
        assert sub.wait_for(lambda m: _last_paused(m) == b"ON")
        time.sleep(0.5)  # a window closing as the command arrived may still go out
        paused_at = n_states()
        time.sleep(2.5)  # 2.5 windows of 1 s
        assert n_states() == paused_at, "a state was published while paused"
        _publish(broker.port, f"{PREFIX}/set/paused", b"OFF")
        assert sub.wait_for(lambda m: _last_paused(m) == b"OFF")
        assert sub.wait_for(lambda m: n_states(m) >= paused_at + 2)

        flag = tmp_path / "state-contract" / "paused"
        subprocess.run(agent_cmd("pause", "-c", str(cfg)), check=True, timeout=30)
        assert flag.exists()  # the local switch
        assert sub.wait_for(lambda m: _last_paused(m) == b"ON", 10)
        _publish(broker.port, f"{PREFIX}/set/paused", b"OFF")  # cannot lift the local pause
        time.sleep(1.5)
        assert _last_paused(list(sub.messages)) == b"ON"
        held = n_states()
        time.sleep(1.5)
        assert n_states() == held
        subprocess.run(agent_cmd("resume", "-c", str(cfg)), check=True, timeout=30)
        assert not flag.exists()
        assert sub.wait_for(lambda m: _last_paused(m) == b"OFF", 10)
        assert sub.wait_for(lambda m: n_states(m) > held)

        _publish(broker.port, f"{PREFIX}/set/paused", b"sideways")  # rejected, counted
        time.sleep(0.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=20)
    assert agent.returncode == 0, err
    assert "rejected: bad_value" in err
    assert "resume asked over MQTT, but the local pause file" in err
    check_contract(list(sub.messages))
    retained = [(t, p) for t, p, r in sub.messages if t == f"{PREFIX}/paused"]
    assert retained[-1][1] == b"OFF"


def test_stress_segment_raises_arousal_and_stress_above_baseline(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = write_config(
        tmp_path, broker, "privacy: {consent: true}\nbaseline: {calibration_s: 60}\n"
    )
    proc = subprocess.run(
        agent_cmd("replay", str(DEMO), "-c", str(cfg), "--speed", "100"),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    states = [
        json.loads(line.split(" ", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith(f"{PREFIX}/state ")
    ]
    assert len(states) == 60

    def mean(key: str, lo: float, hi: float) -> float:
        vals = [
            s[key]
            for i, s in enumerate(states)
            if lo <= i * 10 < hi and s["status"] == "ok" and s[key] is not None
        ]
        assert len(vals) >= 5
        return float(np.mean(vals))

    rest_a, rest_s = mean("arousal", 90, 240), mean("stress", 90, 240)
    stress_a, stress_s = mean("arousal", 300, 420), mean("stress", 300, 420)
    print(
        f"rest arousal {rest_a:.2f} stress {rest_s:.2f}; "
        f"stress segment arousal {stress_a:.2f} stress {stress_s:.2f}"
    )
    # the synthetic level rises ~1.6x: stress 0.5 is about 1.7x the baseline level
    assert stress_a > rest_a + 0.3 and stress_s > rest_s + 0.15
    assert abs(rest_a) < 0.3 and rest_s < 0.4  # near the baseline at rest
    assert states[-1]["baseline"]["state"] == "ready"


def test_home_assistant_discovery_resent_and_removed(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    ha = "homeassistant/+/emotion_agent_contract/+/config"
    sub = subscriber_factory(broker.port, ha, client_id="ha")
    cfg = write_config(
        tmp_path,
        broker,
        f"sources: {{replay: {{session: {DEMO}, speed: 1}}}}\n"
        "privacy: {consent: true}\nhomeassistant: {enabled: true}\n",
    )
    agent = subprocess.Popen(agent_cmd("run", "-c", str(cfg)), stderr=subprocess.PIPE, text=True)
    try:
        assert sub.wait_for(lambda m: len(m) == len(OBJECT_IDS))
        check_contract(list(sub.messages))
        configs = {t: json.loads(p) for t, p, _ in sub.messages}
        emotion = next(c for t, c in configs.items() if t.endswith("/emotion/config"))
        assert emotion["device_class"] == "enum" and len(emotion["options"]) == 7
        switch = next(c for t, c in configs.items() if t.startswith("homeassistant/switch/"))
        assert switch["command_topic"] == f"{PREFIX}/set/paused"
        assert switch["state_topic"] == f"{PREFIX}/paused"
        assert len({c["unique_id"] for c in configs.values()}) == len(OBJECT_IDS)
        _publish(broker.port, "homeassistant/status", b"online")  # HA restarted
        assert sub.wait_for(lambda m: len(m) == 2 * len(OBJECT_IDS))
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=20)
    assert agent.returncode == 0
    late = subscriber_factory(broker.port, ha, client_id="ha-late")
    assert late.wait_for(lambda m: len(m) == len(OBJECT_IDS))
    assert all(r for _, _, r in late.messages)  # retained

    cfg.write_text(cfg.read_text().replace("enabled: true", "enabled: false"))
    agent = subprocess.Popen(agent_cmd("run", "-c", str(cfg)), stderr=subprocess.PIPE, text=True)
    try:
        assert late.wait_for(lambda m: sum(1 for _, p, _ in m if p == b"") == len(OBJECT_IDS))
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=20)
    gone = subscriber_factory(broker.port, ha, client_id="ha-gone")
    time.sleep(1.0)
    assert gone.messages == []  # nothing retained any more


def test_fleet_topics_cross_a_mosquitto_bridge_unchanged(
    tmp_path: Path, subscriber_factory
) -> None:
    """Two devices publish to a local broker bridged to a central one (docs/mqtt.md's bridge
    config); `emotion-agent/+/state` on the central broker sees both, and a pause command
    sent centrally reaches the device through the bridge."""
    (tmp_path / "central").mkdir()
    (tmp_path / "local").mkdir()
    central = Broker(tmp_path / "central")
    central.start()
    local = Broker(
        tmp_path / "local",
        f"connection central\naddress 127.0.0.1:{central.port}\ncleansession false\n"
        "restart_timeout 1\ntopic emotion-agent/# out 1\ntopic emotion-agent/+/set/# in 1\n",
    )
    local.start()
    agents = []
    try:
        sub = subscriber_factory(central.port, "emotion-agent/+/state", client_id="centre")
        echo = subscriber_factory(central.port, "emotion-agent/+/paused", client_id="centre-2")
        for name in ("kitchen", "hall"):
            cfg = write_config(
                tmp_path,
                local,
                f"sources: {{replay: {{session: {DEMO}, speed: 20}}}}\n"
                "windows: {state_s: 1}\nprivacy: {consent: true}\n",
                name=name,
            )
            log = (tmp_path / f"{name}.log").open("w")
            agents.append(subprocess.Popen(agent_cmd("run", "-c", str(cfg)), stderr=log))
        assert sub.wait_for(
            lambda m: (
                {t for t, _, _ in m} >= {"emotion-agent/kitchen/state", "emotion-agent/hall/state"}
            ),
            30,
        )
        states = [json.loads(p) for _, p, _ in sub.messages]
        assert all(not validation_errors("state", s) for s in states)
        _publish(central.port, "emotion-agent/hall/set/paused", b"ON")  # down the bridge
        assert echo.wait_for(
            lambda m: ("emotion-agent/hall/paused", b"ON") in [(t, p) for t, p, _ in m], 20
        )
    finally:
        for a in agents:
            a.send_signal(signal.SIGTERM)
        for a in agents:
            a.wait(20)
        local.stop()
        central.stop()


@pytest.mark.parametrize("name", ["state", "summary", "stats", "availability"])
def test_schema_command_prints_the_shipped_schema(name: str) -> None:
    out = subprocess.run(
        agent_cmd("schema", name), capture_output=True, text=True, timeout=30, check=True
    ).stdout
    printed = json.loads(out)
    assert printed["$id"].endswith(f"/{name}-v1.json")
    assert printed["properties"]["v"] == {
        "const": 1,
        "description": "Payload version: a consumer refuses versions it does not know.",
    }
    assert validation_errors(name, {"v": 2}) != []  # a schema that can fail
