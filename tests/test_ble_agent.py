"""The whole agent with a Bluetooth strap: fake BlueZ -> real bleak -> windows -> real broker."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import time
from pathlib import Path

from tests.conftest import Broker, agent_cmd
from tests.fake_bluez import FakeBluez, fake_bluez_fixture  # noqa: F401
from tests.test_ble import STRAP, strap
from tests.test_mqtt_e2e import states

TOPIC = "emotion-agent/ble/state"


def hr_packet(hr: int, rr_ms: list[float]) -> bytes:
    """Heart Rate Measurement: contact detected, uint8 HR, RR in 1/1024 s."""
    flags = 0x16  # contact supported+detected, RR present
    return bytes([flags, hr]) + b"".join(struct.pack("<H", round(r * 1.024)) for r in rr_ms)


def test_strap_notifications_reach_published_states(
    fake_bluez: FakeBluez, broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    fake_bluez.add_device(strap())
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"""
device: {{name: ble, state_dir: {tmp_path / "state"}}}
mqtt: {{broker: {broker.url}}}
sources:
  heart:
    match: {{name: "Polar H10"}}
    reconnect_initial_s: 0.1
    reconnect_max_s: 0.5
windows: {{state_s: 2, min_beats: 2}}
baseline: {{calibration_s: 2}}
privacy: {{consent: true}}
publish: {{vitals: true}}
"""
    )
    sub = subscriber_factory(broker.port, "emotion-agent/ble/state")
    agent = subprocess.Popen(agent_cmd("run", "-c", str(cfg)), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not fake_bluez.is_notifying(STRAP, "2a37"):
            time.sleep(0.1)
        assert fake_bluez.is_notifying(STRAP, "2a37"), "the agent never subscribed to 0x2A37"
        # 60 bpm with RR alternating 980/1020 ms (RMSSD 40 ms), once with a burst of garbage,
        # for as long as it takes (a busy machine calibrates late): a strap keeps notifying

        def with_heart(m):
            return [s for s in states(m, TOPIC) if "heart" in s["modalities"]]

        deadline = time.monotonic() + 90
        sent = 0
        ok = False
        while not ok and time.monotonic() < deadline:
            fake_bluez.notify(STRAP, "2a37", hr_packet(60, [980.0, 1020.0]))
            if sent == 3:
                fake_bluez.notify(STRAP, "2a37", b"\x10", b"\xff\xff\xff", b"")
            sent += 1
            ok = sub.wait_for(lambda m: len(with_heart(m)) >= 1, timeout=0.5)
        if not ok:
            agent.send_signal(signal.SIGTERM)
            print(agent.communicate(timeout=20)[1])
            print(states(sub.messages, TOPIC))
        assert ok
        s = with_heart(sub.messages)[0]
        assert s["evidence"]["beats"] >= 2
        assert abs(s["vitals"]["hr_bpm"] - 60.0) < 1.0
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
    err = agent.stderr.read() if agent.stderr else ""
    assert "Traceback" not in err, err
    json.dumps(s)
