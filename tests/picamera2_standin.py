"""A stand-in for picamera2, which cannot import off a Raspberry Pi (it needs libcamera).

It copies the API shapes the camera source uses and, more importantly, the quirks that
break code written against a mental model of a camera instead of the real one:

- sizes must be even (YUV420 subsamples chroma 2x2) and lores may not exceed main;
- on Pi 4 and older (VC4) the lores stream must be YUV420, and `make_array("lores")` is the
  whole planar buffer, shape (h*3//2, stride) with the stride padded to 64 bytes, Y on top;
- RGB888 is B,G,R in memory (libcamera names formats by the 32-bit word, little-endian);
- `capture_request()` blocks until the next frame and hands over a buffer that must be
  `release()`d: hold too many and the camera stalls (here: raises);
- metadata's SensorTimestamp is the start of exposure, monotonic nanoseconds;
- the FrameRate control paces frames; a slow caller gets the newest frame, older ones lost;
- a camera opened twice is busy until closed (a restart that leaks it never recovers).

Frames are a real photograph (scikit-image's astronaut), cropped to 4:3 like a sensor's
field of view and scaled to each stream's size. Tests inject the module with `install()`.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

SCENE_ASPECT_ROWS = 384  # astronaut is 512x512: its top 512x384 is a 4:3 "sensor" view


class Platform(Enum):
    VC4 = 0
    PISP = 1


@dataclass
class Faults:
    """Failures to inject; counts are frames delivered by the camera instance they hit."""

    capture_error_after: int | None = None  # raise from capture_request after N frames
    hang_after: int | None = None  # block capture_request (until close) after N frames
    start_delay_s: float = 0.0  # a slow start(), as the first start after boot is
    only_first_instance: bool = True  # a restarted camera works again


@dataclass
class StandinState:
    platform: Platform = Platform.VC4
    cameras: int = 1
    faults: Faults = field(default_factory=Faults)
    instances: int = 0
    open_cameras: set[int] = field(default_factory=set)
    frames: list[tuple[int, float]] = field(default_factory=list)  # (SensorTimestamp, wall)
    lock: threading.Lock = field(default_factory=threading.Lock)


state = StandinState()

platform = types.ModuleType("picamera2.platform")
platform.Platform = Platform  # type: ignore[attr-defined]
platform.get_platform = lambda: state.platform  # type: ignore[attr-defined]


def install(monkeypatch: Any, platform_name: str = "vc4", cameras: int = 1) -> StandinState:
    """Make `import picamera2` find this module; returns the fresh shared state."""
    global state
    state = StandinState(platform=Platform[platform_name.upper()], cameras=cameras)
    monkeypatch.setitem(sys.modules, "picamera2", sys.modules[__name__])
    monkeypatch.setitem(sys.modules, "picamera2.platform", platform)
    return state


_SCENES: dict[tuple[int, int], np.ndarray] = {}


def scene_rgb(size: tuple[int, int]) -> np.ndarray:
    """The photograph as the ISP would output it at `size` (w, h): RGB uint8 (h, w, 3)."""
    if size not in _SCENES:
        from skimage import data
        from skimage.transform import resize

        photo = data.astronaut()[:SCENE_ASPECT_ROWS]
        w, h = size
        scaled = resize(photo, (h, w), anti_aliasing=True, preserve_range=True)
        _SCENES[size] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return _SCENES[size]


def yuv420_planes(rgb: np.ndarray, stride: int) -> np.ndarray:
    """Planar I420 with full-range BT.601 (sYCC): Y h rows, then U and V at half size,
    packed row after row into a (h*3//2, stride) buffer as libcamera lays it out."""
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float32)
    y = f @ np.array([0.299, 0.587, 0.114], np.float32)
    u = f @ np.array([-0.168736, -0.331264, 0.5], np.float32) + 128
    v = f @ np.array([0.5, -0.418688, -0.081312], np.float32) + 128
    u = u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    buf = np.zeros((h * 3 // 2, stride), np.uint8)
    buf[:h, :w] = np.clip(np.rint(y), 0, 255)
    chroma = np.zeros((2, h // 2, stride // 2), np.uint8)
    chroma[0, :, : w // 2] = np.clip(np.rint(u), 0, 255)
    chroma[1, :, : w // 2] = np.clip(np.rint(v), 0, 255)
    buf[h:] = chroma.reshape(h // 2, stride)
    return buf


def _stream_array(stream: dict[str, Any]) -> np.ndarray:
    w, h = stream["size"]
    rgb = scene_rgb((w, h))
    fmt = stream["format"]
    if fmt == "YUV420":
        return yuv420_planes(rgb, -(-w // 64) * 64)
    if fmt == "RGB888":
        return np.ascontiguousarray(rgb[:, :, ::-1])  # B,G,R in memory
    if fmt == "BGR888":
        return rgb.copy()
    if fmt in ("XBGR8888", "XRGB8888"):
        order = rgb if fmt == "XBGR8888" else rgb[:, :, ::-1]
        return np.concatenate([order, np.full((h, w, 1), 255, np.uint8)], axis=2)
    raise ValueError(f"stand-in cannot render format {fmt}")


class CompletedRequest:
    """One captured frame's buffers and metadata; valid until `release()`."""

    def __init__(self, camera: Picamera2, metadata: dict[str, Any]) -> None:
        self._camera = camera
        self._metadata = metadata
        self._released = False

    def _check(self) -> None:
        if self._released:
            raise RuntimeError("request used after release(): its buffers were recycled")

    def make_array(self, name: str) -> np.ndarray:
        self._check()
        stream = self._camera.camera_config.get(name) if self._camera.camera_config else None
        if stream is None:
            raise KeyError(f"no stream named {name!r} is configured")
        return _stream_array(stream)

    def get_metadata(self) -> dict[str, Any]:
        self._check()
        return dict(self._metadata)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._camera._held -= 1


class Picamera2:
    """The subset of picamera2.Picamera2 the agent uses, with its rules enforced."""

    def __init__(self, camera_num: int = 0) -> None:
        with state.lock:
            if camera_num >= state.cameras:
                raise IndexError("list index out of range")
            if camera_num in state.open_cameras:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            state.open_cameras.add(camera_num)
            state.instances += 1
            self._instance = state.instances
        self.camera_num = camera_num
        self.camera_config: dict[str, Any] | None = None
        self.controls: dict[str, Any] = {"FrameRate": 30.0}
        self.started = False
        self._closed = False
        self._held = 0
        self._delivered = 0
        self._t0_ns = 0
        self._last_index = -1
        self._unblock = threading.Event()

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [
            {"Model": "imx708", "Location": 2, "Rotation": 180, "Id": f"/base/cam{i}", "Num": i}
            for i in range(state.cameras)
        ]

    @property
    def camera_properties(self) -> dict[str, Any]:
        return {"Model": "imx708", "PixelArraySize": (4608, 2592), "Rotation": 180}

    def _configuration(
        self,
        use_case: str,
        main: dict[str, Any] | None,
        lores: dict[str, Any] | None,
        controls: dict[str, Any] | None,
        buffer_count: int,
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "use_case": use_case,
            "main": {"format": "XBGR8888", "size": (640, 480), **(main or {})},
            "lores": None,
            "controls": dict(controls or {}),
            "buffer_count": buffer_count,
        }
        if lores is not None:
            config["lores"] = {"format": "YUV420", "size": config["main"]["size"], **lores}
        return config

    def create_preview_configuration(
        self, main=None, lores=None, controls=None, buffer_count: int = 4, **_: Any
    ) -> dict[str, Any]:
        return self._configuration("preview", main, lores, controls, buffer_count)

    def create_video_configuration(
        self, main=None, lores=None, controls=None, buffer_count: int = 6, **_: Any
    ) -> dict[str, Any]:
        return self._configuration("video", main, lores, controls, buffer_count)

    def configure(self, config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        main, lores = config["main"], config.get("lores")
        for name, stream in (("main", main), ("lores", lores)):
            if stream is None:
                continue
            w, h = stream["size"]
            if w % 2 or h % 2:
                raise RuntimeError(f"{name} stream size {w}x{h} must be even")
        if lores is not None:
            if lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if state.platform is Platform.VC4 and lores["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV")
        self.camera_config = config
        self.controls.update(config.get("controls") or {})
        for stream in (main, lores):  # render now: configuring a real camera takes time too
            if stream is not None and stream["format"] in ("YUV420", "RGB888"):
                _stream_array(stream)

    def set_controls(self, controls: dict[str, Any]) -> None:
        if "FrameRate" in controls and not controls["FrameRate"] > 0:
            raise ValueError("FrameRate must be positive")
        self.controls.update(controls)
        self._t0_ns, self._last_index = time.monotonic_ns(), -1  # re-pace from now

    def start(self) -> None:
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        time.sleep(state.faults.start_delay_s)
        self.started = True
        self._t0_ns = time.monotonic_ns()
        self._last_index = -1

    def stop(self) -> None:
        self.started = False
        self._unblock.set()

    def close(self) -> None:
        if self._closed:
            return
        self.stop()
        self._closed = True
        with state.lock:
            state.open_cameras.discard(self.camera_num)

    def _fault_applies(self) -> bool:
        return not state.faults.only_first_instance or self._instance == 1

    def capture_request(self, wait: Any = None, flush: Any = None) -> CompletedRequest:
        if not self.started:
            raise RuntimeError("Camera must be started before capturing")
        faults = state.faults
        if self._fault_applies():
            if (
                faults.capture_error_after is not None
                and self._delivered >= faults.capture_error_after
            ):
                raise RuntimeError("Camera frontend has timed out!")
            if faults.hang_after is not None and self._delivered >= faults.hang_after:
                self._unblock.wait()
                raise RuntimeError("Camera stopped while a capture was pending")
        if self._held >= self.camera_config["buffer_count"] - 1:
            raise RuntimeError("all buffers are held: release() captured requests")
        duration_ns = int(1e9 / self.controls["FrameRate"])
        # frame k is exposed from t0 + k*duration and delivered one duration later; a caller
        # that comes late gets the newest delivered frame, as picamera2's queue does
        now = time.monotonic_ns()
        newest = (now - self._t0_ns) // duration_ns - 1
        index = max(self._last_index + 1, newest)
        deliver_at = self._t0_ns + (index + 1) * duration_ns
        if deliver_at > now:
            time.sleep((deliver_at - now) / 1e9)
        self._last_index = index
        self._delivered += 1
        self._held += 1
        sensor_ns = self._t0_ns + index * duration_ns
        wall = time.time() - (time.monotonic_ns() - sensor_ns) / 1e9
        with state.lock:
            state.frames.append((sensor_ns, wall))
        metadata = {
            "SensorTimestamp": sensor_ns,
            "FrameDuration": duration_ns // 1000,
            "ExposureTime": min(duration_ns // 1000, 20000),
            "ScalerCrop": (0, 0, 4608, 2592),
        }
        return CompletedRequest(self, metadata)

    def capture_array(self, name: str = "main") -> np.ndarray:
        request = self.capture_request()
        try:
            return request.make_array(name)
        finally:
            request.release()

    def __enter__(self) -> Picamera2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
