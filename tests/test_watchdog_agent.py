"""The systemd watchdog with the whole agent: a real process, a real notify socket.

`emotion-agent run` is started the way systemd starts it (NOTIFY_SOCKET, WATCHDOG_USEC),
with a heart-rate strap on the fake BlueZ (real bleak, real D-Bus) as its live source.
WATCHDOG=1 must arrive at the interval systemd asked for (half of WATCHDOG_USEC) while the
strap delivers; stop, with STATUS= saying why, when the strap goes quiet for longer than
sources.stale_after_s; resume when it delivers again; and stop after the event loop was
frozen (SIGSTOP) until the loop is back on time. tests/test_sdnotify_health.py shows the
same gate in-process, including that a pinger thread would defeat it.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Broker, agent_cmd
from tests.fake_bluez import FakeBluez, fake_bluez_fixture  # noqa: F401 (the fixture)
from tests.test_ble import STRAP, strap
from tests.test_ble_agent import hr_packet

pytestmark = pytest.mark.timeout(120)
WATCHDOG_USEC = 400_000  # pings every 0.2 s
STALE_S = 2.0


class NotifySocket:
    """systemd's end of NOTIFY_SOCKET: records (monotonic time, datagram) in a thread."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data))

    def since(self, t: float) -> list[tuple[float, str]]:
        return [(at, m) for at, m in list(self.got) if at >= t]

    def wait_for(self, text: str, after: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, m in self.since(after):
                if text in m:
                    return at
            time.sleep(0.05)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def pings(msgs: list[tuple[float, str]]) -> list[float]:
    return [at for at, m in msgs if "WATCHDOG=1" in m.split("\n")]


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    path = Path(f"/tmp/ea-notify-{os.getpid()}-{time.monotonic_ns()}.sock")  # sun_path is short
    s = NotifySocket(path)
    yield s
    s.close()
    path.unlink(missing_ok=True)


class Strap:
    """Feeds the fake strap's notifications every 0.3 s while `on` is set."""

    def __init__(self, bluez: FakeBluez) -> None:
        self.bluez = bluez
        self.on = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            if self.on.is_set() and self.bluez.is_notifying(STRAP, "2a37"):
                self.bluez.notify(STRAP, "2a37", hr_packet(60, [990.0, 1010.0]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def test_watchdog_follows_health_of_the_running_agent(
    fake_bluez: FakeBluez, broker: Broker, notify: NotifySocket, tmp_path: Path
) -> None:
    fake_bluez.add_device(strap())
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"""
device: {{name: wd, state_dir: {tmp_path / "state"}}}
mqtt: {{broker: {broker.url}}}
sources:
  stale_after_s: {STALE_S}
  heart:
    match: {{name: "Polar H10"}}
    reconnect_initial_s: 0.1
    reconnect_max_s: 0.5
runtime: {{max_loop_lag_s: 0.5}}
"""
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.sock.getsockname())}
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    env.pop("WATCHDOG_PID", None)
    feeder = Strap(fake_bluez)
    feeder.on.set()
    agent = subprocess.Popen(
        agent_cmd("run", "-c", str(cfg)), env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        t0 = time.monotonic()
        ready = notify.wait_for("READY=1", t0, 30)
        assert ready is not None, notify.got

        # healthy: pings at the interval systemd asked for (0.2 s)
        time.sleep(3)
        healthy = pings(notify.since(ready + 0.5))
        assert len(healthy) >= 8, notify.since(ready)
        gaps = sorted(b - a for a, b in itertools.pairwise(healthy))
        median = gaps[len(gaps) // 2]
        assert 0.15 <= median <= 0.3, gaps  # WATCHDOG_USEC / 2 = 0.2 s
        # 9 in 10 well inside the watchdog period (a shared CI machine may stall a tick)
        assert gaps[int(len(gaps) * 0.9)] < WATCHDOG_USEC / 1e6, gaps

        # the strap goes quiet: after stale_after_s the pings stop and STATUS says why
        quiet = time.monotonic()
        feeder.on.clear()
        unhealthy = notify.wait_for("STATUS=unhealthy: heart", quiet, STALE_S + 5)
        assert unhealthy is not None, notify.since(quiet)
        time.sleep(2)
        assert pings(notify.since(unhealthy)) == [], notify.since(unhealthy)
        last = max(pings(notify.since(quiet)), default=quiet)
        assert last - quiet < STALE_S + 1.0  # stopped about stale_after_s after the silence

        # data again: pings resume
        back = time.monotonic()
        feeder.on.set()
        resumed = notify.wait_for("WATCHDOG=1", back, 10)
        assert resumed is not None, notify.since(back)
        assert any(m.startswith("STATUS=healthy") for _, m in notify.since(back))

        # the loop frozen for 1.5 s (> max_loop_lag_s): nothing while frozen, then the
        # reason first and no ping until the loop is on time again
        agent.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        time.sleep(1.5)
        assert pings(notify.since(frozen + 0.05)) == []
        thawed = time.monotonic()
        agent.send_signal(signal.SIGCONT)
        time.sleep(2)
        after = [m for _, m in notify.since(thawed)]
        assert after and after[0].startswith("STATUS=unhealthy: loop "), after
        ok_at = next(i for i, m in enumerate(after) if m.startswith("STATUS=healthy"))
        assert "WATCHDOG=1" not in after[:ok_at]
        assert "WATCHDOG=1" in after[ok_at:]
    finally:
        feeder.close()
        agent.send_signal(signal.SIGCONT)
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(20)
    err = agent.stderr.read() if agent.stderr else ""
    assert code == 0 and "Traceback" not in err, err
    assert "withholding watchdog pings" in err
