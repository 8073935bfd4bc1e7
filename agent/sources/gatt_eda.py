"""The configurable decoder of custom EDA characteristics: its pydantic config and its state.

EDA sensors have no standard GATT characteristic, so each one is described in the
configuration (`EdaDecoderConfig`: header fields, sample format, scaling, units, ADC
divider, valid range) and `EdaDecoder` turns its notifications into `EdaPacket`s of µS
samples dated on the agent's clock, counting lost packets and out-of-range samples. No I/O:
like the decoders in `agent.sources.gatt`, whose `GattParseError` it raises for anything
malformed, every rule is tested with bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.sources.gatt import GattParseError, normalize_uuid, parse_sfloat

SampleFormat = Literal["u8", "u16", "u24", "u32", "i16", "i24", "i32", "f32", "sfloat"]
_SIZES = {"u8": 1, "u16": 2, "u24": 3, "u32": 4, "u64": 8, "i16": 2, "i24": 3, "i32": 4}
_SIZES |= {"f32": 4, "sfloat": 2}
_ENDIAN = {"little": "<", "big": ">"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EdaSequenceConfig(_Strict):
    """A packet counter in the header; missing values are counted as lost packets."""

    offset: int = Field(ge=0, title="Offset", description="Byte offset of the counter.")
    format: Literal["u8", "u16", "u32"] = Field(
        "u8", title="Format", description="Unsigned width; the counter wraps at its maximum."
    )


class EdaTimestampConfig(_Strict):
    """A device timestamp in the header, dating the packet's first sample."""

    offset: int = Field(ge=0, title="Offset", description="Byte offset of the timestamp.")
    format: Literal["u16", "u24", "u32", "u64", "f32"] = Field(
        "u32", title="Format", description="Unsigned counters are unwrapped when they wrap."
    )
    scale_s: float = Field(
        0.001,
        gt=0,
        allow_inf_nan=False,
        title="Seconds per unit",
        description="Multiply the raw timestamp by this to get seconds (0.001 for ms).",
    )


class AdcConfig(_Strict):
    """A ratiometric voltage divider: the skin in series with a known resistor.

    volts = code / 2**bits * vref_v. With the ADC across the series resistor R (skin on the
    supply side): G = V / (R * (Vs - V)); across the skin: G = (Vs - V) / (R * V); Vs is
    `supply_v` (default `vref_v`). G in siemens is reported in µS.
    """

    bits: int = Field(ge=1, le=32, title="ADC bits", description="Resolution of the ADC.")
    vref_v: float = Field(
        gt=0, allow_inf_nan=False, title="Reference (V)", description="ADC full-scale voltage."
    )
    supply_v: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        title="Divider supply (V)",
        description="Voltage across the divider; default: vref_v.",
    )
    series_resistor_ohm: float = Field(
        gt=0,
        allow_inf_nan=False,
        title="Series resistor (Ω)",
        description="The known resistor in series with the skin.",
    )
    measured_across: Literal["resistor", "skin"] = Field(
        "resistor", title="ADC across", description="Which element of the divider the ADC measures."
    )


