"""Fault injection: what the agent survives, each test printing the counts it checked.

The group is `pytest -m faults` (add `-s` to see the counts). It is part of the default run
and short: replays run at 20-50x, outages last a second or two. Real things throughout: a
real Mosquitto killed with SIGKILL, the agent as a process killed with SIGKILL, real bleak
against the fake BlueZ on a private D-Bus, the camera source against the picamera2
stand-in, real TFLite models. Unit-level faults live beside their units and carry the same
marker (test_ble.py: link loss, connect errors, malformed storms per source; test_camera.py:
camera failures; test_outbox.py: bounds; test_mqtt_e2e.py: clean restarts).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.runtime import Agent
from agent.sdnotify import Notifier
from tests.conftest import ROOT, Broker, agent_cmd, free_port
from tests.fake_bluez import fake_bluez_fixture  # noqa: F401  (the `fake_bluez` fixture)
from tests.test_mqtt_e2e import (  # noqa: F401  (replay_cmd is a fixture)
    DEMO,
    _delivered_in_order,
    availability,
    replay_cmd,
    states,
    write_config,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

TOPIC = "emotion-agent/testdev/state"
AVAILABILITY = "emotion-agent/testdev/availability"


@pytest.fixture
def crashing_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker that saves its state after every change (autosave_on_changes), so a SIGKILL
    loses nothing it has saved; the kill itself waits until the broker holds nothing
    acknowledged and unsaved (`_kill_with_nothing_unsaved`): what these tests measure is
    the agent, not how much a broker forgets between PUBACK and autosave."""
    b = Broker(tmp_path, extra_conf="autosave_on_changes true\nautosave_interval 1\n")
    b.start()
    yield b
    b.stop()


