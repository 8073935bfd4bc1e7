"""The doctor's checks: configuration, software, hardware, network and time, one method each.

`Doctor` runs them against one configuration (the defaults when none is given); every
check returns ok, warn, fail or skip with one line of detail, and every failure (and
warning) carries the command or setting that fixes it. The checks use the agent's own code
wherever the agent has some: the configuration loader, the model manifest and checksum,
the MQTT client builder (a real connect with the configured credentials and TLS). Outside
systemd there is no $CREDENTIALS_DIRECTORY, so a `{credential: NAME}` secret is read from
the file LoadCredential= would load it from: NAME beside the configuration file (the
unit's `LoadCredential=mqtt_password:/etc/emotion-agent/mqtt_password`).
"""

from __future__ import annotations

import asyncio
import glob
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from agent.config_loader import ConfigError, load_config
from agent.config_mqtt import parse_broker_url
from agent.doctor_probes import (
    SERVICE_USER,
    Status,
    adjtimex_state,
    bluez_adapter,
    broker_fix,
    current_user,
    describe,
    group_problems,
    has_module,
    mqtt_connect,
)
from agent.pi import decode_throttled, throttled_word

DEFAULT_CONFIG = Path("/etc/emotion-agent/config.yaml")


POWER_FIX = (
    "use the official supply (Pi 4: 5.1 V 3 A; Pi 5: 5.1 V 5 A) and a short, thick USB-C "
    "cable; check with `vcgencmd get_throttled` (0x0 is good)"
)


@dataclass
class Result:
    name: str
    status: Status
    detail: str
    fix: str | None = None


