"""The runtime: systemd notifications, supervision, consent gate, stats."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import Broker, agent_cmd, availability_state
from tests.test_mqtt_e2e import DEMO, states, write_config


def _notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def _drain(sock: socket.socket, until: float, stop_on: str | None = None) -> list[str]:
    got: list[str] = []
    while time.monotonic() < until:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if stop_on and stop_on in got[-1]:
            break
    return got


def test_sd_notify_sequence_with_a_real_socket(broker: Broker, tmp_path: Path) -> None:
    """READY=1 after the MQTT session is up, WATCHDOG=1 while healthy, STOPPING=1 on SIGTERM."""
    cfg = write_config(tmp_path, broker.url, speed=10)
    sock_path = tmp_path / "notify.sock"
    sock = _notify_socket(sock_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    agent = subprocess.Popen(
        agent_cmd("run", "-c", str(cfg)), env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        first = _drain(sock, time.monotonic() + 20, stop_on="READY=1")
        assert first and "READY=1" in first[-1], first
        assert "STATUS=running: heart, eda; MQTT connected" in first[-1]
        healthy = _drain(sock, time.monotonic() + 2.0)
        pings = [m for m in healthy if m == "WATCHDOG=1"]
        assert len(pings) >= 3, healthy  # every 0.2 s; at least 3 in 2 s even on a busy machine
        agent.send_signal(signal.SIGTERM)
        last = _drain(sock, time.monotonic() + 10, stop_on="STOPPING=1")
        assert any("STOPPING=1" in m for m in last), last
        assert agent.wait(15) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        sock.close()


def test_no_consent_publishes_availability_only(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    cfg = write_config(tmp_path, broker.url, speed=300)
    cfg.write_text(cfg.read_text().replace("privacy: {consent: true}", "privacy: {consent: false}"))
    sub = subscriber_factory(broker.port, "emotion-agent/testdev/#")
    proc = subprocess.run(
        agent_cmd("replay", DEMO, "-c", str(cfg), "--duration", "60"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert sub.wait_for(lambda m: any(availability_state(p) == b"offline" for _, p, _ in m))
    assert states(sub.messages) == []
    assert "/state " not in proc.stdout
    assert "6 withheld (privacy.consent is false)" in proc.stderr
    assert {t for t, _, _ in sub.messages} == {"emotion-agent/testdev/availability"}


def test_stats_are_published(broker: Broker, tmp_path: Path, subscriber_factory) -> None:
    cfg = write_config(tmp_path, broker.url, speed=20, more="publish: {stats_interval_s: 1}")
    sub = subscriber_factory(broker.port, "emotion-agent/testdev/stats")
    proc = subprocess.Popen(agent_cmd("run", "-c", str(cfg)), stderr=subprocess.PIPE, text=True)
    try:
        assert sub.wait_for(lambda m: len(m) >= 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    stats = json.loads(sub.messages[-1][1])
    assert stats["device"] == "testdev"
    assert stats["mqtt"]["connected"] is True
    assert stats["outbox"]["dropped"] == 0
    assert set(stats["sources"]) == {"heart", "eda"}
    assert stats["tasks"]["windows"]["state"] == "running"
    assert stats["sources"]["heart"]["events"] > 0
