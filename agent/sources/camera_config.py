"""The `camera` source's configuration: which camera, at what size and rate it is analysed.

Only the pydantic model `CameraSourceConfig` and its checks live here, apart from the
capture code, so that `agent.config` can import it without numpy, picamera2 or OpenCV; the
sources it configures are in `agent.sources.camera`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