def _agent_config(tmp_path: Path, broker_url: str, **sections: Any) -> AgentConfig:
    base: dict[str, Any] = {
        "device": {"name": "testdev", "state_dir": str(tmp_path / "state")},
        "mqtt": {"broker": broker_url, "reconnect": {"initial_s": 0.1, "max_s": 0.5}},
        "privacy": {"consent": True},
        "runtime": {"shutdown_timeout_s": 3},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return AgentConfig.model_validate(base)


def _outbox_states(state_dir: Path) -> tuple[int, list[int]]:
    """(messages of every topic, seq of each state) in an outbox on disk, as the next start
    reads it. States and summaries share the outbox; each topic numbers its own."""
    db = sqlite3.connect(str(state_dir / "outbox.sqlite3"))
    try:
        rows = db.execute("SELECT topic, payload FROM messages ORDER BY seq").fetchall()
    finally:
        db.close()
    return len(rows), [json.loads(p)["seq"] for t, p in rows if t == TOPIC]


def _just_after_a_delivery(sub: Any) -> None:
    """Return once a state has arrived and nothing more for 0.15 s: a backlog burst is
    over and the next state is due ~0.35 s later, so each crash falls between states."""
    seen = len(sub.messages)
    assert sub.wait_for(lambda m: len(m) > seen)
    _quiet(sub, 0.15)


def _kill_with_nothing_unsaved(broker: Broker, agent: subprocess.Popen[str], sub: Any) -> None:
    """SIGKILL the broker at a moment when it holds nothing it acknowledged but not saved.

    Mosquitto sends PUBACK before its autosave writes the message to disk, so a crash in
    between loses a message the agent was rightly told was delivered: the broker's
    durability, not the agent's (seen in CI: all 60 states published and acknowledged, one
    missing at the subscriber). The agent is paused (SIGSTOP) while the broker dies, after
    anything it had already sent has been through the broker (the subscriber quiet for
    0.5 s), and resumes at once: the outage, the lost connection, the backlog and the
    resend of anything unacknowledged are still the agent's to survive."""
    agent.send_signal(signal.SIGSTOP)
    try:
        _quiet(sub, 0.5)
        broker.kill()
    finally:
        agent.send_signal(signal.SIGCONT)


def _quiet(sub: Any, window_s: float) -> None:
    """Return once no message has reached `sub` for `window_s`."""
    while True:
        count = len(sub.messages)
        time.sleep(window_s)
        if len(sub.messages) == count:
            return


# --- the broker -------------------------------------------------------------------------------


def test_broker_killed_four_times_loses_nothing_and_keeps_order(
    crashing_broker: Broker,
    subscriber_factory,
    replay_cmd,  # noqa: F811
) -> None:
    broker = crashing_broker
    # 600 s of session at 20x: a state every 0.5 s for 30 s, 60 in all
    sub = subscriber_factory(broker.port, TOPIC, client_id="outage-sub")
    time.sleep(1.2)  # the subscription reaches the broker's autosave
    agent = subprocess.Popen(
        replay_cmd(broker.url, 600, speed=20), stderr=subprocess.PIPE, text=True
    )
    kills = 0
    try:
        assert sub.wait_for(lambda m: len(states(m)) >= 3)
        for _ in range(4):  # four crashes, each down ~1.5 s (three states)
            _just_after_a_delivery(sub)
            _kill_with_nothing_unsaved(broker, agent, sub)
            kills += 1
            time.sleep(1.5)
            broker.start()
        assert agent.wait(60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    assert sub.wait_for(lambda m: len(_delivered_in_order(m)[0]) >= 60)
    seqs, dups = _delivered_in_order(sub.messages)
    assert seqs == list(range(1, 61)), seqs  # none lost, first deliveries in order
    print(f"\nFAULT broker SIGKILL x{kills}: 60/60 states by seq, in order, {dups} duplicate(s)")


def test_kill9_leaves_retained_offline(broker: Broker, tmp_path: Path, subscriber_factory) -> None:
    cfg = write_config(tmp_path, broker.url, speed=1)
    agent = subprocess.Popen(
        agent_cmd("run", "-c", str(cfg)), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        sub = subscriber_factory(broker.port, AVAILABILITY)
        assert sub.wait_for(lambda m: b"online" in availability(m, AVAILABILITY))
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        assert sub.wait_for(lambda m: availability(m, AVAILABILITY)[-1:] == [b"offline"])
    finally:
        if agent.poll() is None:
            agent.kill()
    # a subscriber arriving later is told by the retained message
    late = subscriber_factory(broker.port, AVAILABILITY, client_id="late")
    assert late.wait_for(
        lambda m: bool(m) and m[-1][2] and availability(m[-1:], AVAILABILITY) == [b"offline"]
    )


# --- the agent process ------------------------------------------------------------------------


def test_agent_sigkilled_with_a_backlog_drains_it_in_order_after_restart(
    broker: Broker,
    tmp_path: Path,
    subscriber_factory,
    replay_cmd,  # noqa: F811
) -> None:
    broker.stop()  # the backlog builds while the broker is away
    first = subprocess.Popen(
        replay_cmd(broker.url, 600, speed=50), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    made = 0
    try:
        assert first.stdout is not None
        for line in first.stdout:  # one echoed line per state put in the outbox
            made += b"/state " in line
            if made == 12:
                break
        first.send_signal(signal.SIGKILL)  # mid-run: no shutdown, no flush, no offline
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    depth, kept = _outbox_states(tmp_path / "state")
    assert kept == list(range(1, made + 1))  # every state made is on disk, none published
    broker.start()
    sub = subscriber_factory(broker.port, TOPIC, client_id="kill-sub")
    second = subprocess.run(replay_cmd(broker.url, 50), capture_output=True, text=True, timeout=90)
    assert second.returncode == 0, second.stderr
    total = made + 5
    assert sub.wait_for(lambda m: len(_delivered_in_order(m)[0]) >= total)
    seqs, dups = _delivered_in_order(sub.messages)
    assert seqs == list(range(1, total + 1)), seqs
    assert _outbox_states(tmp_path / "state")[0] == 0  # drained, summaries too
    print(
        f"\nFAULT agent SIGKILL with {depth} messages ({made} states) in the outbox: after "
        f"restart {total}/{total} "
        f"states by seq, in order, {dups} duplicate(s), outbox drained to 0"
    )


def test_outbox_bound_drops_oldest_counts_them_and_keeps_running(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    """Broker away, bound 10: 30 states made, the 20 oldest dropped and counted; when the
    broker is back the 10 newest go out, then new ones continue the sequence."""
    broker.stop()
    cfg = _agent_config(
        tmp_path,
        broker.url,
        mqtt={"outbox": {"max_messages": 10}},
        sources={"replay": {"session": DEMO, "speed": 50}},
    )
    first = Agent(cfg, notifier=Notifier(None, env={}), stop_at_end=True, duration_s=300)
    assert asyncio.run(first.run()) == 0
    stats = first.final_stats
    assert stats is not None
    rows = stats["outbox"]["last_seq"]  # messages put: 30 states and the summaries
    assert stats["states"]["made"] == 30 and rows > 30
    assert stats["outbox"]["depth"] == 10 and stats["outbox"]["dropped"] == rows - 10
    assert all(t["failures"] == 0 for t in stats["tasks"].values()), stats["tasks"]
    _, kept = _outbox_states(tmp_path / "state")
    assert kept == list(range(31 - len(kept), 31))  # the newest states stayed
    broker.start()
    sub = subscriber_factory(broker.port, TOPIC, client_id="bound-sub")
    second = Agent(cfg, notifier=Notifier(None, env={}), stop_at_end=True, duration_s=30)
    assert asyncio.run(second.run()) == 0
    expected = [*kept, 31, 32, 33]
    assert sub.wait_for(lambda m: len(_delivered_in_order(m)[0]) >= len(expected))
    seqs, dups = _delivered_in_order(sub.messages)
    assert seqs == expected, seqs  # a gap of exactly the dropped ones, then on in order
    assert second.final_stats is not None
    assert second.final_stats["outbox"]["dropped"] == rows - 10  # the count persists
    print(
        f"\nFAULT outbox bound 10: {rows} messages made (30 states), {rows - 10} oldest "
        f"dropped and counted, states {kept[0]}-33 delivered in order, {dups} duplicate(s), "
        "no task failed"
    )


# --- models -----------------------------------------------------------------------------------


def _camera_session(folder: Path) -> Path:
    from tests.test_faces_agent import write_session

    pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")
    write_session(folder, seconds=10)
    return folder


@pytest.mark.parametrize("fault", ["missing", "corrupt", "truncated"])
def test_bad_model_fails_at_start_naming_the_file_and_the_fix(
    broker: Broker, tmp_path: Path, subscriber_factory, fault: str
) -> None:
    session = _camera_session(tmp_path / "session")
    model = tmp_path / "emotion.tflite"
    shipped = ROOT / "models" / "emotion_minixception_int8.tflite"
    if fault == "corrupt":
        model.write_bytes(b"\x00garbage, not a flatbuffer\x00" * 40)
    elif fault == "truncated":
        model.write_bytes(shipped.read_bytes()[:5000])
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"device: {{name: testdev, state_dir: {tmp_path / 'state'}}}\n"
        f"mqtt: {{broker: '{broker.url}'}}\nprivacy: {{consent: true}}\n"
        f"models: {{expression: {model}}}\nsources: {{replay: {{session: {session}}}}}\n"
    )
    sub = subscriber_factory(broker.port, "emotion-agent/testdev/#")
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(0.1)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
    try:
        proc = subprocess.run(
            agent_cmd("run", "-c", str(cfg)),
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        datagrams = []
        try:
            while True:
                datagrams.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    finally:
        sock.close()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"model {model}" in proc.stderr  # names the file
    assert "Rebuild it with" in proc.stderr and "models/MODELS.md" in proc.stderr  # and the fix
    assert not any("READY=1" in d for d in datagrams), datagrams  # never reported ready
    time.sleep(0.5)
    assert sub.messages == []  # never connected: not even `online`
    print(f"\nFAULT model {fault}: exit 1 before READY and before MQTT; stderr names {model.name}")


# --- Bluetooth through the whole agent ----------------------------------------------------------


def test_ble_link_loss_connect_errors_and_garbage_storm_the_agent_stays_up(
    fake_bluez, broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    from tests.test_ble import STRAP, strap
    from tests.test_ble_agent import hr_packet

    fake_bluez.add_device(strap())
    cfg = _agent_config(
        tmp_path,
        broker.url,
        sources={
            "heart": {
                "match": {"name": "Polar H10"},
                "reconnect_initial_s": 0.05,
                "reconnect_max_s": 0.2,
                "connect_attempts": 1,
                "scan_timeout_s": 5,
            }
        },
        windows={"state_s": 1, "min_beats": 2},
        baseline={"calibration_s": 2},
    )
    sub = subscriber_factory(broker.port, TOPIC, client_id="ble-sub")
    garbage = [b"", b"\x01\x3c", b"\x10\x3c\x11", b"\x00\x3c\xff", b"\x16\x00\x11\x04"] * 100
    good = hr_packet(60, [1000.0])
    agent = Agent(cfg, notifier=Notifier(None, env={}))

    async def until(predicate, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)

    async def beats(n: int) -> int:
        sent = 0
        for _ in range(n):
            sent += await asyncio.to_thread(fake_bluez.notify, STRAP, "2a37", good)
            await asyncio.sleep(0.1)
        return sent

    async def scenario() -> dict[str, int]:
        run = asyncio.create_task(agent.run())
        try:
            await until(lambda: fake_bluez.is_notifying(STRAP, "2a37"))
            source = next(s for s in agent.sources if s.name == "heart")
            delivered = await beats(10)
            # link loss, then two failed connects before it comes back
            fake_bluez.fail_next_connects(
                STRAP, 2, ("org.bluez.Error.Failed", "Input/output error")
            )
            await asyncio.to_thread(fake_bluez.drop_link, STRAP, 0.2)
            await until(lambda: source.status.extra["reconnects"] == 1)
            await until(lambda: fake_bluez.is_notifying(STRAP, "2a37"))
            storm = await asyncio.to_thread(fake_bluez.notify, STRAP, "2a37", *garbage)
            delivered += await beats(25)  # windows close while the strap keeps talking
            await until(lambda: source.status.rejected == storm)
            await until(lambda: source.status.events >= delivered)
            return {
                "storm": storm,
                "rejected": source.status.rejected,
                "events": source.status.events,
                "delivered": delivered,
                "connect_failures": int(source.status.extra["connect_failures"]),
                "reconnects": int(source.status.extra["reconnects"]),
            }
        finally:
            agent.request_stop()
            assert await run == 0

    got = asyncio.run(scenario())
    assert got["storm"] == len(garbage) == got["rejected"]  # all counted and dropped
    assert got["events"] == got["delivered"]  # every good packet got through
    assert got["connect_failures"] >= 2 and got["reconnects"] == 1
    tasks = agent.supervisor.states
    assert tasks["heart"].failures == 0 and tasks["mqtt"].failures == 0  # nothing escaped
    assert sub.wait_for(lambda m: len(states(m)) >= 3)
    published = states(sub.messages)
    assert [s["seq"] for s in published] == list(range(1, len(published) + 1))
    assert any(s["evidence"]["heart_notifications"] > 0 for s in published[-3:])  # still read
    print(
        f"\nFAULT BLE: link lost once, {got['connect_failures']} connect error(s), "
        f"{got['reconnects']} reconnect; {got['rejected']}/{got['storm']} malformed packets "
        f"counted and dropped; {got['events']}/{got['delivered']} good packets in; "
        f"{len(published)} states published, heart task failures 0"
    )


# --- the camera -------------------------------------------------------------------------------


def test_failing_camera_restarts_with_backoff_while_physiology_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("skimage", reason="scikit-image provides the stand-in's photo")
    from agent.sources.camera import PiCameraSource
    from agent.sources.camera_config import CameraSourceConfig
    from tests import picamera2_standin as standin

    pi4 = standin.install(monkeypatch, "vc4")
    pi4.faults.capture_error_after = 4  # every camera instance fails after 4 frames
    pi4.faults.only_first_instance = False
    camera = PiCameraSource(
        CameraSourceConfig(lores_size=(128, 96), frame_rate=30.0, analysis_fps=10.0)
    )
    opens: list[float] = []
    real_open = camera._open

    def timed_open() -> Any:
        opens.append(time.monotonic())
        return real_open()

    camera._open = timed_open  # type: ignore[method-assign]
    cfg = _agent_config(
        tmp_path,
        f"mqtt://127.0.0.1:{free_port()}",  # nobody listens: states stay in the outbox
        sources={
            "replay": {"session": DEMO, "speed": 30},
            "restart": {"initial_s": 0.05, "max_s": 0.4},
        },
    )
    made: list[dict] = []
    agent = Agent(
        cfg,
        notifier=Notifier(None, env={}),
        on_publish=lambda t, p: made.append(p) if t == TOPIC else None,
        stop_at_end=True,
        duration_s=240,
        extra_sources=[camera],
    )
    assert asyncio.run(agent.run()) == 0
    task = agent.supervisor.states["camera"]
    assert task.failures >= 4 and "timed out" in str(task.last_error)
    gaps = [b - a for a, b in itertools.pairwise(opens)]
    # each run lasts ~4 frames plus the backoff, which grows from 0.05 s to its 0.4 s cap
    assert max(gaps) >= 0.4 and max(gaps) < 2.0, gaps
    assert not pi4.open_cameras  # every failed camera was closed before the next opened
    assert agent.face_stage is not None and agent.face_stage.stats.analysed > 0
    # heart and EDA were unaffected: 24 windows, almost all with both modalities
    assert len(made) == 24
    with_physio = sum(
        1 for p in made if p["evidence"]["beats"] > 0 and p["evidence"]["eda_seconds"] > 0
    )
    assert with_physio >= 20
    assert agent.supervisor.states["heart"].failures == 0
    assert agent.supervisor.states["eda"].failures == 0
    print(
        f"\nFAULT camera: {task.failures} failures, {task.restarts} restarts, gaps "
        f"{min(gaps):.2f}-{max(gaps):.2f} s; {agent.face_stage.stats.analysed} frames analysed; "
        f"{with_physio}/{len(made)} windows with heart+eda; heart/eda failures 0"
    )
