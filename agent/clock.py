"""The agent's notion of time.

Live runs use the wall clock. A replay runs on a `ScaledClock` whose time starts at the
session's origin and advances `speed` times faster than real time, so sources, windows
and timestamps all agree whether a session is replayed at 1x or 50x.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


def iso(t: float) -> str:
    """UNIX seconds as an ISO-8601 UTC timestamp with milliseconds (`...T09:00:00.000Z`):
    the one time format of every payload."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_iso(text: str) -> datetime:
    """An ISO-8601 timestamp as `iso` writes it (`Z` or an offset) as an aware datetime;
    one without an offset is taken as UTC. ValueError when it is not one."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class Clock(Protocol):
    speed: float

    def now(self) -> float:
        """Current time in UNIX seconds on this clock."""
        ...

    async def sleep_until(self, t: float) -> None:
        """Sleep until this clock reads at least `t`."""
        ...


class WallClock:
    """Real time."""

    speed = 1.0

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t: float) -> None:
        delay = t - time.time()
        if delay > 0:
            await asyncio.sleep(delay)


class ScaledClock:
    """Time that starts at `origin` and runs `speed` times faster than the monotonic clock."""

    def __init__(self, origin: float, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.origin = origin
        self.speed = speed
        self._start = time.monotonic()

    def now(self) -> float:
        return self.origin + (time.monotonic() - self._start) * self.speed

    def restart(self) -> None:
        """Read `origin` again from this instant: set-up time (loading models, say) does
        not count as session time."""
        self._start = time.monotonic()

    async def sleep_until(self, t: float) -> None:
        delay = (t - self.now()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)
