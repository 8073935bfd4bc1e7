"""Live camera sources: the Pi camera through picamera2, or a USB camera through OpenCV.

The Pi's ISP scales for free, so the camera is asked for a small `lores` stream at the face
detector's size and the CPU never touches a full-size frame. On Pi 4 and older (VC4 ISP)
lores must be YUV420: its Y plane is a grayscale image for free (the array is
(h*3//2, stride), so the Y plane is rows [:h], columns [:w]). Pi 5 (PiSP) can deliver RGB;
libcamera's RGB888 is B,G,R in memory, so it is reversed to R,G,B here.

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
restarts the source with capped backoff. picamera2 comes from apt, never pip, and cannot
import off a Pi: it is imported only when the source starts, with an error that says how
to install it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.clock import Clock, WallClock
from agent.events import EvidenceSink, FrameEvent
from agent.sources.base import SourceStatus

log = logging.getLogger("agent.sources.camera")

JOIN_GRACE_S = 0.5  # beyond the few frame intervals a healthy capture thread needs to exit
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


class CameraError(RuntimeError):
    """The camera cannot be opened or stopped delivering frames."""


class CameraSourceConfig(BaseModel):
    """The `camera` source: which camera, at what size and rate frames are analysed."""

    model_config = ConfigDict(extra="forbid", title="Camera source")

    kind: Literal["picamera2", "usb"] = Field(
        "picamera2",
        title="Camera kind",
        description="picamera2: a Raspberry Pi camera (libcamera, from apt python3-picamera2); "
        "usb: a UVC webcam through OpenCV.",
    )
    camera_index: int = Field(
        0,
        ge=0,
        title="Camera index",
        description="Which camera: picamera2's camera number or OpenCV's device index.",
    )
    analysis_fps: float = Field(
        5.0,
        gt=0,
        le=60,
        title="Analysis rate (frames/s)",
        description="At most this many frames per second are handed to face analysis; "
        "frames in between are released unread.",
    )
    frame_rate: float = Field(
        15.0,
        gt=0,
        le=120,
        title="Sensor frame rate (frames/s)",
        description="The camera's FrameRate control. Higher than the analysis rate keeps "
        "exposures short (less motion blur) and the newest frame fresh.",
    )
    main_size: tuple[int, int] = Field(
        (640, 480),
        title="Main stream size (width, height)",
        description="The ISP's main output, which fixes the field of view and aspect ratio; "
        "never read by the agent. Even numbers.",
    )
    lores_size: tuple[int, int] = Field(
        (128, 96),
        title="Analysis stream size (width, height)",
        description="The lores stream the detector reads, scaled by the ISP for free. Even "
        "numbers, no larger than main_size and with its aspect ratio (the ISP scales each "
        "axis separately, so another aspect would stretch faces). 128 wide fits the "
        "short-range detector's 128x128 input with no resampling.",
    )
    lores_format: Literal["auto", "YUV420", "RGB888"] = Field(
        "auto",
        title="Analysis stream format",
        description="auto: YUV420 (grayscale from the Y plane) on Pi 4 and older, whose ISP "
        "allows nothing else for lores; RGB888 on Pi 5.",
    )
    frame_timeout_s: float = Field(
        5.0,
        gt=0,
        title="Frame timeout (s)",
        description="No frame for this long is a camera failure: the source restarts.",
    )

    @model_validator(mode="after")
    def _check(self) -> CameraSourceConfig:
        for name in ("main_size", "lores_size"):
            w, h = getattr(self, name)
            if w <= 0 or h <= 0 or w % 2 or h % 2:
                raise ValueError(f"{name} must be positive even numbers, got {w}x{h}")
        (mw, mh), (lw, lh) = self.main_size, self.lores_size
        if lw > mw or lh > mh:
            raise ValueError(f"lores_size {lw}x{lh} may not exceed main_size {mw}x{mh}")
        if abs(lw / lh - mw / mh) > 0.02 * (mw / mh):
            raise ValueError(
                f"lores_size {lw}x{lh} and main_size {mw}x{mh} differ in aspect ratio; "
                "the ISP would stretch faces"
            )
        if self.analysis_fps > self.frame_rate:
            raise ValueError(
                f"analysis_fps {self.analysis_fps} exceeds frame_rate {self.frame_rate}"
            )
        return self


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
        and is then closed: leaked, it would be busy for every restart after."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._open))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:

            def close_if_opened(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    threading.Thread(target=self._close, args=(done.result(),), daemon=True).start()

            opening.add_done_callback(close_if_opened)
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


def import_picamera2() -> Any:
    """The picamera2 module, or a CameraError that says how to get it."""
    try:
        return importlib.import_module("picamera2")
    except ImportError as exc:
        raise CameraError(
            f"picamera2 is not importable ({exc}). On Raspberry Pi OS: "
            "`sudo apt install python3-picamera2`, and create the venv with "
            "--system-site-packages (picamera2 is never installed with pip)"
        ) from exc


def pi_platform() -> str:
    """'pisp' on Pi 5 (RGB lores allowed), 'vc4' on Pi 4 and older.

    picamera2's own probe is asked first; a device-tree model string is the fallback.
    """
    try:
        plat = importlib.import_module("picamera2.platform")
        return "pisp" if plat.get_platform().name == "PISP" else "vc4"
    except (ImportError, AttributeError):
        pass
    try:
        return "pisp" if "Raspberry Pi 5" in DEVICE_TREE_MODEL.read_text() else "vc4"
    except OSError:
        return "vc4"


class PiCameraSource(_ThreadedCamera):
    """A Raspberry Pi camera through picamera2; emits gray (YUV420) or RGB FrameEvents."""

    def __init__(self, cfg: CameraSourceConfig, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        self.lores_format: str | None = None

    def _choose_format(self, platform: str) -> str:
        fmt = self.cfg.lores_format
        if fmt == "auto":
            return "RGB888" if platform == "pisp" else "YUV420"
        if fmt != "YUV420" and platform != "pisp":
            raise CameraError(f"lores_format {fmt} needs a Pi 5: Pi 4 and older allow only YUV420")
        return fmt

    def _open(self) -> Any:
        picamera2 = import_picamera2()
        cls = picamera2.Picamera2
        cameras = cls.global_camera_info()
        if self.cfg.camera_index >= len(cameras):
            raise CameraError(
                f"camera {self.cfg.camera_index} not found: libcamera sees {len(cameras)} "
                "camera(s); check the ribbon cable and `rpicam-hello --list-cameras`"
            )
        platform = pi_platform()
        fmt = self._choose_format(platform)
        cam = cls(self.cfg.camera_index)
        try:
            config = cam.create_video_configuration(
                main={"size": tuple(self.cfg.main_size), "format": "YUV420"},
                lores={"size": tuple(self.cfg.lores_size), "format": fmt},
                controls={"FrameRate": self.cfg.frame_rate},
                buffer_count=4,
            )
            cam.configure(config)
            cam.start()
        except BaseException:
            cam.close()
            raise
        self.lores_format = fmt
        self.status.extra.update({"platform": platform, "format": fmt})
        model = getattr(cam, "camera_properties", {}).get("Model", "?")
        log.info(
            "%s: %s on %s, lores %dx%d %s at %g fps, analysed at %g fps",
            self.name,
            model,
            platform,
            *self.cfg.lores_size,
            fmt,
            self.cfg.frame_rate,
            self.cfg.analysis_fps,
        )
        return cam

    def _grab(self, cam: Any) -> CapturedFrame | None:
        request = cam.capture_request()
        try:
            metadata = request.get_metadata()
            sensor_ns = int(metadata.get("SensorTimestamp") or time.monotonic_ns())
            self.status.extra["frames"] = int(self.status.extra["frames"]) + 1
            if not self._gate.due(sensor_ns / 1e9):
                return None
            array = request.make_array("lores")
        finally:
            request.release()
        return CapturedFrame(sensor_ns, self._convert(array))

    def _convert(self, array: np.ndarray) -> np.ndarray:
        """Camera buffer -> (h, w) gray or (h, w, 3) RGB, contiguous and owned (the camera
        reuses its buffer as soon as the request is released)."""
        w, h = self.cfg.lores_size
        if self.lores_format == "YUV420":
            return np.ascontiguousarray(array[:h, :w])
        return np.ascontiguousarray(array[:h, :w, 2::-1])  # B,G,R in memory -> R,G,B

    def _close(self, cam: Any) -> None:
        try:
            cam.stop()
        finally:
            cam.close()


class UsbCameraSource(_ThreadedCamera):
    """A UVC webcam through OpenCV (optional: only when cv2 imports). Frames are scaled to
    lores_size by the CPU and timed on arrival, since UVC timestamps are not comparable."""

    def _open(self) -> Any:
        try:
            cv2 = importlib.import_module("cv2")
        except ImportError as exc:
            raise CameraError(
                f"kind: usb needs OpenCV (apt install python3-opencv): {exc}"
            ) from exc
        cap = cv2.VideoCapture(self.cfg.camera_index)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open USB camera {self.cfg.camera_index}")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.main_size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.main_size[1])
        cap.set(cv2.CAP_PROP_FPS, self.cfg.frame_rate)
        self._cv2 = cv2
        self.status.extra.update({"platform": "usb", "format": "RGB"})
        return cap

    def _grab(self, cap: Any) -> CapturedFrame | None:
        ok, frame = cap.read()
        if not ok:
            raise CameraError(f"USB camera {self.cfg.camera_index} stopped delivering frames")
        sensor_ns = time.monotonic_ns()
        self.status.extra["frames"] = int(self.status.extra["frames"]) + 1
        if not self._gate.due(sensor_ns / 1e9):
            return None
        h, w = frame.shape[:2]
        scale = min(self.cfg.lores_size[0] / w, self.cfg.lores_size[1] / h, 1.0)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # keep the aspect ratio
        small = self._cv2.resize(frame, size, interpolation=self._cv2.INTER_AREA)
        return CapturedFrame(sensor_ns, np.ascontiguousarray(small[:, :, ::-1]))

    def _close(self, cap: Any) -> None:
        cap.release()


def camera_source(
    cfg: CameraSourceConfig,
    *,
    name: str = "camera",
    clock: Clock | None = None,
    ready: Callable[[], bool] | None = None,
) -> PiCameraSource | UsbCameraSource:
    """The source for `cfg.kind`. `ready`, if given, is asked on the event loop before each
    frame is emitted; False drops the frame (counted), so a busy face stage never queues."""
    cls = PiCameraSource if cfg.kind == "picamera2" else UsbCameraSource
    return cls(cfg, name=name, clock=clock, ready=ready)
