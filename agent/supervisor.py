"""Supervised tasks: a failure is logged, counted and restarted with capped backoff.

Every source and stage runs under a `Supervisor`, so one modality failing (a camera that
errors, a strap out of range) never takes the others down.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger("agent.supervisor")

STABLE_AFTER_S = 60.0  # a run this long resets the backoff: it was a new failure, not a loop


def backoff_delays(initial: float, cap: float, jitter: float = 0.1) -> Iterator[float]:
    """initial, 2*initial, 4*initial ... capped at `cap`, each spread by +-jitter."""
    delay = initial
    while True:
        yield min(cap, delay) * (1 + random.uniform(-jitter, jitter))
        delay = min(cap, delay * 2)


@dataclass
class TaskState:
    name: str
    state: str = "starting"  # running | backoff | finished | stopped
    failures: int = 0
    restarts: int = 0
    last_error: str | None = None
    retry_at: float | None = None  # monotonic time of the next attempt while in backoff

    @property
    def in_backoff(self) -> bool:
        return self.state == "backoff"


class Supervisor:
    def __init__(self, initial_s: float = 1.0, max_s: float = 60.0) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.states: dict[str, TaskState] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self, name: str, factory: Callable[[], Awaitable[None]], restart: bool = True
    ) -> asyncio.Task[None]:
        """Run `factory()` as a task named `name`; restart it on failure when `restart`."""
        state = TaskState(name)
        self.states[name] = state
        task = asyncio.create_task(self._supervise(state, factory, restart), name=name)
        self.tasks[name] = task
        return task

    async def _supervise(
        self, state: TaskState, factory: Callable[[], Awaitable[None]], restart: bool
    ) -> None:
        delays = backoff_delays(self.initial_s, self.max_s)
        while True:
            state.state = "running"
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                state.state = "stopped"
                raise
            except Exception as exc:
                state.failures += 1
                state.last_error = f"{type(exc).__name__}: {exc}"
                if not restart:
                    state.state = "stopped"
                    log.exception("%s failed and is not restarted", state.name)
                    raise
                if time.monotonic() - started > STABLE_AFTER_S:
                    delays = backoff_delays(self.initial_s, self.max_s)
                delay = next(delays)
                log.error(
                    "%s failed (%s, failure %d); restarting in %.1fs",
                    state.name,
                    state.last_error,
                    state.failures,
                    delay,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                state.state = "backoff"
                state.retry_at = time.monotonic() + delay
                await asyncio.sleep(delay)
                state.retry_at = None
                state.restarts += 1
                continue
            state.state = "finished"
            return

    async def stop(self, names: list[str] | None = None, timeout: float = 5.0) -> None:
        """Cancel the named tasks (default: all) and wait up to `timeout` for them."""
        chosen = [t for n, t in self.tasks.items() if names is None or n in names]
        for task in chosen:
            task.cancel()
        if chosen:
            await asyncio.wait(chosen, timeout=timeout)