class Doctor:
    """Runs the checks against one configuration (defaults when none is given)."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.cfg = AgentConfig()
        self.results: list[Result] = []

    def add(self, name: str, status: Status, detail: str, fix: str | None = None) -> None:
        self.results.append(Result(name, status, detail, fix))

    def run(self) -> list[Result]:
        self.check_config()
        checks: list[Callable[[], None]] = [
            self.check_python,
            self.check_numpy,
            self.check_runtime,
            self.check_models,
            self.check_camera,
            self.check_bluetooth,
            self.check_broker,
            self.check_clock,
            self.check_power,
            self.check_temperature,
        ]
        for check in checks:
            try:
                check()
            except Exception as exc:  # a broken check is a finding, not a traceback
                name = check.__name__.removeprefix("check_")
                self.add(
                    name,
                    "fail",
                    f"the check itself failed: {type(exc).__name__}: {exc}",
                    "a bug in emotion-agent doctor: report it with the output of --json",
                )
        return self.results

    # -- configuration -------------------------------------------------------------------
    def check_config(self) -> None:
        path = self.config_path
        if path is None:
            if not DEFAULT_CONFIG.exists():
                self.add(
                    "config",
                    "warn",
                    f"no {DEFAULT_CONFIG}; checking with the defaults",
                    "install one: sudo systemd/install.sh, or pass -c FILE",
                )
                return
            path = str(DEFAULT_CONFIG)
        self.config_path = path
        if "CREDENTIALS_DIRECTORY" not in os.environ:
            # where LoadCredential= reads them from: beside the configuration file
            os.environ["CREDENTIALS_DIRECTORY"] = str(Path(path).resolve().parent)
        try:
            self.cfg = load_config(path)
        except ConfigError as exc:
            self.add(
                "config",
                "fail",
                f"{path}: " + "; ".join(exc.problems),
                f"fix the file (emotion-agent check-config {path}); a secret file "
                "readable only by root needs sudo",
            )
            return
        self.add("config", "ok", f"{path} (device {self.cfg.device.name})")

    # -- software ------------------------------------------------------------------------
    def check_python(self) -> None:
        v = sys.version_info
        detail = f"{platform.python_version()} on {platform.machine()} ({sys.prefix})"
        if v < (3, 11):
            self.add(
                "python",
                "fail",
                detail,
                "Python 3.11 or newer (Raspberry Pi OS bookworm: 3.11; trixie: 3.13)",
            )
        else:
            self.add("python", "ok", detail)

    def check_numpy(self) -> None:
        try:
            import numpy
        except ImportError as exc:
            hint = 'pip install "numpy<2"' if sys.version_info < (3, 12) else "pip install numpy"
            self.add("numpy", "fail", str(exc), hint)
            return
        major = int(numpy.__version__.split(".")[0])
        if major >= 2 and has_module("tflite_runtime"):
            self.add(
                "numpy",
                "fail",
                f"{numpy.__version__}: tflite-runtime 2.14 needs numpy<2",
                'pip install "numpy<2" (apt\'s picamera2 needs numpy 1.x too)',
            )
        else:
            self.add("numpy", "ok", numpy.__version__)

    def check_runtime(self) -> None:
        """Which TFLite runtime the agent will run, and why (models.runtime and what imports)."""
        from agent.vision.interpreter import RUNTIMES, _import_interpreter, install_hint

        found: dict[str, str] = {}
        missing = []
        for name in RUNTIMES:
            try:
                found[name] = _import_interpreter(name)[1]
            except ImportError as exc:
                missing.append(f"{name} ({exc})")
        wanted = self.cfg.models.runtime
        if wanted == "auto":
            runs = next(iter(found), None)
            why = f"models.runtime auto: the first that imports of {', '.join(RUNTIMES)}"
        else:
            runs = wanted if wanted in found else None
            why = f"models.runtime {wanted}"
        if runs is None:
            self.add(
                "runtime",
                "fail",
                f"{why}: none imports; " + "; ".join(missing),
                install_hint(wanted),
            )
            return
        others = [f"{n} {v}" for n, v in found.items() if n != runs]
        detail = f"{runs} {found[runs]} runs ({why})"
        if others:
            detail += "; also here, unused: " + ", ".join(others)
        self.add("runtime", "ok", detail)

    def check_models(self) -> None:
        from agent.vision.interpreter import MANIFEST_NAME, read_manifest, sha256_of
        from agent.vision.stage import expression_model_path, face_detector_path

        for role, path in (
            ("face detector", face_detector_path(self.cfg.models)),
            ("expression", expression_model_path(self.cfg.models)),
        ):
            name = f"{role} model"
            manifest = path.parent / MANIFEST_NAME
            entry = read_manifest(manifest).get(path.name)
            rebuild = (entry or {}).get("rebuild")
            restore = "reinstall (sudo systemd/install.sh) or set models.face_detector/expression"
            if not path.is_file():
                self.add(
                    name,
                    "fail",
                    f"{path} not found",
                    restore + (f"; or rebuild it: {rebuild}" if rebuild else ""),
                )
                continue
            digest = sha256_of(path)
            if entry is None:
                self.add(
                    name,
                    "warn",
                    f"{path} is not listed in {manifest}; sha256 {digest[:16]}... unchecked",
                    "use a shipped model, or add it to models.json",
                )
            elif digest != str(entry.get("sha256", "")).lower():
                self.add(
                    name,
                    "fail",
                    f"{path} sha256 {digest} != {entry['sha256']} recorded in {manifest}",
                    restore + f"; or rebuild it: {rebuild or 'see models/MODELS.md'}",
                )
            else:
                self.add(name, "ok", f"{path} sha256 {digest[:12]}... matches {manifest}")

    # -- hardware ------------------------------------------------------------------------
    def check_camera(self) -> None:
        cam = self.cfg.sources.camera
        if cam is None or self.cfg.sources.replay is not None:
            self.add("camera", "skip", "no camera source configured (sources.camera)")
            return
        problems: list[str] = []
        fixes: list[str] = []
        if cam.kind == "picamera2" and not has_module("picamera2"):
            problems.append("picamera2 does not import")
            fixes.append(
                "sudo apt install python3-picamera2; the venv needs --system-site-packages"
            )
        nodes = sorted(glob.glob("/dev/video*")) + sorted(glob.glob("/dev/media*"))
        if not nodes:
            problems.append("no /dev/video* or /dev/media* nodes")
            fixes.append(
                "connect the camera ribbon (power off first), then `rpicam-hello --list-cameras`"
            )
        denied = [n for n in nodes if not os.access(n, os.R_OK | os.W_OK)]
        if denied:
            problems.append(f"no read/write access to {', '.join(denied[:4])}")
        for group_problem in group_problems("video"):
            problems.append(group_problem)
        if denied or group_problems("video"):
            fixes.append(
                f"sudo usermod -aG video {current_user()} (and {SERVICE_USER}), then log in again"
            )
        detail = f"{cam.kind}: " + (", ".join(problems) if problems else f"{len(nodes)} nodes")
        self.add("camera", "fail" if problems else "ok", detail, "; ".join(fixes) or None)

    def check_bluetooth(self) -> None:
        s = self.cfg.sources
        if s.replay is not None or (s.heart is None and s.eda is None):
            self.add("bluetooth", "skip", "no BLE source configured (sources.heart/eda)")
            return
        wanted = (s.heart.adapter if s.heart else None) or (s.eda.adapter if s.eda else None)
        status, detail, fix = asyncio.run(bluez_adapter(wanted))
        groups = group_problems("bluetooth")
        if status == "ok" and groups:
            status, detail = "warn", f"{detail}; {'; '.join(groups)}"
            fix = f"sudo usermod -aG bluetooth {SERVICE_USER} (BlueZ's D-Bus policy)"
        self.add("bluetooth", status, detail, fix)

    # -- network and time ------------------------------------------------------------------
    def check_broker(self) -> None:
        m = self.cfg.mqtt
        addr = parse_broker_url(m.broker)
        where = f"{addr.host}:{addr.port}" + (" (TLS)" if addr.tls or m.tls.enabled else "")
        try:
            asyncio.run(mqtt_connect(self.cfg))
        except Exception as exc:
            status, fix = broker_fix(exc, self.cfg)
            self.add("broker", status, f"{where}: {describe(exc)}", fix)
            return
        user = m.username or addr.username
        self.add("broker", "ok", f"{where}: connected" + (f" as {user}" if user else ""))

    def check_clock(self) -> None:
        fix = "enable time sync: sudo timedatectl set-ntp true (systemd-timesyncd), check network"
        if shutil.which("timedatectl"):
            r = subprocess.run(
                ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if r.returncode == 0 and r.stdout.strip() in ("yes", "no"):
                if r.stdout.strip() == "yes":
                    self.add("clock", "ok", "synchronised (timedatectl)")
                else:
                    self.add("clock", "warn", "not synchronised (timedatectl)", fix)
                return
        state = adjtimex_state()
        if state is None:
            self.add("clock", "skip", "neither timedatectl nor adjtimex answered")
        elif state == 5:  # TIME_ERROR: the kernel's clock is not synchronised
            self.add("clock", "warn", "not synchronised (adjtimex: TIME_ERROR)", fix)
        else:
            self.add("clock", "ok", f"synchronised (adjtimex state {state})")

    def check_power(self) -> None:
        value = throttled_word()
        if value is None:
            self.add("power", "skip", "no vcgencmd or firmware get_throttled (not a Pi)")
            return
        seen = [name.replace("_", " ") for name, on in decode_throttled(value).items() if on]
        detail = f"get_throttled=0x{value:x}" + (f": {', '.join(seen)}" if seen else "")
        if value & 0x1:
            self.add("power", "fail", detail, POWER_FIX)
        elif seen:
            fix = POWER_FIX if value & 0x10001 else "cool the Pi: a heatsink or fan, airflow"
            self.add("power", "warn", detail, fix)
        else:
            self.add("power", "ok", detail)

    def check_temperature(self) -> None:
        zones = sorted(glob.glob("/sys/class/thermal/thermal_zone*"))
        reading = None
        for zone in zones:
            try:
                kind = Path(zone, "type").read_text().strip()
                temp = int(Path(zone, "temp").read_text()) / 1000
            except (OSError, ValueError):
                continue
            if reading is None or kind in ("cpu-thermal", "x86_pkg_temp"):
                reading = (kind, temp)
        if reading is None:
            self.add("cpu temperature", "skip", "no readable /sys/class/thermal zone")
            return
        kind, temp = reading
        detail = f"{temp:.1f} °C ({kind})"
        fix = "add a heatsink or fan (the Pi throttles at 80-85 °C)"
        if temp >= 80:
            self.add("cpu temperature", "fail", detail, fix)
        elif temp >= 70:
            self.add("cpu temperature", "warn", detail, fix)
        else:
            self.add("cpu temperature", "ok", detail)
