"""The capture machinery both camera kinds share: a capture thread, a mailbox, a rate gate.

`_ThreadedCamera` runs a device's blocking grab on its own thread and hands frames to the
event loop as `FrameEvent`s; `_Mailbox` is the one-slot hand-over between them, `RateGate`
picks the frames to analyse, `CapturedFrame` is a frame copied out of the camera's buffer,
and `CameraError` is any camera failure. The device adapters (picamera2, OpenCV) subclass
`_ThreadedCamera` in `agent.sources.camera`.

Threads: `capture_request()` blocks until the next frame, so capture runs on its own thread
and hands frames to the event loop through a one-slot mailbox. The newest frame always
wins: when the loop (or the consumer behind `ready`) is slower than the analysis rate,
older frames are dropped and counted in `status.extra["dropped"]`; a backlog never builds.
The analysis rate is applied on sensor timestamps in the capture thread, so frames that
are not analysed are released without being copied.

Time: SensorTimestamp is the start of exposure in nanoseconds on the monotonic clock (no
suspend on a Pi, so boot time and monotonic agree); it is mapped to the agent's clock when
the frame is handed over, so an event's time is when the light hit the sensor.

Failures: any camera error (no camera, camera busy, capture error, no frame within
`frame_timeout_s`) raises out of `run` after the camera is closed, and the supervisor
restarts the source with capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.clock import Clock, WallClock
from agent.events import EvidenceSink, FrameEvent
from agent.sources.base import SourceStatus
from agent.sources.camera_config import CameraSourceConfig

log = logging.getLogger("agent.sources.camera")  # one logger for all the camera messages

JOIN_GRACE_S = 0.5  # beyond the few frame intervals a healthy capture thread needs to exit


class CameraError(RuntimeError):
    """The camera cannot be opened or stopped delivering frames."""


class RateGate:
    """Which frames to analyse for a target rate, decided on sensor timestamps.

    A frame is due when it is within half a frame interval of the next due time; the due
    time then advances by one period (not from the frame's own time), so rates that do not
    divide the sensor rate still average out right. After a gap it re-anchors instead of
    letting a burst of frames through.
    """

    def __init__(self, rate_hz: float, frame_interval_s: float) -> None:
        self.period = 1.0 / rate_hz
        self.tolerance = frame_interval_s / 2
        self.next_due: float | None = None

    def due(self, t: float) -> bool:
        if self.next_due is not None and t < self.next_due - self.tolerance:
            return False
        if self.next_due is None or t - self.next_due > self.period:
            self.next_due = t
        self.next_due += self.period
        return True


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """A frame copied out of the camera's buffer: sensor time (monotonic ns) and pixels."""

    sensor_ns: int
    image: np.ndarray


class _Mailbox:
    """One-slot, latest-wins hand-over from the capture thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._event = asyncio.Event()
        self._frame: CapturedFrame | None = None
        self._error: BaseException | None = None
        self.overwritten = 0

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the loop closed under us: nobody is waiting any more
            pass

    def put(self, frame: CapturedFrame) -> None:
        with self._lock:
            if self._frame is not None:
                self.overwritten += 1
            self._frame = frame
        self._wake()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self._error = error
        self._wake()

    async def get(self, timeout: float) -> CapturedFrame:
        while True:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                # that arrives as the event is set, and the source would never stop
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                raise CameraError(f"no frame from the camera for {timeout:g} s") from None
            self._event.clear()
            with self._lock:
                frame, self._frame, error = self._frame, None, self._error
            if error is not None:
                raise error
            if frame is not None:
                return frame


class _ThreadedCamera:
    """What both camera kinds share: a capture thread, the mailbox, the rate, the counters.

    Subclasses provide `_open` (returns a handle), `_grab(handle)` (the next frame, or None
    for a frame not due), and `_close(handle)`; all three run on worker threads.
    """

    def __init__(
        self,
        cfg: CameraSourceConfig,
        *,
        name: str = "camera",
        clock: Clock | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.clock = clock or WallClock()
        self.ready = ready
        self.status = SourceStatus()
        self.status.extra.update({"dropped": 0, "frames": 0})
        self._dropped = 0
        self._gate = RateGate(cfg.analysis_fps, 1.0 / cfg.frame_rate)

    def _open(self) -> Any:
        raise NotImplementedError

    def _grab(self, handle: Any) -> CapturedFrame | None:
        raise NotImplementedError

    def _close(self, handle: Any) -> None:
        raise NotImplementedError

    def _capture_loop(self, handle: Any, mailbox: _Mailbox, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                frame = self._grab(handle)
                if frame is not None and not stop.is_set():
                    mailbox.put(frame)
        except BaseException as exc:  # handed to the loop, which raises it from run()
            mailbox.fail(exc)

    def _shutdown(self, handle: Any, thread: threading.Thread, stop: threading.Event) -> None:
        stop.set()
        thread.join(JOIN_GRACE_S + 3.0 / self.cfg.frame_rate)
        if thread.is_alive():
            log.warning(
                "%s capture thread is stuck in the driver; closing the camera anyway", self.name
            )
        self._close_logged(handle)

    def _close_logged(self, handle: Any) -> None:
        try:
            self._close(handle)
        except Exception as exc:
            log.warning("%s: closing the camera failed: %s", self.name, exc)

    def _event_time(self, sensor_ns: int) -> float:
        """Sensor time -> the agent's clock: now, minus how long ago the exposure started."""
        age_s = max(0, time.monotonic_ns() - sensor_ns) / 1e9
        return self.clock.now() - age_s

    async def _open_camera(self) -> Any:
        """Open on a worker thread. If cancelled meanwhile, the camera still finishes opening
        and is then closed: leaked, it would be busy for every restart after.

        The worker and the cancellation settle, under one lock, who closes it: a worker that
        finds the opening abandoned closes the camera itself; a camera it had already handed
        back, unread, is closed by the cancelled task through a job on the loop's default
        executor. Either way the close is done by the time that executor is shut down, which
        asyncio.run waits for."""
        abandoned = False
        handed: Any = None  # the camera, once the worker has handed it back
        lock = threading.Lock()

        def open_unless_abandoned() -> Any:
            nonlocal handed
            handle = self._open()
            with lock:
                if not abandoned:
                    handed = handle
                    return handle
            self._close_logged(handle)
            raise CameraError(f"{self.name}: opening abandoned, camera closed again")

        opening = asyncio.ensure_future(asyncio.to_thread(open_unless_abandoned))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            with lock:
                abandoned = True
                unread = handed
            # read the outcome, so an abandoned opening's error is not reported as unretrieved
            opening.add_done_callback(lambda done: done.cancelled() or done.exception())
            if unread is not None:  # opened and handed back, but the task never resumed
                try:
                    asyncio.get_running_loop().run_in_executor(None, self._close_logged, unread)
                except RuntimeError:  # no executor left (a loop run by hand): close it here
                    self._close_logged(unread)
            raise

    async def run(self, sink: EvidenceSink) -> None:
        handle = await self._open_camera()
        stop = threading.Event()
        mailbox = _Mailbox(asyncio.get_running_loop())
        thread = threading.Thread(
            target=self._capture_loop,
            args=(handle, mailbox, stop),
            name=f"{self.name}-capture",
            daemon=True,
        )
        thread.start()
        extra = self.status.extra
        try:
            while True:
                frame = await mailbox.get(self.cfg.frame_timeout_s)
                if self.ready is not None and not self.ready():
                    self._dropped += 1  # the consumer is busy: it would only queue
                else:
                    sink.put(FrameEvent(self._event_time(frame.sensor_ns), frame.image, self.name))
                    self.status.mark()
                extra["dropped"] = self._dropped + mailbox.overwritten
        finally:
            # shielded: a second cancellation must not leave the camera open, or the
            # restarted source would find it busy
            await asyncio.shield(asyncio.to_thread(self._shutdown, handle, thread, stop))
            self._dropped += mailbox.overwritten  # the count survives restarts
            extra["dropped"] = self._dropped
