"""sd_notify against a real AF_UNIX datagram socket, and the health-gated watchdog.

A socket bound here stands in for systemd. Datagram sends on AF_UNIX are synchronous
(the datagram is queued on the receiver when sendto returns), so draining the socket at
chosen points in the same thread tells exactly what was sent between them: no timing
margins are needed for presence/absence, only for counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.health import Health, LoopLagMonitor, WatchdogStats, watchdog_loop
from agent.sdnotify import Notifier
from agent.sources.base import SourceStatus

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets")


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.received: list[str] = []

    def drain(self) -> list[str]:
        """Everything sent since the last drain, in order."""
        new: list[str] = []
        while True:
            try:
                new.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        self.received.extend(new)
        return new

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[str]:
    # sun_path holds 108 bytes; a deep pytest tmp_path may not fit.
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="sd") as d:
        yield os.path.join(d, "n.sock")


@pytest.fixture
def systemd(sock_path: str) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(sock_path)
    yield fake
    fake.close()


# -- Notifier ------------------------------------------------------------------------


def test_exact_datagrams(systemd: FakeSystemd, sock_path: str) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": sock_path})
    assert n.enabled
    assert n.ready()
    assert n.ready("up: 3 sources")
    assert n.status("heart 0.8s")
    assert n.watchdog()
    assert n.stopping()
    assert n.stopping("bye")
    assert n.send(FOO="bar", ERRNO=5)
    assert n.send_raw("X=1\nY=2")
    assert systemd.drain() == [
        "READY=1",
        "READY=1\nSTATUS=up: 3 sources",
        "STATUS=heart 0.8s",
        "WATCHDOG=1",
        "STOPPING=1",
        "STOPPING=1\nSTATUS=bye",
        "FOO=bar\nERRNO=5",
        "X=1\nY=2",
    ]
    assert (n.sent, n.errors) == (8, 0)
    n.close()


def test_reloading_and_extend_timeout(systemd: FakeSystemd, sock_path: str) -> None:
    n = Notifier(sock_path)
    n.reloading()
    n.extend_timeout(30)
    reload_msg, extend_msg = systemd.drain()
    lines = reload_msg.split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0
    assert extend_msg == "EXTEND_TIMEOUT_USEC=30000000"


@linux_only
def test_abstract_socket() -> None:
    name = f"emotion-agent-test-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert n.ready("hi") and n.watchdog() and n.stopping()
        assert fake.drain() == ["READY=1\nSTATUS=hi", "WATCHDOG=1", "STOPPING=1"]
    finally:
        fake.close()


def test_no_socket_is_a_noop() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert not n.ready("x") and not n.watchdog() and not n.status("y") and not n.stopping()
    assert n._sock is None  # not even a socket was created
    assert (n.sent, n.errors) == (0, 0)
    assert n.watchdog_interval() is None
    assert not Notifier(env={"NOTIFY_SOCKET": ""}).enabled


def test_relative_address_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.sdnotify"):
        n = Notifier("relative/notify.sock")
    assert not n.enabled and not n.ready()
    assert "not supported" in caplog.text


def test_missing_socket_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(str(tmp_path / "nobody-home.sock"))
    with caplog.at_level(logging.WARNING, logger="agent.sdnotify"):
        for _ in range(5):
            assert n.watchdog() is False
    assert (n.sent, n.errors) == (0, 5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ENOENT" in warnings[0].getMessage()


def test_stale_socket_file_never_raises(sock_path: str) -> None:
    # systemd died: the file remains, nobody is bound to it -> ECONNREFUSED.
    FakeSystemd(sock_path).close()
    assert os.path.exists(sock_path)
    n = Notifier(sock_path)
    assert n.ready() is False and n.errors == 1


def test_full_queue_does_not_block(systemd: FakeSystemd, sock_path: str) -> None:
    # Nobody drains: the kernel queue fills and a blocking send would hang the loop here.
    n = Notifier(sock_path)
    for _ in range(5000):
        n.watchdog()
    assert n.sent > 0 and n.errors > 0
    assert n.sent + n.errors == 5000
    systemd.drain()
    assert n.watchdog()  # and it recovers once systemd reads again


def test_bad_fields_rejected() -> None:
    n = Notifier(env={})  # validated even when disabled, so tests catch them
    with pytest.raises(ValueError):
        n.send(STATUS="two\nlines")
    with pytest.raises(ValueError):
        n.send()
    with pytest.raises(ValueError):
        n.send(**{"A=B": 1})


def test_status_text_is_flattened(systemd: FakeSystemd, sock_path: str) -> None:
    n = Notifier(sock_path)
    n.status("boom:\n  Traceback\tline")
    assert systemd.drain() == ["STATUS=boom: Traceback line"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "abc"}, None),
        ({"WATCHDOG_USEC": "100000"}, 0.05),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env=env).watchdog_interval() == expected


# -- Health --------------------------------------------------------------------------


def fresh() -> SourceStatus:
    s = SourceStatus()
    s.mark()
    return s


def test_sources_stale_backoff_finished() -> None:
    heart, eda, replay, cam = fresh(), fresh(), fresh(), fresh()
    backoff = {"eda": False}
    h = Health()
    h.add_source("heart", heart, stale_after=5)
    h.add_source("eda", eda, stale_after=5, in_backoff=lambda: backoff["eda"])
    h.add_source("replay", replay, stale_after=5)
    h.add_source("camera", cam, stale_after=5)
    assert h.healthy() and h.problems() == []
    assert h.summary().startswith("healthy: heart ")

    for s in (heart, eda, replay):
        s.last_data = time.monotonic() - 42  # all three went quiet 42 s ago
    replay.finished = True
    backoff["eda"] = True
    assert h.problems() == ["heart stale 42s"]
    assert not h.healthy()
    assert h.summary() == "unhealthy: heart stale 42s"

    backoff["eda"] = False  # out of backoff and still no data: now a problem too
    assert h.problems() == ["heart stale 42s", "eda stale 42s"]
    heart.mark()
    eda.mark()
    assert h.healthy()
    assert "replay done" in h.summary()


def test_source_without_data_gets_a_grace_period() -> None:
    h = Health()
    h.add_source("patient", SourceStatus(), stale_after=60)
    h.add_source("quick", SourceStatus(), stale_after=0.02)
    time.sleep(0.1)
    assert [p.split()[0] for p in h.problems()] == ["quick"]
    assert h.problems()[0].startswith("quick no data for ")
    assert "patient waiting" not in h.summary()  # unhealthy summary lists problems only


def test_custom_check_and_broken_check() -> None:
    state: dict[str, str | None] = {"mqtt": None}
    h = Health()
    h.add_check("mqtt", lambda: state["mqtt"])
    h.add_check("broken", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    assert h.problems() == ["broken check failed: ZeroDivisionError: division by zero"]
    h = Health()
    h.add_check("mqtt", lambda: state["mqtt"])
    assert h.summary() == "healthy: mqtt ok"
    state["mqtt"] = "disconnected\nfor 30s"
    assert h.summary() == "unhealthy: mqtt disconnected for 30s"


def test_loop_lag_monitor_sees_a_block() -> None:
    async def main() -> LoopLagMonitor:
        mon = LoopLagMonitor()
        task = asyncio.create_task(mon.run(0.02))
        await asyncio.sleep(0.1)
        assert mon.last_tick is not None
        time.sleep(0.3)  # noqa: ASYNC251 -- blocking the loop is the point
        await asyncio.sleep(0.1)
        task.cancel()
        return mon

    mon = asyncio.run(main())
    assert mon.max_lag > 0.2  # the block, seen as lag
    assert mon.lag < 0.2  # the last tick after the block was on time again


def test_loop_check_before_monitor_runs() -> None:
    mon = LoopLagMonitor()
    mon.interval = 0.01  # what run(0.01) would set; never started, so never ticks
    h = Health()
    h.add_loop(mon, max_lag_s=0.02)
    assert h.healthy()  # just added: grace
    time.sleep(0.1)
    assert h.problems()[0].startswith("loop stalled ")


# -- the watchdog, end to end --------------------------------------------------------

INTERVAL = 0.05
MAX_LAG = 0.25


def pings(msgs: list[str]) -> int:
    return sum("WATCHDOG=1" in m.split("\n") for m in msgs)


def test_watchdog_pings_only_while_healthy(
    systemd: FakeSystemd, sock_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(sock_path)
    heart = fresh()
    stats = WatchdogStats()
    withheld_after_block: list[int] = []

    async def main() -> dict[str, list[str]]:
        mon = LoopLagMonitor()
        health = Health()
        health.add_loop(mon, MAX_LAG)
        health.add_source("heart", heart, stale_after=30)
        tasks = [
            asyncio.create_task(mon.run(INTERVAL)),
            asyncio.create_task(watchdog_loop(notifier, health, INTERVAL, stats)),
        ]
        seen: dict[str, list[str]] = {}

        await asyncio.sleep(0.5)
        seen["healthy"] = systemd.drain()

        # Block the loop the way a sync call would. Drains on both sides of the block,
        # in this thread, bracket exactly what was sent while it lasted.
        systemd.drain()
        time.sleep(0.5)  # noqa: ASYNC251 -- a sync call hogging the loop
        seen["during block"] = systemd.drain()
        withheld_before = stats.withheld

        await asyncio.sleep(0.5)  # monitor ticks on time again -> lag recovers
        seen["after block"] = systemd.drain()
        withheld_after_block.append(stats.withheld - withheld_before)

        heart.last_data = time.monotonic() - 100  # the heart strap went quiet
        await asyncio.sleep(0.3)
        seen["stale"] = systemd.drain()

        heart.mark()
        await asyncio.sleep(0.3)
        seen["fresh again"] = systemd.drain()

        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return seen

    with caplog.at_level(logging.WARNING, logger="agent.health"):
        seen = asyncio.run(main())

    # Healthy: ~10 pings in 0.5 s at 0.05 s; a noisy machine may slow that, not stop it.
    assert pings(seen["healthy"]) >= 3
    assert any(m.startswith("STATUS=healthy: loop lag") for m in seen["healthy"])

    # Blocked loop: nothing at all reached "systemd" (a pinger thread would have).
    assert seen["during block"] == []

    # After the block: the first thing is the reason, then no ping until healthy again.
    after = seen["after block"]
    assert after[0].startswith("STATUS=unhealthy: loop ")
    recovered = next(i for i, m in enumerate(after) if m.startswith("STATUS=healthy"))
    assert pings(after[:recovered]) == 0
    assert pings(after[recovered:]) >= 2
    assert withheld_after_block[0] >= 1

    # Stale source: pings stop, STATUS says why.
    # The drain came right before last_data was moved, so the very next tick is bad.
    stale = seen["stale"]
    assert stale[0].startswith("STATUS=unhealthy: heart stale 1")  # "heart stale 100s"
    assert pings(stale) == 0
    assert pings(seen["fresh again"]) >= 1

    assert stats.sent == pings(systemd.received)
    msgs = [r.getMessage() for r in caplog.records]
    # Once per transition (block, then stale source), not once per tick; >= in case a
    # noisy machine adds a lag spike of its own.
    assert 2 <= sum("withholding watchdog pings" in m for m in msgs) < 6
    assert 2 <= sum("healthy again" in m for m in msgs) < 6


def test_thread_pinger_would_defeat_the_watchdog(systemd: FakeSystemd, sock_path: str) -> None:
    """Control for the test above: the same bracket does catch pings from a thread."""
    notifier = Notifier(sock_path)
    stop = threading.Event()

    def pinger() -> None:
        while not stop.wait(INTERVAL):
            notifier.watchdog()

    async def main() -> list[str]:
        systemd.drain()
        time.sleep(0.5)  # noqa: ASYNC251 -- loop blocked, thread unaffected
        return systemd.drain()

    t = threading.Thread(target=pinger, daemon=True)
    t.start()
    try:
        during = asyncio.run(main())
    finally:
        stop.set()
        t.join()
    assert pings(during) >= 1


def test_watchdog_loop_without_watchdog_returns() -> None:
    # No WATCHDOG_USEC: the loop must end at once rather than spin or sleep forever.
    health = Health()
    asyncio.run(asyncio.wait_for(watchdog_loop(Notifier(env={}), health), 1.0))


def test_watchdog_loop_uses_env_interval(systemd: FakeSystemd, sock_path: str) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "100000"})  # ping 0.05 s
    stats = WatchdogStats()

    async def main() -> None:
        task = asyncio.create_task(watchdog_loop(n, Health(), stats=stats))
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(main())
    assert stats.sent >= 2 and stats.withheld == 0
    assert systemd.drain()[0] == "STATUS=healthy: no checks"
