"""Replay a recorded session through the same `Source` interface as the live sensors.

Each modality gets its own source, so the supervisor, health checks and the pipeline see
a replay exactly as they see hardware. A row recorded at `t` seconds into the session is
emitted when the clock reads `origin + t`, with that as its event time. Speed comes from
the clock: a `ScaledClock(origin, speed)` runs the session `speed` times faster.

A replay behaves like a live sensor across a crash: when `run` is called again it resumes
at the clock's current time, and rows that went by while it was down are skipped and
counted in `status.extra["skipped"]`, never emitted late in a burst. The first `run`
starts where the clock stood when the source was built (the session start, or wherever a
clock set mid-session points): on a busy machine it may start late, and then its first
rows are emitted late, each with its own event time, rather than lost.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agent.clock import Clock
from agent.events import EdaEvent, Event, EvidenceSink, FrameEvent, HeartEvent
from agent.sources.base import Source, SourceStatus
from agent.sources.session import FrameRow, Session, SessionError

log = logging.getLogger("agent.sources.replay")

LATE_GRACE_S = 1.0  # a row this far (clock seconds) in the past at (re)start is still played
# ...but at high speed 1 clock second is a few milliseconds of real time, less than the gap
# between building the clock and the first `run`, so the grace is never under this much
# real time: otherwise a 200x replay would lose its first rows to event-loop scheduling.
LATE_GRACE_REAL_S = 0.1
CATCH_UP_REAL_S = 0.5  # the longest a replay's window waits for a source still behind it


class _ReplaySource:
    """Plays precomputed items `(emit_at, item)` on the clock; subclasses build events."""

    name = "replay"
    windowed = True  # its events are analysed by the window they fall in (not camera frames)

    def __init__(self, session: Session, clock: Clock, origin: float | None = None) -> None:
        self.session = session
        self.clock = clock
        self._hold: float | None = None  # rows due at or after this wait for the window
        self._released = asyncio.Event()
        self._released.set()
        # The event time of session t=0. A ScaledClock's origin is by construction the time
        # mapped to the session start (the recording's own start, or "now" when rebased).
        if origin is None:
            origin = getattr(clock, "origin", session.origin)
        self.origin = float(origin)
        self.status = SourceStatus()
        self.status.extra["skipped"] = 0
        self._items: Sequence[tuple[float, Any]] = self._build()
        self._emit_at = [self.origin + at for at, _ in self._items]
        # rows per item, so "skipped" counts session rows whatever the grouping
        self._rows_before = [0]
        for _, item in self._items:
            self._rows_before.append(self._rows_before[-1] + self._row_count(item))
        self._next = 0  # first item not yet emitted or skipped; survives a restart
        self._runs = 0  # calls to run(): only a restart skips what went by meanwhile
        # where the replay begins: a scaled clock's origin (the session start, or a point
        # mid-session it was set to), else where the clock stands now; the first run's own
        # lateness (building sources, loading models, a busy machine) is never skipped
        origin_of_clock = getattr(clock, "origin", None)
        self._begin = float(clock.now() if origin_of_clock is None else origin_of_clock)

    def _build(self) -> Sequence[tuple[float, Any]]:
        """(seconds from session start at which to emit, payload), sorted."""
        raise NotImplementedError

    async def _event(self, item: Any) -> Event | None:
        raise NotImplementedError

    def _row_count(self, item: Any) -> int:
        return 1

    def pending_before(self, t: float) -> bool:
        """Whether a row due before clock time `t` is still to be emitted."""
        return (
            not self.status.finished
            and self._next < len(self._emit_at)
            and self._emit_at[self._next] < t
        )

    def hold(self, t: float | None) -> None:
        """Hold back rows due at or after clock time `t` until `hold(None)`."""
        self._hold = t
        if t is None:
            self._released.set()
        else:
            self._released.clear()

    async def run(self, sink: EvidenceSink) -> None:
        self._runs += 1
        grace = max(LATE_GRACE_S, LATE_GRACE_REAL_S * self.clock.speed)
        since = self._begin if self._runs == 1 else self.clock.now()
        resume = bisect.bisect_left(self._emit_at, since - grace)
        if resume > self._next:
            skipped = self._rows_before[resume] - self._rows_before[self._next]
            self.status.extra["skipped"] = int(self.status.extra["skipped"]) + skipped
            log.info("%s replay resumes at the clock's time: %d rows skipped", self.name, skipped)
            self._next = resume
        while self._next < len(self._items):
            index = self._next
            event = await self._event(self._items[index][1])  # decode before waiting
            await self.clock.sleep_until(self._emit_at[index])
            while self._hold is not None and self._emit_at[index] >= self._hold:
                await self._released.wait()  # a window before this row is closing
            if event is not None:
                sink.put(event)
                self.status.mark()
            self._next = index + 1
        self.status.finished = True


class ReplayHeartSource(_ReplaySource):
    """One `HeartEvent` per heart.csv row, at the time the notification arrived."""

    name = "heart"

    def _build(self) -> Sequence[tuple[float, Any]]:
        return [(row.t, row) for row in self.session.heart_rows()]

    async def _event(self, item: Any) -> Event:
        return HeartEvent(
            t=self.origin + item.t, hr_bpm=item.hr, rr_ms=item.rr_ms, contact=item.contact
        )


class ReplayEdaSource(_ReplaySource):
    """eda.csv samples grouped into `EdaEvent`s of up to `rate_hz` samples (~1 per second).

    A BLE EDA sensor notifies a packet of samples rather than each sample, so grouping
    keeps the event rate and shape the live decoder produces. A group never spans a gap in
    the data, because an `EdaEvent` implies evenly spaced samples from its `t`. A group is
    emitted when its last sample has been measured (like a notification, which can only
    be sent once its packet is full), with `t` = its first sample's time.
    """

    name = "eda"

    def _build(self) -> Sequence[tuple[float, Any]]:
        rate = self.session.eda_rate_hz or 1.0
        size = max(1, round(rate))
        step = 1.0 / rate
        groups: list[tuple[float, Any]] = []
        current: list[tuple[float, float]] = []
        for t, value in self.session.eda_rows():
            if current and (len(current) >= size or abs(t - current[-1][0] - step) > step / 2):
                groups.append((current[-1][0], tuple(current)))
                current = []
            current.append((t, value))
        if current:
            groups.append((current[-1][0], tuple(current)))
        return groups

    def _row_count(self, item: Any) -> int:
        return len(item)

    async def _event(self, item: Any) -> Event:
        rate = self.session.eda_rate_hz or 1.0
        return EdaEvent(
            t=self.origin + item[0][0], microsiemens=tuple(v for _, v in item), rate_hz=rate
        )


class ReplayCameraSource(_ReplaySource):
    """One `FrameEvent` per frames.csv row; images are decoded only when played."""

    name = "camera"
    windowed = False  # frames are analysed later, on the face stage's own thread

    def _build(self) -> Sequence[tuple[float, Any]]:
        return [(row.t, row) for row in self.session.frame_rows()]

    async def _event(self, item: Any) -> Event | None:
        row: FrameRow = item
        try:
            # Decoding is file I/O plus CPU: off the event loop, like the live camera path.
            image = await asyncio.to_thread(self.session.load_frame, row)
        except SessionError as exc:
            # A bad frame is bad data, not a crash: restarting would not fix the file.
            self.status.rejected += 1
            self.status.extra["last_error"] = str(exc)
            log.warning("camera replay drops a frame: %s", exc)
            return None
        return FrameEvent(t=self.origin + row.t, image=image)


_SOURCES: dict[str, type[_ReplaySource]] = {
    "heart": ReplayHeartSource,
    "eda": ReplayEdaSource,
    "camera": ReplayCameraSource,
}


def replay_sources(session: Session, clock: Clock, origin: float | None = None) -> list[Source]:
    """One replay source per modality present in the session, in a fixed order."""
    return [_SOURCES[name](session, clock, origin) for name in session.modalities]


@contextlib.asynccontextmanager
async def window_closing(sources: Sequence[object], t: float) -> AsyncIterator[bool]:
    """Close a replay's window ending at clock time `t` in order with its rows.

    A replay's window ends on the clock its sources emit by, but each wait is its own
    timer: on a busy machine a row due just before `t` can fire just after the window's
    timer, and its beats would miss the window they belong to. Inside this context the
    heart and EDA replay sources among `sources` have emitted every row due before `t`
    (waiting at most CATCH_UP_REAL_S of real time; the value is False if one was still
    behind), and rows due at or after `t` are held back until it exits, so none reaches
    the window early either. Live sensors promise nothing and are never waited for; pass
    only sources that are running (one in backoff would cost every window the limit).
    """
    replays = [s for s in sources if isinstance(s, _ReplaySource) and s.windowed]
    for source in replays:
        source.hold(t)
    try:
        deadline = time.monotonic() + CATCH_UP_REAL_S
        while any(s.pending_before(t) for s in replays):
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.001)
        yield not any(s.pending_before(t) for s in replays)
    finally:
        for source in replays:
            source.hold(None)
