"""Decoders for standard GATT payloads: Heart Rate Measurement, IEEE-11073 SFLOAT, UUIDs.

Pure functions, no I/O, so every rule is tested with bytes. A malformed input raises
`GattParseError` (a ValueError) and nothing else: notifications come from a radio and from
firmware we do not control, and the BLE sources count and drop what does not parse instead
of letting one bad packet break the link. The configurable decoder of custom EDA
characteristics, built on these pieces, lives in `agent.sources.gatt_eda`.

Heart Rate Measurement (0x2A37) rules, where the specification leaves room:
- reserved flag bits 5-7 are ignored, as the specification asks of receivers;
- bytes left over when the RR flag is clear, or an odd number of RR bytes, reject the packet:
  a misaligned field means every value in it is suspect;
- an RR interval of 0 rejects the packet (no heart beats twice at once: the packet is corrupt);
- HR 0 is "no reading" (straps send it while they settle or without skin contact). It is
  returned, but HR 0 alongside detected contact or RR intervals contradicts itself and
  rejects the packet; so does HR above `HR_MAX_PLAUSIBLE_BPM`.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

HR_MAX_PLAUSIBLE_BPM = 300
RR_UNITS_PER_S = 1024  # RR intervals are sent in 1/1024 s
_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
_UUID128 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class GattParseError(ValueError):
    """A notification that does not decode; the source counts it and drops it."""


def normalize_uuid(value: str) -> str:
    """Lower-case 128-bit form of a 16-, 32- or 128-bit UUID ("180d" -> "0000180d-...")."""
    text = value.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if re.fullmatch(r"[0-9a-f]{4}", text):
        return f"0000{text}{_BASE_UUID_TAIL}"
    if re.fullmatch(r"[0-9a-f]{8}", text):
        return f"{text}{_BASE_UUID_TAIL}"
    if _UUID128.match(text):
        return text
    raise ValueError(f"not a Bluetooth UUID: {value!r} (use 16-bit '180d' or 128-bit form)")


# --- Heart Rate Measurement (0x2A37) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """One decoded 0x2A37 notification; `contact` is None when the strap cannot tell."""

    hr_bpm: int
    rr_ms: tuple[float, ...] = ()
    contact: bool | None = None
    energy_kj: int | None = None


def parse_heart_rate(data: bytes) -> HeartRateMeasurement:
    """Decode a Heart Rate Measurement; raises GattParseError (see the module rules)."""
    data = bytes(data)
    if not data:
        raise GattParseError("empty Heart Rate Measurement")
    flags = data[0]
    hr_size = 2 if flags & 0x01 else 1
    pos = 1 + hr_size
    if len(data) < pos:
        raise GattParseError(f"truncated: no room for a {8 * hr_size}-bit heart rate")
    hr = int.from_bytes(data[1:pos], "little")
    # bits 1-2: 0 and 1 = contact not supported, 2 = supported but not detected, 3 = detected
    contact = {2: False, 3: True}.get((flags >> 1) & 0x03)
    energy = None
    if flags & 0x08:
        if len(data) < pos + 2:
            raise GattParseError("truncated: energy expended flagged but missing")
        energy = int.from_bytes(data[pos : pos + 2], "little")
        pos += 2
    rest = data[pos:]
    rr: tuple[float, ...] = ()
    if flags & 0x10:
        if len(rest) % 2:
            raise GattParseError(f"odd RR field length ({len(rest)} bytes)")
        raw_rr = [v for (v,) in struct.iter_unpack("<H", rest)]
        if 0 in raw_rr:
            raise GattParseError("RR interval of 0")
        rr = tuple(v * 1000.0 / RR_UNITS_PER_S for v in raw_rr)
    elif rest:
        raise GattParseError(f"{len(rest)} trailing bytes after the flagged fields")
    if hr == 0 and (contact is True or rr):
        raise GattParseError("heart rate 0 with contact detected or RR intervals present")
    if hr > HR_MAX_PLAUSIBLE_BPM:
        raise GattParseError(f"implausible heart rate {hr} bpm")
    return HeartRateMeasurement(hr_bpm=hr, rr_ms=rr, contact=contact, energy_kj=energy)


# --- IEEE-11073 16-bit SFLOAT -----------------------------------------------------------

_SFLOAT_SPECIAL: dict[int, float | None] = {
    0x07FF: None,  # NaN (not a number)
    0x0800: None,  # NRes (not at this resolution)
    0x0801: None,  # reserved for future use
    0x07FE: math.inf,
    0x0802: -math.inf,
}


def parse_sfloat(raw: int) -> float | None:
    """Decode an SFLOAT (4-bit exponent, 12-bit mantissa, both two's complement).

    NaN, NRes and the reserved value carry no measurement and give None; +INF and -INF
    give the float infinities (a sensor saturated), which callers treat as out of range.
    """
    if not 0 <= raw <= 0xFFFF:
        raise GattParseError(f"SFLOAT out of 16 bits: {raw}")
    if raw in _SFLOAT_SPECIAL:
        return _SFLOAT_SPECIAL[raw]
    mantissa = raw & 0x0FFF
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    exponent = raw >> 12
    if exponent >= 8:
        exponent -= 16
    # dividing by an exact power of ten rounds once: 123e-1 gives 12.3, not 12.300000000000001
    return mantissa / 10**-exponent if exponent < 0 else float(mantissa * 10**exponent)
