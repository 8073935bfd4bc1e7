"""Health checks, and the systemd watchdog they gate.

The watchdog is only worth having if a ping means "the agent is doing its job". So the
pinger runs on the event loop itself (a blocked loop sends nothing and systemd restarts
us), and it withholds pings while any check fails: a source that silently stopped
producing, or a loop that is alive but so lagged that data is being dropped. A restart
is the cure for both on an unattended Pi.

All times are `time.monotonic()`, like `SourceStatus.last_data`, so a wall-clock step
(NTP catching up after an offline boot) never looks like a stall.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.sdnotify import Notifier
from agent.sources.base import SourceStatus

log = logging.getLogger(__name__)

Check = Callable[[], str | None]


def _dur(seconds: float) -> str:
    """A short human duration: 3ms, 0.8s, 42s."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    return f"{seconds:.0f}s"


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeping task.

    Anything that blocks the loop (a sync call, heavy CPU on the loop thread) delays every
    task; this one notices by how much. A loop that is blocked *right now* cannot update
    `lag`, so `last_tick` going stale is the other half of the signal.
    """

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self.interval = 0.5
        self.lag = 0.0
        self.last_tick: float | None = None
        self._samples: deque[tuple[float, float]] = deque()  # (monotonic, lag)

    @property
    def max_lag(self) -> float:
        """Worst lag over the last `window` seconds."""
        return max((lag for _, lag in self._samples), default=0.0)

    async def run(self, interval: float = 0.5) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.interval = interval
        self.last_tick = time.monotonic()
        while True:
            due = time.monotonic() + interval
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.lag = max(0.0, now - due)
            self.last_tick = now
            self._samples.append((now, self.lag))
            # Ticks are at least `interval` apart, so this stays <= window/interval long.
            while self._samples and self._samples[0][0] < now - self.window:
                self._samples.popleft()


@dataclass
class _Entry:
    check: Check
    describe: Callable[[], str] | None  # a few words for a healthy summary


class Health:
    """Named checks; each returns None when healthy or a short problem description."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def add_check(self, name: str, fn: Check, describe: Callable[[], str] | None = None) -> None:
        """Register `fn` (None = healthy, else a problem); `describe` words a healthy state."""
        self._entries[name] = _Entry(fn, describe)

    def add_source(
        self,
        name: str,
        status: SourceStatus,
        stale_after: float,
        in_backoff: Callable[[], bool] | None = None,
    ) -> None:
        """A source must produce data at least every `stale_after` seconds.

        Not a problem: a finished replay; a source in restart backoff (the supervisor is
        already handling it, and a restart of the whole agent would not help more); or a
        source still inside its first `stale_after` after being added (BLE connects and
        camera warm-up take a while).
        """
        added = time.monotonic()
        backoff = in_backoff or (lambda: False)

        def check() -> str | None:
            if status.finished or backoff():
                return None
            age = status.age()
            if age is None:
                waited = time.monotonic() - added
                return None if waited <= stale_after else f"no data for {_dur(waited)}"
            return None if age <= stale_after else f"stale {_dur(age)}"

        def describe() -> str:
            if status.finished:
                return "done"
            if backoff():
                return "backoff"
            age = status.age()
            return "waiting" if age is None else _dur(age)

        self.add_check(name, check, describe)

    def add_loop(self, monitor: LoopLagMonitor, max_lag_s: float, name: str = "loop") -> None:
        """The event loop must wake tasks within `max_lag_s` of their due time."""
        added = time.monotonic()

        def check() -> str | None:
            if monitor.lag > max_lag_s:
                return f"lag {_dur(monitor.lag)} > {_dur(max_lag_s)}"
            # Checked from the same loop, so a stale tick means the loop was blocked and
            # the monitor has not run since (or was never started: time from `added`).
            since = time.monotonic() - (monitor.last_tick or added)
            if since > max(2 * monitor.interval, max_lag_s):
                return f"stalled {_dur(since)}"
            return None

        self.add_check(name, check, lambda: f"lag {_dur(monitor.lag)}")

    def _evaluate(self) -> tuple[list[tuple[str, str]], list[str]]:
        """(failing (name, problem) pairs, healthy descriptions)."""
        failing: list[tuple[str, str]] = []
        fine: list[str] = []
        for name, entry in self._entries.items():
            try:
                problem = entry.check()
                if problem is None:
                    fine.append(f"{name} {entry.describe()}" if entry.describe else f"{name} ok")
                    continue
            except Exception as exc:
                # A broken check counts as a failure: better a restart than a watchdog
                # that crashes (or, worse, keeps pinging without checking).
                problem = f"check failed: {type(exc).__name__}: {exc}"
            failing.append((name, " ".join(str(problem).split())))
        return failing, fine

    def problems(self) -> list[str]:
        """One line per failing check, e.g. 'heart stale 42s'."""
        return [f"{name} {problem}" for name, problem in self._evaluate()[0]]

    def healthy(self) -> bool:
        return not self._evaluate()[0]

    def summary(self) -> str:
        """One line for STATUS=, e.g. 'healthy: heart 0.8s, loop lag 3ms'."""
        return _summary(*self._evaluate())


def _summary(failing: list[tuple[str, str]], fine: list[str]) -> str:
    if failing:
        return "unhealthy: " + ", ".join(f"{n} {p}" for n, p in failing)
    return "healthy: " + (", ".join(fine) if fine else "no checks")


@dataclass
class WatchdogStats:
    """What `watchdog_loop` did; pass one in to read it while the loop runs."""

    sent: int = 0  # WATCHDOG=1 accepted by the socket
    withheld: int = 0  # ticks on which a check failed, so no ping went out
    healthy: bool | None = None  # at the last tick
    problems: list[str] = field(default_factory=list)


async def watchdog_loop(
    notifier: Notifier,
    health: Health,
    interval: float | None = None,
    stats: WatchdogStats | None = None,
) -> None:
    """Ping the systemd watchdog every `interval` seconds while `health` is healthy.

    Runs until cancelled; returns at once when no watchdog is configured. Deliberately a
    coroutine, never a thread: a thread would keep pinging through a hung loop.
    """
    if interval is None:
        interval = notifier.watchdog_interval()
        if interval is None:
            return
    if interval <= 0:
        raise ValueError(f"interval must be > 0, got {interval}")
    stats = stats if stats is not None else WatchdogStats()
    failing_names: frozenset[str] = frozenset()
    last_status: str | None = None
    while True:
        failing, fine = health._evaluate()
        names = frozenset(name for name, _ in failing)
        problems = [f"{n} {p}" for n, p in failing]
        if names != failing_names:
            # Log on transitions only: once per tick would flood the journal on a Pi.
            if names:
                log.warning("unhealthy, withholding watchdog pings: %s", "; ".join(problems))
            else:
                log.warning(
                    "healthy again, resuming watchdog pings (%d withheld so far)", stats.withheld
                )
            failing_names = names
        summary = _summary(failing, fine)
        # STATUS before the ping, so anyone watching sees why pings stopped or resumed.
        if summary != last_status:
            notifier.status(summary)
            last_status = summary
        stats.healthy = not problems
        stats.problems = problems
        if problems:
            stats.withheld += 1
        elif notifier.watchdog():
            stats.sent += 1
        await asyncio.sleep(interval)
