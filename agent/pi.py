"""Raspberry Pi health readings: CPU temperature and the firmware's throttling flags.

Both are read from sysfs (no subprocess in the hot path), with `vcgencmd` as the fallback
for throttling on kernels without the firmware node. Off a Pi they return None.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")

# Bits of the firmware's get_throttled word (Raspberry Pi documentation, vcgencmd).
THROTTLE_BITS: dict[int, str] = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


def cpu_temperature_c(path: Path = THERMAL) -> float | None:
    """The SoC temperature in °C, or None where there is no thermal zone."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def decode_throttled(word: int) -> dict[str, bool]:
    """The firmware's throttling word as named flags (now, and since boot)."""
    return {name: bool(word >> bit & 1) for bit, name in THROTTLE_BITS.items()}


def throttled_word(path: Path = THROTTLED, vcgencmd: bool = True) -> int | None:
    """The raw get_throttled word, or None off a Pi."""
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        pass
    exe = shutil.which("vcgencmd") if vcgencmd else None
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "get_throttled"], capture_output=True, text=True, timeout=2, check=True
        ).stdout
        return int(out.strip().split("=", 1)[1], 16)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def throttling(path: Path = THROTTLED) -> dict[str, bool] | None:
    word = throttled_word(path)
    return None if word is None else decode_throttled(word)
