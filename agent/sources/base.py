"""What every source (live or replayed) looks like to the runtime."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from agent.events import EvidenceSink


@dataclass
class SourceStatus:
    """Counters a source keeps; health checks and stats read them.

    `last_data` is `time.monotonic()` at the last event, so freshness is immune to wall
    clock steps (NTP on a Pi that booted without a network).
    """

    events: int = 0
    rejected: int = 0
    last_data: float | None = None
    finished: bool = False  # a replay that reached its end; never stale
    extra: dict[str, object] = field(default_factory=dict)

    def mark(self) -> None:
        self.events += 1
        self.last_data = time.monotonic()

    def age(self) -> float | None:
        """Seconds since the last event, or None before the first one."""
        return None if self.last_data is None else time.monotonic() - self.last_data


class Source(Protocol):
    """A supervised producer of evidence.

    `run` emits events into the sink until it is cancelled or its data ends (then it
    returns and sets `status.finished`). Any exception it raises is logged and counted by
    the supervisor, which calls `run` again after a backoff: a source must be restartable.
    """

    name: str
    status: SourceStatus

    async def run(self, sink: EvidenceSink) -> None: ...
