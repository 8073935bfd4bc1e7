"""Live camera sources: the Pi camera through picamera2, or a USB camera through OpenCV.

Here live the two device adapters, `PiCameraSource` and `UsbCameraSource`, and
`camera_source`, which picks one for the configured kind; both run on the shared capture
thread, mailbox and rate gate of `agent.sources.camera_capture` (threads, timing and
failure handling are described there), and their configuration is
`agent.sources.camera_config.CameraSourceConfig`.

The Pi's ISP scales for free, so the camera is asked for a small `lores` stream at the face
detector's size and the CPU never touches a full-size frame. On Pi 4 and older (VC4 ISP)
lores must be YUV420: its Y plane is a grayscale image for free (the array is
(h*3//2, stride), so the Y plane is rows [:h], columns [:w]). Pi 5 (PiSP) can deliver RGB;
libcamera's RGB888 is B,G,R in memory, so it is reversed to R,G,B here.

picamera2 comes from apt, never pip, and cannot import off a Pi: it is imported only when
the source starts, with an error that says how to install it.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.clock import Clock
from agent.sources.camera_capture import CameraError, CapturedFrame, _ThreadedCamera
from agent.sources.camera_config import CameraSourceConfig

log = logging.getLogger("agent.sources.camera")

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


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
