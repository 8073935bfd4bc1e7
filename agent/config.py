"""The agent's configuration: `AgentConfig`, the whole YAML file, and its sections.

Every field has a title and a description (they become `emotion-agent schema config`) and
unknown keys are rejected. This module holds the top-level model and the sections about
the device and what it senses: device, sources, windows, baseline, models, privacy and
runtime; the publishing sections (mqtt, publish, homeassistant, secrets) are in
agent/config_mqtt.py, the shared base in agent/config_base.py, and reading a file, with
every error located by file, line and key, in agent/config_loader.py.
"""

from __future__ import annotations

import math
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config_base import BackoffConfig, Model, setting
from agent.config_mqtt import HomeAssistantConfig, MqttConfig, PublishConfig
from agent.sources.ble_config import EdaSourceConfig, HeartSourceConfig
from agent.sources.camera_config import CameraSourceConfig

DEFAULT_STATE_DIR = "/var/lib/emotion-agent"


class ReplayConfig(Model):
    session: str = setting(
        ..., "Session folder", "A recorded session (see agent/sources/session.py)."
    )
    speed: float = setting(1.0, "Speed", "1 = real time; 10 = ten times faster.", gt=0, le=10_000)
    rebase_time: bool = setting(
        True,
        "Rebase time",
        "true: the session starts now; false: timestamps keep the recording's own start time.",
    )


class SourcesConfig(Model):
    replay: ReplayConfig | None = setting(
        None,
        "Session replay",
        "Play a recorded session through the live sources' interfaces. When set, it replaces "
        "the live heart, eda and camera sources.",
    )
    heart: HeartSourceConfig | None = setting(
        None, "Heart-rate strap", "A Bluetooth LE Heart Rate Service strap (RR intervals)."
    )
    eda: EdaSourceConfig | None = setting(
        None, "EDA sensor", "A Bluetooth LE skin-conductance sensor with a configured decoder."
    )
    camera: CameraSourceConfig | None = setting(
        None, "Camera", "The Pi camera (picamera2) or a USB webcam, for facial expression."
    )
    stale_after_s: float = setting(
        30.0, "Stale after", "A source silent for this long marks the agent unhealthy.", gt=0
    )
    restart: BackoffConfig = setting(
        BackoffConfig(initial_s=1.0, max_s=60.0),
        "Restart backoff",
        "Capped exponential delay before a failed source or stage restarts.",
    )


class WindowsConfig(Model):
    state_s: float = setting(10.0, "State window", "A state message every this many seconds.", ge=1)
    summary_s: float = setting(
        60.0,
        "Summary window",
        "A summary message every this many seconds: a whole multiple of state_s "
        "(default: the whole number of state windows nearest above 60 s).",
        ge=1,
    )
    min_beats: int = setting(
        5, "Minimum beats", "Fewer RR intervals: heart evidence is insufficient.", ge=1
    )
    min_eda_s: float = setting(
        5.0, "Minimum EDA", "Fewer seconds of EDA samples: skin evidence is insufficient.", ge=0
    )
    hrv_window_s: float = setting(
        60.0,
        "HRV window",
        "Heart features use the RR of this many seconds up to each window's end.",
        ge=10,
    )
    eda_window_s: float = setting(
        60.0,
        "EDA window",
        "Skin features use the samples of this many seconds up to each window's end.",
        ge=10,
    )
    max_corrected_fraction: float = setting(
        0.2,
        "Maximum corrected beats",
        "Above this fraction of corrected RR intervals, heart evidence is rejected.",
        ge=0,
        le=1,
    )
    gap_tolerance_s: float = setting(
        0.5,
        "Gap tolerance",
        "BLE delivery jitter tolerated before a notification counts as dropped (splits RR).",
        gt=0,
    )
    scr_min_amplitude_us: float = setting(
        0.01,
        "SCR threshold",
        "Absolute amplitude (µS) a skin-conductance response must reach to count.",
        gt=0,
    )

    @model_validator(mode="after")
    def _summary_spans_states(self) -> WindowsConfig:
        if "summary_s" not in self.model_fields_set:  # default: the state windows of ~60 s
            self.summary_s = self.state_s * max(1, math.ceil(60.0 / self.state_s - 1e-9))
        ratio = self.summary_s / self.state_s
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"summary_s ({self.summary_s:g}) must be a whole multiple of state_s "
                f"({self.state_s:g})"
            )
        return self

    def aggregator_options(self) -> dict[str, float | int]:
        """The options the window aggregator takes (all but the window lengths)."""
        return self.model_dump(exclude={"state_s", "summary_s"})


class BaselineConfig(Model):
    calibration_s: float = setting(
        180.0,
        "Calibration",
        "Seconds of each physiological signal that form the wearer's baseline before "
        "physiology counts (the first minutes of wear, or after a reset).",
        ge=0,
    )
    adapt_half_life_h: float | None = setting(
        24.0,
        "Adaptation half-life",
        "After calibration the baseline follows the wearer slowly, with this half-life in "
        "hours of signal (only from windows near baseline); null: never adapt.",
        gt=0,
    )
    persist: bool = setting(
        True,
        "Persist",
        "Keep the baseline in the state directory (baseline.json) across restarts.",
    )


