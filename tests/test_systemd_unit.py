"""The systemd unit: `systemd-analyze verify` is clean and the exposure score is <= 2.0.

verify checks that ExecStart= binaries exist, so it runs against a throwaway root that
holds the unit, the host's own unit files (for the targets it names) and a stand-in
/opt/emotion-agent/venv/bin/emotion-agent. Any output at all (even a warning about an
unknown key, which leaves the exit status 0) fails the test.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "emotion-agent.service"
ANALYZE = shutil.which("systemd-analyze")
HOST_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
    None,
)
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (apt install systemd)"
)
MAX_EXPOSURE = 2.0


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def verify_root(tmp_path: Path) -> Path:
    """A root where the unit's commands exist, for `systemd-analyze verify --root`."""
    assert HOST_UNITS is not None
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    d = directives(UNIT.read_text())
    for value in d.get("ExecStart", []) + d.get("ExecStartPre", []):
        exe = root / value.lstrip("-@:+!").split()[0].lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return root


@needs_analyze
@pytest.mark.skipif(HOST_UNITS is None, reason="no systemd unit directory on this host")
def test_verify_is_clean(tmp_path: Path) -> None:
    root = verify_root(tmp_path)
    r = subprocess.run(
        [str(ANALYZE), "verify", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).strip() == ""


@needs_analyze
def test_verify_notices_a_broken_unit(tmp_path: Path) -> None:
    """Control: the same command does complain, so a clean run above means something."""
    if HOST_UNITS is None:
        pytest.skip("no systemd unit directory on this host")
    root = verify_root(tmp_path)
    unit = root / "etc/systemd/system" / UNIT.name
    unit.write_text(unit.read_text().replace("WatchdogSec=30", "WatchdogSecs=30"))
    r = subprocess.run(
        [str(ANALYZE), "verify", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Unknown key" in r.stderr and "WatchdogSecs" in r.stderr


@needs_analyze
def test_security_exposure_at_most_2() -> None:
    r = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    score = float(m.group(1))
    print(f"exposure {score}")
    assert score <= MAX_EXPOSURE, r.stdout


def test_unit_keeps_what_the_agent_needs() -> None:
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"] and "WatchdogSec" in d
    assert int(d["StartLimitBurst"][0]) >= 3 and int(d["StartLimitIntervalSec"][0]) >= 60
    assert d["User"] == ["emotion-agent"]
    assert set(d["SupplementaryGroups"][0].split()) == {"video", "bluetooth"}
    assert d["LoadCredential"] == ["mqtt_password:/etc/emotion-agent/mqtt_password"]
    assert d["StateDirectory"] == ["emotion-agent"]
    assert d["ConfigurationDirectory"] == ["emotion-agent"]
    # the camera needs real device nodes, and the agent reads /proc/device-tree
    assert "PrivateDevices" not in d and "ProcSubset" not in d
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap"} <= allowed
    families = set(d["RestrictAddressFamilies"][0].split())
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= families  # D-Bus to BlueZ, the broker
    assert "IPAddressDeny" not in d  # the broker may be anywhere


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and ctypes.util.find_library("seccomp")),
    reason="needs Linux and libseccomp (apt install libseccomp2)",
)
def test_models_run_under_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes is in the unit: the models and HRV must run under it."""
    assert directives(UNIT.read_text())["MemoryDenyWriteExecute"] == ["yes"]
    r = subprocess.run(
        [sys.executable, str(UNIT.parent / "test-mdwe.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=UNIT.parent.parent,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "control: W+X mmap refused" in r.stdout
    from agent.vision.interpreter import available_runtimes

    runtimes = available_runtimes()  # tflite-runtime on 3.11, ai-edge-litert on 3.12+
    assert runtimes
    for runtime in runtimes:
        for model in ("face_detection_short_range.tflite", "emotion_minixception_int8.tflite"):
            assert re.search(rf"{runtime} [\d.]+: {re.escape(model)} ran", r.stdout), r.stdout
    assert "OK: no W+X memory needed" in r.stdout


# -- the install script and the aarch64 proof: minutes, root and network, so opt-in ------

RUN_SLOW = os.environ.get("EMOTION_AGENT_ROOT_TESTS") == "1"
slow_root = pytest.mark.skipif(
    not RUN_SLOW or os.geteuid() != 0,
    reason="minutes of apt/pip in a throwaway root: run as root with EMOTION_AGENT_ROOT_TESTS=1",
)


def _script(name: str, timeout: float) -> str:
    r = subprocess.run([str(UNIT.parent / name)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r.stdout


@pytest.mark.slow
@slow_root
def test_install_idempotent_uninstall_in_a_chroot() -> None:
    out = _script("test-install-chroot.sh", 1200)
    assert "refused, and nothing changed" in out
    assert "idempotent: 0 paths changed; config kept" in out
    assert "nothing of emotion-agent left behind" in out


@pytest.mark.slow
@slow_root
def test_aarch64_install_and_smoke_under_qemu() -> None:
    out = _script("aarch64-smoke.sh", 1800)
    assert "PASS: aarch64 install + smoke test" in out


@pytest.mark.slow
@slow_root
@pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="apt install systemd-container")
def test_unit_under_real_systemd_with_watchdog_restart() -> None:
    out = _script("test-nspawn-boot.sh", 900)
    assert "PASS: the hardened unit runs under systemd" in out
