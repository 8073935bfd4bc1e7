"""The agent's configuration: one YAML file, parsed into typed, documented models.

Every field has a title and a description (they become `emotion-agent schema config`),
unknown keys are rejected, and every error names the file, line and column, the key
path, the offending value and what was expected. All errors are collected and reported
at once (`ConfigError.problems`); the CLI turns them into exit status 2.

Secrets (the MQTT password, a TLS key passphrase) are `Secret` values: a literal string,
or `{env: NAME}`, `{file: PATH}`, or `{credential: NAME}` (a systemd credential, read
from `$CREDENTIALS_DIRECTORY/NAME`, as `LoadCredential=` provides it).
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.sources.ble_config import EdaSourceConfig, HeartSourceConfig
from agent.sources.camera import CameraSourceConfig

DEFAULT_STATE_DIR = "/var/lib/emotion-agent"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _field(default: Any, title: str, description: str, **kw: Any) -> Any:
    return Field(default, title=title, description=description, **kw)


class SecretRef(Model):
    env: str | None = _field(None, "Environment variable", "Read the secret from this variable.")
    file: str | None = _field(
        None, "File", "Read the secret from this file (trailing newline removed)."
    )
    credential: str | None = _field(
        None,
        "systemd credential",
        "Read the secret from $CREDENTIALS_DIRECTORY/<name> (LoadCredential= in the unit).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "credential") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or credential")
        return self


Secret = str | SecretRef


class TlsConfig(Model):
    enabled: bool = _field(
        False, "Use TLS", "Connect with TLS (implied by an mqtts:// broker URL)."
    )
    ca_file: str | None = _field(
        None, "CA certificates", "PEM file of CAs that sign the broker; default: the system store."
    )
    cert_file: str | None = _field(
        None, "Client certificate", "PEM client certificate for mutual TLS."
    )
    key_file: str | None = _field(None, "Client key", "PEM private key of the client certificate.")
    key_password: Secret | None = _field(
        None, "Key passphrase", "Passphrase of key_file: a string or {env|file|credential: ...}."
    )
    insecure: bool = _field(
        False,
        "Skip hostname check",
        "Accept a certificate whose name does not match. Testing only.",
    )

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BackoffConfig(Model):
    initial_s: float = _field(1.0, "First delay", "Delay before the first retry, seconds.", gt=0)
    max_s: float = _field(60.0, "Longest delay", "The delay doubles up to this cap, seconds.", gt=0)

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self


class OutboxConfig(Model):
    max_messages: int = _field(
        100_000,
        "Bound by count",
        "Oldest messages beyond this count are dropped (and counted).",
        ge=10,
    )
    max_age_s: float = _field(
        7 * 86400.0,
        "Bound by age",
        "Messages older than this are dropped (and counted), seconds.",
        gt=0,
    )
    inflight: int = _field(
        20,
        "Messages in flight",
        "QoS 1 messages sent ahead of their acknowledgement.",
        ge=1,
        le=1000,
    )


_BROKER_RE = re.compile(r"^(mqtts?)://")


@dataclass(frozen=True)
class BrokerAddress:
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse `mqtt://[user[:pass]@]host[:port]` or `mqtts://...`; ValueError says what is wrong."""
    if not _BROKER_RE.match(url):
        raise ValueError("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a broker URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if not parts.hostname:
        raise ValueError("the URL names no host")
    default_port = 8883 if parts.scheme == "mqtts" else 1883
    return BrokerAddress(
        parts.scheme,
        parts.hostname,
        port or default_port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


class MqttConfig(Model):
    broker: str = _field(
        "mqtt://127.0.0.1:1883",
        "Broker URL",
        "mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS, default port 8883).",
    )
    protocol: Literal["3.1.1", "5"] = _field("3.1.1", "MQTT version", "3.1.1 or 5.")
    client_id: str | None = _field(
        None,
        "Client id",
        "Default: emotion-agent-<first 12 hex of /etc/machine-id>-<device name>, unique per "
        "device and agent; two clients with one id knock each other off the broker.",
    )
    username: str | None = _field(None, "User name", "Broker user name.")
    password: Secret | None = _field(
        None,
        "Password",
        "Broker password: a string or {env|file|credential: ...}; prefer the latter.",
    )
    tls: TlsConfig = _field(TlsConfig(), "TLS", "Transport security.")
    topic_prefix: str | None = _field(
        None, "Topic prefix", "Default: emotion-agent/<device.name>. No wildcards, no trailing '/'."
    )
    keepalive_s: int = _field(30, "Keepalive", "MQTT keepalive, seconds.", ge=5, le=3600)
    qos: Literal[1] = _field(
        1,
        "QoS",
        "State messages use QoS 1: they are removed from the outbox only once acknowledged.",
    )
    reconnect: BackoffConfig = _field(
        BackoffConfig(initial_s=1.0, max_s=60.0),
        "Reconnect",
        "Capped exponential reconnect delays.",
    )
    outbox: OutboxConfig = _field(OutboxConfig(), "Outbox", "The durable store of unsent messages.")

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        parse_broker_url(v)
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and (not v or "+" in v or "#" in v or v.endswith("/") or "\0" in v):
            raise ValueError("a topic prefix is non-empty, without + # or a trailing /")
        return v


class ReplayConfig(Model):
    session: str = _field(
        ..., "Session folder", "A recorded session (see agent/sources/session.py)."
    )
    speed: float = _field(1.0, "Speed", "1 = real time; 10 = ten times faster.", gt=0, le=10_000)
    rebase_time: bool = _field(
        True,
        "Rebase time",
        "true: the session starts now; false: timestamps keep the recording's own start time.",
    )


class SourcesConfig(Model):
    replay: ReplayConfig | None = _field(
        None,
        "Session replay",
        "Play a recorded session through the live sources' interfaces. When set, it replaces "
        "the live heart, eda and camera sources.",
    )
    heart: HeartSourceConfig | None = _field(
        None, "Heart-rate strap", "A Bluetooth LE Heart Rate Service strap (RR intervals)."
    )
    eda: EdaSourceConfig | None = _field(
        None, "EDA sensor", "A Bluetooth LE skin-conductance sensor with a configured decoder."
    )
    camera: CameraSourceConfig | None = _field(
        None, "Camera", "The Pi camera (picamera2) or a USB webcam, for facial expression."
    )
    stale_after_s: float = _field(
        30.0, "Stale after", "A source silent for this long marks the agent unhealthy.", gt=0
    )
    restart: BackoffConfig = _field(
        BackoffConfig(initial_s=1.0, max_s=60.0),
        "Restart backoff",
        "Capped exponential delay before a failed source or stage restarts.",
    )


class WindowsConfig(Model):
    state_s: float = _field(10.0, "State window", "A state message every this many seconds.", ge=1)
    summary_s: float = _field(
        60.0,
        "Summary window",
        "A summary message every this many seconds: a whole multiple of state_s "
        "(default: the whole number of state windows nearest above 60 s).",
        ge=1,
    )
    min_beats: int = _field(
        5, "Minimum beats", "Fewer RR intervals: heart evidence is insufficient.", ge=1
    )
    min_eda_s: float = _field(
        5.0, "Minimum EDA", "Fewer seconds of EDA samples: skin evidence is insufficient.", ge=0
    )
    hrv_window_s: float = _field(
        60.0,
        "HRV window",
        "Heart features use the RR of this many seconds up to each window's end.",
        ge=10,
    )
    eda_window_s: float = _field(
        60.0,
        "EDA window",
        "Skin features use the samples of this many seconds up to each window's end.",
        ge=10,
    )
    max_corrected_fraction: float = _field(
        0.2,
        "Maximum corrected beats",
        "Above this fraction of corrected RR intervals, heart evidence is rejected.",
        ge=0,
        le=1,
    )
    gap_tolerance_s: float = _field(
        0.5,
        "Gap tolerance",
        "BLE delivery jitter tolerated before a notification counts as dropped (splits RR).",
        gt=0,
    )
    scr_min_amplitude_us: float = _field(
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
    calibration_s: float = _field(
        180.0,
        "Calibration",
        "Seconds of each physiological signal that form the wearer's baseline before "
        "physiology counts (the first minutes of wear, or after a reset).",
        ge=0,
    )
    adapt_half_life_h: float | None = _field(
        24.0,
        "Adaptation half-life",
        "After calibration the baseline follows the wearer slowly, with this half-life in "
        "hours of signal (only from windows near baseline); null: never adapt.",
        gt=0,
    )
    persist: bool = _field(
        True,
        "Persist",
        "Keep the baseline in the state directory (baseline.json) across restarts.",
    )


class ModelsConfig(Model):
    runtime: Literal["auto", "tflite-runtime", "ai-edge-litert"] = _field(
        "auto",
        "Runtime",
        "TFLite runtime; auto: the first that imports (ai-edge-litert, then tflite-runtime).",
    )
    num_threads: int = _field(1, "Threads", "Threads per interpreter.", ge=1, le=8)
    face_detector: str | None = _field(
        None,
        "Face detector",
        "BlazeFace .tflite; default: face_detection_short_range.tflite in the models folder.",
    )
    expression: str | None = _field(
        None,
        "Expression model",
        "Int8 expression classifier; default: the one models/MODELS.md marks default.",
    )
    min_face_px: float = _field(
        24.0, "Smallest face", "Faces narrower than this (frame pixels) are ignored.", ge=0
    )


class PrivacyConfig(Model):
    consent: bool = _field(
        False,
        "Consent",
        "Nothing but availability is published until the people observed have consented.",
    )
    mode: Literal["personal", "audience"] = _field(
        "personal",
        "Mode",
        "personal: one consenting wearer (camera, heart, skin). audience: camera only, a "
        "window is published only when at least min_faces people contributed, group-level "
        "aggregates only, never vitals.",
    )
    min_faces: int = _field(
        3,
        "Minimum faces (audience)",
        "Audience mode: a window is withheld unless some frame in it held at least this many "
        "faces (no tracking or identity is kept, so the largest simultaneous count is the "
        "number of people known to be present).",
        ge=1,
    )
    pause_file: str | None = _field(
        None,
        "Pause file",
        "While this file exists nothing is analysed or published (a local off switch that "
        "MQTT cannot override). Default: <state_dir>/paused.",
    )


class PublishConfig(Model):
    vitals: bool = _field(
        False, "Publish vitals", "Include heart rate and skin conductance level in state messages."
    )
    stats_interval_s: float = _field(
        60.0, "Stats interval", "Seconds between messages on <prefix>/stats.", ge=1
    )


class HomeAssistantConfig(Model):
    enabled: bool = _field(
        False,
        "Home Assistant discovery",
        "Announce valence, arousal, stress, confidence, the emotion and a pause switch as one "
        "Home Assistant device (MQTT discovery). Turning it off removes them.",
    )
    discovery_prefix: str = _field(
        "homeassistant", "Discovery prefix", "Home Assistant's MQTT discovery prefix."
    )
    expire_after_s: int | None = _field(
        None,
        "Expire after",
        "Sensors read 'unavailable' when no state came for this long; default: 3 state windows.",
        ge=1,
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _topic_level(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must be a plain MQTT topic (no wildcards, no leading/trailing /)")
        return v


class RuntimeConfig(Model):
    shutdown_timeout_s: float = _field(
        10.0,
        "Shutdown timeout",
        "Longest a SIGTERM/SIGINT shutdown may take, seconds.",
        gt=0,
        le=300,
    )
    max_loop_lag_s: float = _field(
        2.0, "Maximum loop lag", "Event-loop lag above this withholds the systemd watchdog.", gt=0
    )


class DeviceConfig(Model):
    name: str = _field(
        None,
        "Device name",
        "Names this device in topics and payloads. Default: the host name. [A-Za-z0-9_-].",
        validate_default=False,
    )
    state_dir: str = _field(
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

    device: DeviceConfig = _field(
        DeviceConfig(), "Device", "Who this agent is and where it keeps state."
    )
    mqtt: MqttConfig = _field(MqttConfig(), "MQTT", "The broker and how to publish to it.")
    sources: SourcesConfig = _field(SourcesConfig(), "Sources", "Where evidence comes from.")
    windows: WindowsConfig = _field(WindowsConfig(), "Windows", "How evidence is aggregated.")
    models: ModelsConfig = _field(ModelsConfig(), "Models", "Face detection and expression models.")
    baseline: BaselineConfig = _field(
        BaselineConfig(), "Baseline", "The wearer's personal physiological baseline."
    )
    privacy: PrivacyConfig = _field(
        PrivacyConfig(), "Privacy", "Consent, personal or audience mode, pausing."
    )
    publish: Annotated[
        PublishConfig, Field(title="Publish", description="What states contain.")
    ] = PublishConfig()
    runtime: RuntimeConfig = _field(RuntimeConfig(), "Runtime", "Shutdown and health limits.")
    homeassistant: HomeAssistantConfig = _field(
        HomeAssistantConfig(), "Home Assistant", "MQTT discovery for Home Assistant."
    )
    log_level: Literal["debug", "info", "warning", "error"] = _field(
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


# ---------------------------------------------------------------------------------------
# Loading with locations


class ConfigError(Exception):
    """One or more problems with a configuration file; `str()` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


Mark = tuple[int, int]  # 1-based line, column


class _LocatingLoader(yaml.SafeLoader):
    """Safe loader that records where every key and value sits, and rejects duplicate keys."""


def _compose_locations(
    text: str, path: str
) -> tuple[Any, dict[tuple, tuple[Mark, Mark]], list[str]]:
    loader = _LocatingLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    locations: dict[tuple, tuple[Mark, Mark]] = {}
    duplicates: list[str] = []

    def mark(n: yaml.Node) -> Mark:
        return n.start_mark.line + 1, n.start_mark.column + 1

    def walk(n: yaml.Node, at: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                if key in seen:
                    line, col = mark(k)
                    duplicates.append(
                        f"{path}:{line}:{col}: {_dotted((*at, key))}: duplicate key "
                        "(the later value would silently win)"
                    )
                seen.add(key)
                locations[(*at, key)] = (mark(k), mark(v))
                walk(v, (*at, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                locations[(*at, i)] = (mark(v), mark(v))
                walk(v, (*at, i))

    if node is not None:
        locations[()] = (mark(node), mark(node))
        walk(node, ())
    return data, locations, duplicates


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _locate(loc: tuple, locations: dict[tuple, tuple[Mark, Mark]], is_key: bool) -> Mark:
    """The most precise known position for a pydantic error location."""
    for n in range(len(loc), -1, -1):
        hit = locations.get(tuple(loc[:n]))
        if hit is not None:
            return hit[0] if (is_key and n == len(loc)) else hit[1]
    return (1, 1)


def _clean_loc(loc: tuple) -> tuple:
    # pydantic adds union-branch tags (e.g. 'str', 'SecretRef') to locations; drop them.
    return tuple(
        p for p in loc if not (isinstance(p, str) and (p in ("str", "SecretRef") or "[" in p))
    )


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read, validate and resolve a config file. Raises ConfigError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{p}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: cannot read: {exc}"]) from None
    cfg = parse_config(text, str(p))
    return _relative_to(cfg, p.parent)


def _relative_to(cfg: AgentConfig, base: Path) -> AgentConfig:
    """Relative paths in a file mean relative to that file, not to the working directory."""

    def fix(value: str | None) -> str | None:
        return value if value is None or os.path.isabs(value) else str(base / value)

    if cfg.sources.replay is not None:
        cfg.sources.replay.session = fix(cfg.sources.replay.session)
    cfg.device.state_dir = fix(cfg.device.state_dir)
    tls = cfg.mqtt.tls
    tls.ca_file, tls.cert_file, tls.key_file = (
        fix(tls.ca_file),
        fix(tls.cert_file),
        fix(tls.key_file),
    )
    cfg.models.face_detector = fix(cfg.models.face_detector)
    cfg.models.expression = fix(cfg.models.expression)
    cfg.privacy.pause_file = fix(cfg.privacy.pause_file)
    return cfg


def parse_config(text: str, path: str = "<config>") -> AgentConfig:
    try:
        data, locations, problems = _compose_locations(text, path)
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        where = f"{path}:{m.line + 1}:{m.column + 1}" if m else path
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigError([f"{where}: YAML syntax error: {what}"]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids: locate it too
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - text.rfind("\n", 0, exc.position)
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError([f"{path}:{line}:{col}: YAML error: {exc.reason} ({char})"]) from None
    except RecursionError:  # PyYAML composes recursively: hundreds of nested [ or { (fuzzing)
        raise ConfigError(
            [f"{path}:1:1: YAML nested too deeply to read (a configuration needs a few levels)"]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: YAML error: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}:1:1: the top level must be a mapping of sections, got {type(data).__name__}"]
        )
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _clean_loc(err["loc"])
            named = re.match(r"(?:Value error, )?([a-z_]+(?:\.[a-z_]+)+) ", err["msg"])
            if not loc and named and tuple(named.group(1).split(".")) in locations:
                loc = tuple(named.group(1).split("."))  # a cross-field rule names its key
            is_key = err["type"] == "extra_forbidden"
            line, col = _locate(loc, locations, is_key)
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            msg = err["msg"].removeprefix("Value error, ")
            if is_key:
                msg = "unknown key" + _suggest(loc, data)
            elif err["type"] == "missing":
                shown = ""
            problems.append(f"{path}:{line}:{col}: {_dotted(loc)}: {msg}{shown}")
        cfg = None
    if problems:
        raise ConfigError(sorted(set(problems), key=_sort_key))
    assert cfg is not None
    secret_problems = _check_secrets(cfg, locations, path)
    if secret_problems:
        raise ConfigError(secret_problems)
    return cfg


def _sort_key(problem: str) -> tuple[int, str]:
    m = re.search(r":(\d+):\d+: ", problem)
    return (int(m.group(1)) if m else 0, problem)


def _suggest(loc: tuple, data: dict) -> str:
    """'unknown key; expected one of ...' from the model that rejected it."""
    model: type[BaseModel] | None = AgentConfig
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return ""
        ann = model.model_fields[part].annotation
        model = next(
            (
                a
                for a in getattr(ann, "__args__", (ann,))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    if model is None:
        return ""
    return "; expected one of: " + ", ".join(model.model_fields)


def resolve_secret(secret: Secret | None, env: dict[str, str] | None = None) -> str | None:
    """The secret's value. Raises ValueError saying what is missing."""
    if secret is None or isinstance(secret, str):
        return secret
    env = dict(os.environ) if env is None else env
    if secret.env:
        if secret.env not in env:
            raise ValueError(f"environment variable {secret.env} is not set")
        return env[secret.env]
    if secret.credential:
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise ValueError(
                f"credential {secret.credential!r}: $CREDENTIALS_DIRECTORY is not set "
                "(LoadCredential= in the systemd unit provides it)"
            )
        file = Path(cred_dir) / secret.credential
    else:
        file = Path(str(secret.file))
    try:
        return file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None


def _check_secrets(cfg: AgentConfig, locations: dict, path: str) -> list[str]:
    problems = []
    for loc, secret in (
        (("mqtt", "password"), cfg.mqtt.password),
        (("mqtt", "tls", "key_password"), cfg.mqtt.tls.key_password),
    ):
        try:
            resolve_secret(secret)
        except ValueError as exc:
            line, col = _locate(loc, locations, False)
            problems.append(f"{path}:{line}:{col}: {_dotted(loc)}: {exc}")
    return problems


def config_schema() -> dict[str, Any]:
    """JSON Schema of the configuration file."""
    return AgentConfig.model_json_schema()
