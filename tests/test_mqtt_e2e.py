"""End to end against real Mosquitto brokers: the agent runs as a process, as in production."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Broker, agent_cmd, availability_state, free_port

DEMO = str(ROOT / "agent" / "sessions" / "synthetic")


def write_config(tmp_path: Path, broker_url: str, speed: float = 50.0, **extra: str) -> Path:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"""
device: {{name: testdev, state_dir: {tmp_path / "state"}}}
mqtt:
  broker: {broker_url}
  reconnect: {{initial_s: 0.2, max_s: 1}}
sources:
  replay: {{session: {DEMO}, speed: {speed}}}
privacy: {{consent: true}}
runtime: {{shutdown_timeout_s: 5}}
{extra.get("more", "")}
"""
    )
    return cfg


def states(
    messages: list[tuple[str, bytes, bool]], topic: str = "emotion-agent/testdev/state"
) -> list[dict]:
    return [json.loads(p) for t, p, _ in messages if t == topic]


def availability(messages: list[tuple[str, bytes, bool]], topic: str) -> list[bytes]:
    return [availability_state(p) for t, p, _ in messages if t == topic]


def test_demo_publishes_states_that_a_plain_subscriber_receives(
    broker: Broker, subscriber_factory
) -> None:
    sub = subscriber_factory(broker.port, "emotion-agent/demo/#")
    proc = subprocess.run(
        agent_cmd("demo", "--broker", broker.url, "--speed", "200", "--duration", "120"),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert sub.wait_for(lambda m: len(states(m, "emotion-agent/demo/state")) >= 12)
    got = states(sub.messages, "emotion-agent/demo/state")
    assert [s["seq"] for s in got] == list(range(1, 13))
    assert all(s["v"] == 1 and s["device"] == "demo" for s in got)
    assert {s["status"] for s in got} <= {"ok", "calibrating", "insufficient_data"}
    assert "ok" in {s["status"] for s in got}  # the baseline forms within 2 minutes
    assert "vitals" not in got[0]  # vitals stay off MQTT by default
    # what was printed is what was published
    printed = [
        json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if "/state " in line
    ]
    assert printed == got
    avail = availability(sub.messages, "emotion-agent/demo/availability")
    assert avail[0] == b"online" and avail[-1] == b"offline"


def test_demo_without_broker_shows_what_would_be_published(tmp_path: Path) -> None:
    port = free_port()  # nobody listens here
    t0 = time.monotonic()
    proc = subprocess.run(
        agent_cmd(
            "demo",
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--speed",
            "300",
            "--duration",
            "60",
            "--state-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 60  # it ends by itself, never hangs
    lines = [
        line for line in proc.stdout.splitlines() if line.startswith("emotion-agent/demo/state ")
    ]
    assert len(lines) == 6
    assert "no broker answered" in proc.stderr
    summaries = [
        ln for ln in proc.stdout.splitlines() if ln.startswith("emotion-agent/demo/summary ")
    ]
    assert len(summaries) == 1  # 60 s: one summary of the six states
    assert "7 waiting in the outbox" in proc.stderr


def test_sigterm_flushes_publishes_offline_exits_0(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    cfg = write_config(tmp_path, broker.url, speed=10)
    sub = subscriber_factory(broker.port, "emotion-agent/testdev/#")
    agent = subprocess.Popen(agent_cmd("run", "-c", str(cfg)), stderr=subprocess.PIPE, text=True)
    assert sub.wait_for(lambda m: len(states(m)) >= 2)
    t0 = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(15) == 0
    assert time.monotonic() - t0 < 10  # bounded by shutdown_timeout_s (5) plus start-up slack
    assert sub.wait_for(
        lambda m: availability(m, "emotion-agent/testdev/availability")[-1:] == [b"offline"]
    )
    seqs = [s["seq"] for s in states(sub.messages)]
    assert seqs == list(range(1, len(seqs) + 1))


def _delivered_in_order(messages: list[tuple[str, bytes, bool]]) -> tuple[list[int], int]:
    """Sequence numbers as first received, and how many duplicates came on top."""
    seen: list[int] = []
    dups = 0
    for s in states(messages):
        if s["seq"] in seen:
            dups += 1
        else:
            seen.append(s["seq"])
    return seen, dups


@pytest.fixture
def replay_cmd(tmp_path: Path):
    def make(broker_url: str, duration: float, speed: float = 100) -> list[str]:
        cfg = write_config(tmp_path, broker_url, speed=speed)
        return agent_cmd(
            "replay", DEMO, "-c", str(cfg), "--duration", str(duration), "--speed", str(speed)
        )

    return make


@pytest.mark.faults
def test_agent_restart_with_nonempty_outbox_drains_in_order(
    broker: Broker, tmp_path: Path, subscriber_factory, replay_cmd
) -> None:
    sub = subscriber_factory(broker.port, "emotion-agent/testdev/state", client_id="restart-sub")
    broker.stop()
    first = subprocess.run(replay_cmd(broker.url, 100), capture_output=True, text=True, timeout=90)
    assert first.returncode == 0, first.stderr
    assert "12 waiting in the outbox" in first.stderr  # 10 states and 2 summaries
    broker.start()
    second = subprocess.run(replay_cmd(broker.url, 50), capture_output=True, text=True, timeout=90)
    assert second.returncode == 0, second.stderr
    assert sub.wait_for(lambda m: len(_delivered_in_order(m)[0]) >= 15)
    seqs, dups = _delivered_in_order(sub.messages)
    assert seqs == list(range(1, 16)), seqs
    assert dups == 0


def test_outbox_file_location(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, f"mqtt://127.0.0.1:{port}", speed=300)
    proc = subprocess.run(
        agent_cmd("replay", DEMO, "-c", str(cfg), "--duration", "30"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "state" / "outbox.sqlite3").exists()


def test_idle_disconnect_is_noticed_and_online_republished(
    broker: Broker, tmp_path: Path, subscriber_factory
) -> None:
    """With no state due for a minute, a broker restart is still noticed: the agent
    reconnects by itself and announces `online` again."""
    cfg = write_config(
        tmp_path,
        broker.url,
        speed=1,
        more="windows: {state_s: 600}\npublish: {stats_interval_s: 1}",
    )
    agent = subprocess.Popen(agent_cmd("run", "-c", str(cfg)), stderr=subprocess.PIPE, text=True)
    try:
        sub = subscriber_factory(broker.port, "emotion-agent/testdev/stats", client_id="idle-1")
        assert sub.wait_for(lambda m: len(m) >= 1)
        sub.close()
        broker.stop()
        time.sleep(1.0)
        broker.start()
        sub2 = subscriber_factory(broker.port, "emotion-agent/testdev/stats", client_id="idle-2")
        assert sub2.wait_for(lambda m: any(json.loads(p)["mqtt"]["connects"] >= 2 for _, p, _ in m))
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