class EdaDecoderConfig(_Strict):
    """How to turn one notification of a custom EDA characteristic into µS samples.

    Layout: `header_bytes` (holding the optional sequence and timestamp fields), then samples
    of `sample_format`, nothing after. Each sample is `raw * scale + offset` in `quantity`
    units, then converted to µS and checked against `valid_range_us`.
    """

    service_uuid: str = Field(
        title="Service UUID", description="GATT service of the sensor (16- or 128-bit)."
    )
    characteristic_uuid: str = Field(
        title="Characteristic UUID", description="The characteristic that notifies samples."
    )
    byte_order: Literal["little", "big"] = Field(
        "little",
        title="Byte order",
        description="Of every multi-byte field (BLE is usually little).",
    )
    header_bytes: int = Field(
        0, ge=0, title="Header bytes", description="Bytes before the first sample."
    )
    sample_format: SampleFormat = Field(
        "u16", title="Sample format", description="u8..i32, f32 or IEEE-11073 sfloat."
    )
    samples_per_packet: int | None = Field(
        None,
        ge=1,
        title="Samples per packet",
        description="Exact count (other lengths are rejected); unset: all that fits.",
    )
    sample_rate_hz: float = Field(
        gt=0,
        allow_inf_nan=False,
        title="Sample rate (Hz)",
        description="Spacing of the samples. Without a timestamp, the last sample of a packet is "
        "dated at its arrival and earlier ones at 1/rate steps before it.",
    )
    timestamp: EdaTimestampConfig | None = Field(
        None,
        title="Timestamp field",
        description="Device time of the first sample; unset: arrival time.",
    )
    sequence: EdaSequenceConfig | None = Field(
        None, title="Sequence field", description="Packet counter used to count lost packets."
    )
    scale: float = Field(
        1.0, allow_inf_nan=False, title="Scale", description="Multiplies the raw sample."
    )
    offset: float = Field(
        0.0, allow_inf_nan=False, title="Offset", description="Added after scaling."
    )
    quantity: Literal["microsiemens", "kiloohm", "raw_adc"] = Field(
        "microsiemens",
        title="Quantity",
        description="What scaled samples are: conductance in µS, resistance in kΩ (µS = 1000/kΩ), "
        "or ADC codes converted with `adc`.",
    )
    adc: AdcConfig | None = Field(
        None, title="ADC circuit", description="Required when quantity is raw_adc."
    )
    valid_range_us: tuple[float, float] = Field(
        (0.01, 100.0),
        title="Valid range (µS)",
        description="Samples outside [lo, hi] are counted as out of range and never emitted.",
    )

    @field_validator("service_uuid", "characteristic_uuid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return normalize_uuid(value)

    @model_validator(mode="after")
    def _consistent(self) -> EdaDecoderConfig:
        lo, hi = self.valid_range_us
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise ValueError("valid_range_us must be [lo, hi] with 0 <= lo < hi")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if (self.quantity == "raw_adc") != (self.adc is not None):
            raise ValueError("adc is required with quantity raw_adc, and only then")
        for name, spec in (("timestamp", self.timestamp), ("sequence", self.sequence)):
            if spec is not None and spec.offset + _SIZES[spec.format] > self.header_bytes:
                raise ValueError(
                    f"the {name} field must lie inside the {self.header_bytes} header bytes"
                )
        return self


@dataclass(frozen=True, slots=True)
class EdaPacket:
    """One decoded EDA notification. Invalid samples are NaN in `samples_us`, counted in
    `invalid`; `missing` is the number of packets the sequence counter says were lost."""

    t: float  # agent-clock time of the first sample
    rate_hz: float
    samples_us: tuple[float, ...]
    invalid: int = 0
    seq: int | None = None
    missing: int = 0

    def runs(self) -> list[tuple[float, tuple[float, ...]]]:
        """(start time, samples) of each unbroken run of valid samples.

        An EdaEvent means evenly spaced samples, so an invalid sample splits the packet
        rather than being bridged or passed on as NaN.
        """
        out: list[tuple[float, tuple[float, ...]]] = []
        start: int | None = None
        for i, value in enumerate((*self.samples_us, math.nan)):
            if math.isnan(value):
                if start is not None:
                    out.append((self.t + start / self.rate_hz, self.samples_us[start:i]))
                    start = None
            elif start is None:
                start = i
        return out


REANCHOR_S = 5.0  # a device clock this far behind the arrival time is a new clock, not latency


class EdaDecoder:
    """Decodes packets per an `EdaDecoderConfig`; keeps sequence and device-clock state.

    Device timestamps are mapped to the agent clock with the smallest (arrival - device
    time) seen: the least-delayed packet is the best estimate of the clock offset. Call
    `reset()` on every new connection (the device may have restarted its counters).
    """

    def __init__(self, cfg: EdaDecoderConfig) -> None:
        self.cfg = cfg
        self._size = _SIZES[cfg.sample_format]
        self._endian = cfg.byte_order
        self.reset()

    def reset(self) -> None:
        self._seq: int | None = None
        self._ts_prev: int | None = None
        self._ts_wraps = 0
        self._clock_offset: float | None = None

    def decode(self, data: bytes, arrival_t: float) -> EdaPacket:
        """Decode one notification that arrived at `arrival_t`; raises GattParseError."""
        cfg = self.cfg
        data = bytes(data)
        body = len(data) - cfg.header_bytes
        if body < 0:
            raise GattParseError(f"truncated: {len(data)} bytes, header is {cfg.header_bytes}")
        if cfg.samples_per_packet is not None:
            expected = cfg.header_bytes + cfg.samples_per_packet * self._size
            if len(data) != expected:
                raise GattParseError(f"packet is {len(data)} bytes, expected {expected}")
        elif body == 0 or body % self._size:
            raise GattParseError(
                f"{body} sample bytes is not a whole number of {cfg.sample_format}"
            )
        n = body // self._size
        raw = [self._sample(data, cfg.header_bytes + i * self._size) for i in range(n)]
        missing, seq = self._sequence(data)
        t = self._first_sample_time(data, arrival_t, n)
        samples = tuple(self._to_us(value) for value in raw)
        invalid = sum(1 for s in samples if math.isnan(s))
        return EdaPacket(t, cfg.sample_rate_hz, samples, invalid, seq, missing)

    def _int(self, data: bytes, offset: int, fmt: str) -> int:
        size = _SIZES[fmt]
        return int.from_bytes(data[offset : offset + size], self._endian, signed=fmt[0] == "i")

    def _sample(self, data: bytes, offset: int) -> float:
        fmt = self.cfg.sample_format
        if fmt == "f32":
            (value,) = struct.unpack_from(_ENDIAN[self._endian] + "f", data, offset)
            return value
        if fmt == "sfloat":
            value = parse_sfloat(self._int(data, offset, "u16"))
            return math.nan if value is None else value
        return float(self._int(data, offset, fmt))

    def _sequence(self, data: bytes) -> tuple[int, int | None]:
        spec = self.cfg.sequence
        if spec is None:
            return 0, None
        seq = self._int(data, spec.offset, spec.format)
        modulus = 1 << (8 * _SIZES[spec.format])
        missing = 0
        if self._seq is not None:
            step = (seq - self._seq) % modulus
            if step == 0:
                raise GattParseError(f"duplicate packet (sequence {seq})")
            if step <= modulus // 2:
                missing = step - 1
            # else: the counter went backwards: the device restarted it; nothing to count
        self._seq = seq
        return missing, seq

    def _first_sample_time(self, data: bytes, arrival_t: float, n: int) -> float:
        span = (n - 1) / self.cfg.sample_rate_hz  # first to last sample of this packet
        spec = self.cfg.timestamp
        if spec is None:
            return arrival_t - span  # the packet is sent when its last sample is taken
        if spec.format == "f32":
            (device_units,) = struct.unpack_from(_ENDIAN[self._endian] + "f", data, spec.offset)
        else:
            value = self._int(data, spec.offset, spec.format)
            modulus = 1 << (8 * _SIZES[spec.format])
            if self._ts_prev is not None and value < self._ts_prev:
                if self._ts_prev - value > modulus // 2:
                    self._ts_wraps += 1
                else:  # a small step back: the device clock restarted
                    self._ts_wraps = 0
                    self._clock_offset = None
            self._ts_prev = value
            device_units = value + self._ts_wraps * modulus
        device_t = device_units * spec.scale_s
        if not math.isfinite(device_t):
            raise GattParseError("timestamp is not a finite number")
        lag = arrival_t - span - device_t  # clock offset + this packet's latency
        offset = self._clock_offset
        if offset is None or lag < offset or lag - offset > REANCHOR_S:
            self._clock_offset = offset = lag
        t = device_t + offset
        if not math.isfinite(t):
            raise GattParseError("timestamp does not map to a finite time")
        return t

    def _to_us(self, raw: float) -> float:
        """Scaled sample in µS, or NaN when it is not a valid measurement."""
        cfg = self.cfg
        value = raw * cfg.scale + cfg.offset
        if cfg.quantity == "kiloohm":
            value = 1000.0 / value if value > 0 else math.nan
        elif cfg.quantity == "raw_adc":
            value = _adc_to_us(value, cfg.adc)  # type: ignore[arg-type]  # validated
        lo, hi = cfg.valid_range_us
        return value if lo <= value <= hi else math.nan  # NaN fails the comparison too


def _adc_to_us(code: float, adc: AdcConfig) -> float:
    volts = code / (1 << adc.bits) * adc.vref_v
    supply = adc.supply_v if adc.supply_v is not None else adc.vref_v
    if not 0 < volts < supply:
        return math.nan  # a rail reading: open circuit or short, no conductance
    r = adc.series_resistor_ohm
    try:
        if adc.measured_across == "resistor":
            siemens = volts / (r * (supply - volts))
        else:
            siemens = (supply - volts) / (r * volts)
    except ZeroDivisionError:  # the product underflowed: no meaningful conductance
        return math.nan
    return siemens * 1e6