class ModelsConfig(Model):
    runtime: Literal["auto", "tflite-runtime", "ai-edge-litert"] = setting(
        "auto",
        "Runtime",
        "TFLite runtime; auto: the first that imports (ai-edge-litert, then tflite-runtime).",
    )
    num_threads: int = setting(1, "Threads", "Threads per interpreter.", ge=1, le=8)
    face_detector: str | None = setting(
        None,
        "Face detector",
        "BlazeFace .tflite; default: face_detection_short_range.tflite in the models folder.",
    )
    expression: str | None = setting(
        None,
        "Expression model",
        "Int8 expression classifier; default: the one models/MODELS.md marks default.",
    )
    min_face_px: float = setting(
        24.0, "Smallest face", "Faces narrower than this (frame pixels) are ignored.", ge=0
    )
    flip_average: bool | None = setting(
        None,
        "Flip averaging",
        "Average each face's expression probabilities with its mirror image's: two "
        "classifier runs per face, for about 1.5 points of FER2013 accuracy. Default: what "
        "models.json records for the expression model.",
    )


class PrivacyConfig(Model):
    consent: bool = setting(
        False,
        "Consent",
        "Nothing but availability is published until the people observed have consented.",
    )
    mode: Literal["personal", "audience"] = setting(
        "personal",
        "Mode",
        "personal: one consenting wearer (camera, heart, skin). audience: camera only, a "
        "window is published only when at least min_faces people contributed, group-level "
        "aggregates only, never vitals.",
    )
    min_faces: int = setting(
        3,
        "Minimum faces (audience)",
        "Audience mode: a window is withheld unless some frame in it held at least this many "
        "faces (no tracking or identity is kept, so the largest simultaneous count is the "
        "number of people known to be present).",
        ge=1,
    )
    pause_file: str | None = setting(
        None,
        "Pause file",
        "While this file exists nothing is analysed or published (a local off switch that "
        "MQTT cannot override). Default: <state_dir>/paused.",
    )


class RuntimeConfig(Model):
    shutdown_timeout_s: float = setting(
        10.0,
        "Shutdown timeout",
        "Longest a SIGTERM/SIGINT shutdown may take, seconds.",
        gt=0,
        le=300,
    )
    max_loop_lag_s: float = setting(
        2.0, "Maximum loop lag", "Event-loop lag above this withholds the systemd watchdog.", gt=0
    )


class DeviceConfig(Model):
    name: str = setting(
        None,
        "Device name",
        "Names this device in topics and payloads. Default: the host name. [A-Za-z0-9_-].",
        validate_default=False,
    )
    state_dir: str = setting(
        None,
        "State directory",
        "Where the outbox and baseline live. Default: $STATE_DIRECTORY (systemd) or "
        f"{DEFAULT_STATE_DIR}.",
        validate_default=False,
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
            raise ValueError("use 1-64 characters from A-Z a-z 0-9 _ -")
        return v

    @model_validator(mode="after")
    def _defaults(self) -> DeviceConfig:
        if self.name is None:
            self.name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "pi"
        if self.state_dir is None:
            self.state_dir = (
                os.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE_DIR
            )
        return self


class AgentConfig(Model):
    """The whole configuration file."""

    device: DeviceConfig = setting(
        DeviceConfig(), "Device", "Who this agent is and where it keeps state."
    )
    mqtt: MqttConfig = setting(MqttConfig(), "MQTT", "The broker and how to publish to it.")
    sources: SourcesConfig = setting(SourcesConfig(), "Sources", "Where evidence comes from.")
    windows: WindowsConfig = setting(WindowsConfig(), "Windows", "How evidence is aggregated.")
    models: ModelsConfig = setting(
        ModelsConfig(), "Models", "Face detection and expression models."
    )
    baseline: BaselineConfig = setting(
        BaselineConfig(), "Baseline", "The wearer's personal physiological baseline."
    )
    privacy: PrivacyConfig = setting(
        PrivacyConfig(), "Privacy", "Consent, personal or audience mode, pausing."
    )
    publish: Annotated[
        PublishConfig, Field(title="Publish", description="What states contain.")
    ] = PublishConfig()
    runtime: RuntimeConfig = setting(RuntimeConfig(), "Runtime", "Shutdown and health limits.")
    homeassistant: HomeAssistantConfig = setting(
        HomeAssistantConfig(), "Home Assistant", "MQTT discovery for Home Assistant."
    )
    log_level: Literal["debug", "info", "warning", "error"] = setting(
        "info", "Log level", "Overridden by --log-level."
    )

    @model_validator(mode="after")
    def _audience_is_camera_only(self) -> AgentConfig:
        if self.privacy.mode == "audience":
            bodies = [n for n in ("heart", "eda") if getattr(self.sources, n) is not None]
            if bodies:
                raise ValueError(
                    "privacy.mode audience is camera only: remove sources."
                    + " and sources.".join(bodies)
                )
            if self.publish.vitals:
                raise ValueError("privacy.mode audience never publishes vitals: set vitals false")
        return self

    def topic_prefix(self) -> str:
        return self.mqtt.topic_prefix or f"emotion-agent/{self.device.name}"

    def pause_file(self) -> Path:
        return Path(self.privacy.pause_file or Path(self.device.state_dir) / "paused")

    def client_id(self) -> str:
        """Configured, else unique per machine and device name (two agents on one host
        must not share an id: the broker would disconnect one for the other, forever)."""
        return self.mqtt.client_id or f"{default_client_id()}-{self.device.name}"


def default_client_id(machine_id_file: str = "/etc/machine-id") -> str:
    """emotion-agent-<12 hex of the machine id>: stable across reboots, unique per device."""
    try:
        mid = Path(machine_id_file).read_text().strip()
    except OSError:
        mid = ""
    if not re.fullmatch(r"[0-9a-f]{32}", mid):
        mid = f"{socket.gethostname()}".encode().hex()[:12] or "unknown"
    return f"emotion-agent-{mid[:12]}"


def config_schema() -> dict[str, Any]:
    """JSON Schema of the configuration file."""
    return AgentConfig.model_json_schema()
