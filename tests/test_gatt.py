"""The GATT decoders, tested with bytes: real strap payloads, every flag combination, and
property tests that any byte string either decodes or raises GattParseError."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.sources.ble_config import BleDeviceMatch, EdaSourceConfig, HeartSourceConfig
from agent.sources.gatt import (
    GattParseError,
    HeartRateMeasurement,
    normalize_uuid,
    parse_heart_rate,
    parse_sfloat,
)
from agent.sources.gatt_eda import EdaDecoder, EdaDecoderConfig, EdaPacket

EDA_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
EDA_CHAR = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"


# --- Heart Rate Measurement ---------------------------------------------------------------


def test_real_strap_payloads() -> None:
    one = parse_heart_rate(bytes.fromhex("163c1104"))
    assert (one.hr_bpm, one.contact, one.energy_kj) == (60, True, None)
    assert one.rr_ms == pytest.approx((1016.6,), abs=0.05)
    two = parse_heart_rate(bytes.fromhex("164e1b031203"))
    assert two.hr_bpm == 78 and two.contact is True
    assert two.rr_ms == pytest.approx((776.4, 767.6), abs=0.05)


def build_hrm(flags: int, hr: int, energy: int, rr_raw: list[int]) -> bytes:
    out = bytes([flags]) + hr.to_bytes(2 if flags & 0x01 else 1, "little")
    if flags & 0x08:
        out += energy.to_bytes(2, "little")
    if flags & 0x10:
        out += b"".join(v.to_bytes(2, "little") for v in rr_raw)
    return out


@pytest.mark.parametrize("flags", range(32))
def test_every_flag_combination(flags: int) -> None:
    data = build_hrm(flags, 72, 513, [1000, 1024])
    m = parse_heart_rate(data)
    assert m.hr_bpm == 72
    assert m.contact == {0: None, 1: None, 2: False, 3: True}[(flags >> 1) & 3]
    assert m.energy_kj == (513 if flags & 0x08 else None)
    assert m.rr_ms == ((1000 * 1000 / 1024, 1000.0) if flags & 0x10 else ())
    # reserved bits 5-7 are ignored
    assert parse_heart_rate(bytes([data[0] | 0xE0]) + data[1:]) == m


def test_uint16_heart_rate_and_empty_rr_list() -> None:
    assert parse_heart_rate(bytes([0x11, 0x2C, 0x01])) == HeartRateMeasurement(300)
    assert parse_heart_rate(bytes([0x10, 60])).rr_ms == ()  # RR flagged, none this time


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("", "empty"),
        ("01", "truncated"),  # uint16 HR flagged, no byte
        ("013c", "truncated"),
        ("083c01", "energy"),  # energy flagged, one byte only
        ("103c1104aa", "odd"),
        ("003c11", "trailing"),
        ("103c0000", "RR interval of 0"),
        ("0600", "heart rate 0"),  # HR 0 while contact is detected
        ("10001104", "heart rate 0"),  # HR 0 with an RR interval
        ("01e803", "implausible"),  # 1000 bpm
    ],
)
def test_malformed_heart_rate(payload: str, reason: str) -> None:
    with pytest.raises(GattParseError, match=reason):
        parse_heart_rate(bytes.fromhex(payload))


def test_hr_zero_without_contact_is_no_reading() -> None:
    assert parse_heart_rate(bytes([0x04, 0])) == HeartRateMeasurement(0, (), False)


@given(st.binary(max_size=40))
def test_any_bytes_decode_or_raise_gatt_parse_error(data: bytes) -> None:
    try:
        m = parse_heart_rate(data)
    except GattParseError:
        return
    assert 0 <= m.hr_bpm <= 300
    assert all(rr > 0 for rr in m.rr_ms)


# --- SFLOAT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0x0000, 0.0),
        (0x007B, 123.0),
        (0xF07B, 12.3),  # exponent -1
        (0xE4D2, 12.34),  # 1234e-2
        (0x0FFF, -1.0),  # mantissa -1
        (0x1002, 20.0),  # exponent +1
        (0x07FE, math.inf),
        (0x0802, -math.inf),
        (0x07FF, None),  # NaN
        (0x0800, None),  # NRes
        (0x0801, None),  # reserved
    ],
)
def test_sfloat(raw: int, value: float | None) -> None:
    assert parse_sfloat(raw) == value


@given(st.integers(-(2**20), 2**20))
def test_sfloat_any_int(raw: int) -> None:
    try:
        value = parse_sfloat(raw)
    except GattParseError:
        assert not 0 <= raw <= 0xFFFF
        return
    assert value is None or isinstance(value, float)


# --- EDA decoder ------------------------------------------------------------------------------


def eda_config(**overrides: object) -> EdaDecoderConfig:
    base: dict[str, object] = {
        "service_uuid": EDA_SERVICE,
        "characteristic_uuid": EDA_CHAR,
        "sample_rate_hz": 4.0,
    }
    return EdaDecoderConfig.model_validate(base | overrides)


def test_eda_u16_microsiemens_with_sequence_gaps() -> None:
    decoder = EdaDecoder(
        eda_config(
            header_bytes=1,
            sequence={"offset": 0, "format": "u8"},
            samples_per_packet=4,
            scale=0.01,
        )
    )

    def packet(seq: int, *values: int) -> bytes:
        return bytes([seq]) + struct.pack("<4H", *values)

    first = decoder.decode(packet(254, 500, 510, 520, 530), arrival_t=100.0)
    assert first.samples_us == pytest.approx((5.0, 5.1, 5.2, 5.3))
    assert first.t == pytest.approx(100.0 - 3 / 4.0)  # last sample dated at arrival
    assert (first.rate_hz, first.missing, first.seq) == (4.0, 0, 254)
    assert decoder.decode(packet(255, 1, 1, 1, 1), 101.0).missing == 0
    assert decoder.decode(packet(2, 600, 600, 600, 600), 102.0).missing == 2  # 0, 1 lost (wrap)
    with pytest.raises(GattParseError, match="duplicate"):
        decoder.decode(packet(2, 600, 600, 600, 600), 102.5)
    assert decoder.decode(packet(0, 600, 600, 600, 600), 103.0).missing == 0  # restarted
    with pytest.raises(GattParseError, match="expected 9"):
        decoder.decode(packet(1, 1, 2, 3, 4) + b"\x00", 104.0)


def test_eda_out_of_range_samples_split_the_packet() -> None:
    decoder = EdaDecoder(eda_config(scale=0.01, valid_range_us=(0.05, 60.0)))
    packet = decoder.decode(struct.pack("<5H", 500, 0, 510, 65535, 520), arrival_t=10.0)
    assert packet.invalid == 2
    assert math.isnan(packet.samples_us[1]) and math.isnan(packet.samples_us[3])
    t0 = 10.0 - 4 / 4.0
    runs = packet.runs()
    assert [t for t, _ in runs] == pytest.approx([t0, t0 + 0.5, t0 + 1.0])
    assert [samples for _, samples in runs] == [(5.0,), (pytest.approx(5.1),), (5.2,)]


def test_eda_kiloohm_big_endian_sfloat() -> None:
    decoder = EdaDecoder(eda_config(quantity="kiloohm", sample_format="sfloat", byte_order="big"))
    packet = decoder.decode(bytes.fromhex("00c8 07ff 0000"), arrival_t=5.0)  # 200 kΩ, NaN, 0
    assert packet.samples_us[0] == pytest.approx(5.0)
    assert packet.invalid == 2


def test_eda_raw_adc_divider_formula() -> None:
    adc = {"bits": 12, "vref_v": 3.3, "series_resistor_ohm": 100_000.0}
    decoder = EdaDecoder(eda_config(quantity="raw_adc", adc=adc))
    # code 2048 -> 1.65 V across the resistor: skin resistance equals it: 10 µS
    assert decoder.decode(struct.pack("<H", 2048), 1.0).samples_us[0] == pytest.approx(10.0)
    across_skin = EdaDecoder(eda_config(quantity="raw_adc", adc=adc | {"measured_across": "skin"}))
    # 1/4 of the supply across the skin: R_skin = R/3 -> 30 µS
    assert across_skin.decode(struct.pack("<H", 1024), 1.0).samples_us[0] == pytest.approx(30.0)
    assert decoder.decode(struct.pack("<H", 0), 1.0).invalid == 1  # a rail: open circuit


def test_eda_device_timestamps_map_to_the_agent_clock() -> None:
    cfg = eda_config(
        header_bytes=4,
        timestamp={"offset": 0, "format": "u16", "scale_s": 0.001},
        samples_per_packet=2,
        sample_rate_hz=2.0,
    )
    decoder = EdaDecoder(cfg)

    def packet(ms: int) -> bytes:
        return struct.pack("<HHHH", ms, 0, 500, 500)

    # the first packet can only be dated as if it had no latency: arrival - 0.5 s span
    assert decoder.decode(packet(65000), 1000.6).t == pytest.approx(1000.1)
    # a packet that arrives 0.08 s sooner than the first, relative to device time, shows the
    # first was late: the offset moves to the least delayed packet
    assert decoder.decode(packet(65500), 1001.02).t == pytest.approx(1000.52)
    # a late packet keeps its device time; the u16 ms counter wraps: 66000 ms is 464
    assert decoder.decode(packet(464), 1001.60).t == pytest.approx(1001.02)
    # a device clock that jumps far from the arrival times is re-anchored, not trusted
    assert decoder.decode(packet(964), 1020.0).t == pytest.approx(1019.5)


@pytest.mark.parametrize(
    "bad",
    [
        {"quantity": "raw_adc"},  # no adc
        {"valid_range_us": (5.0, 1.0)},
        {"header_bytes": 1, "sequence": {"offset": 0, "format": "u16"}},  # outside the header
        {"sample_rate_hz": 0},
        {"sample_format": "u12"},
        {"service_uuid": "not-a-uuid"},
        {"unknown": 1},
        {"scale": 0},
    ],
)
def test_eda_config_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        eda_config(**bad)


def test_every_config_field_has_title_and_description() -> None:
    for model in (EdaDecoderConfig, HeartSourceConfig, EdaSourceConfig, BleDeviceMatch):
        schema = model.model_json_schema()
        for section in [schema, *schema.get("$defs", {}).values()]:
            for name, prop in section.get("properties", {}).items():
                assert prop.get("title") and prop.get("description"), f"{model.__name__}.{name}"


def test_device_match_and_defaults() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        BleDeviceMatch()
    match = BleDeviceMatch(address="aa-bb-cc-dd-ee-ff", name="Polar H10")
    assert match.address == "AA:BB:CC:DD:EE:FF"
    assert match.matches("aa:bb:cc:dd:ee:ff", "Polar H10 8C4E5A2B", [])
    assert not match.matches("AA:BB:CC:DD:EE:FF", "Garmin HRM", [])
    assert HeartSourceConfig().match.service_uuid == normalize_uuid("180D")
    eda = EdaSourceConfig(decoder=eda_config())
    assert eda.device_match.service_uuid == EDA_SERVICE
    with pytest.raises(ValidationError):
        HeartSourceConfig(adapter="bluetooth0")


# A varied family of valid configurations, so the property below is not about one layout.
@st.composite
def decoder_configs(draw: st.DrawFn) -> EdaDecoderConfig:
    header = draw(st.integers(0, 8))
    fields: dict[str, object] = {
        "header_bytes": header,
        "byte_order": draw(st.sampled_from(["little", "big"])),
        "sample_format": draw(
            st.sampled_from(["u8", "u16", "u24", "u32", "i16", "i24", "i32", "f32", "sfloat"])
        ),
        "samples_per_packet": draw(st.none() | st.integers(1, 6)),
        "sample_rate_hz": draw(st.floats(0.5, 256)),
        "scale": draw(st.sampled_from([1.0, 0.001, -0.5, 1e30])),
        "offset": draw(st.sampled_from([0.0, -3.0])),
        "quantity": draw(st.sampled_from(["microsiemens", "kiloohm", "raw_adc"])),
    }
    if fields["quantity"] == "raw_adc":
        fields["adc"] = {
            "bits": draw(st.integers(1, 32)),
            "vref_v": 3.3,
            "series_resistor_ohm": draw(st.sampled_from([1e-300, 1e5])),
            "measured_across": draw(st.sampled_from(["resistor", "skin"])),
        }
    if header >= 1 and draw(st.booleans()):
        fields["sequence"] = {"offset": 0, "format": "u8"}
    if header >= 5 and draw(st.booleans()):
        fmt = draw(st.sampled_from(["u16", "u24", "u32", "f32"]))
        fields["timestamp"] = {
            "offset": 1,
            "format": fmt,
            "scale_s": draw(st.sampled_from([1e-3, 1e300])),
        }
    return eda_config(**fields)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    decoder_configs(), st.lists(st.binary(max_size=40), min_size=1, max_size=6), st.floats(0, 2e9)
)
def test_any_bytes_give_a_packet_or_gatt_parse_error(
    cfg: EdaDecoderConfig, payloads: list[bytes], arrival: float
) -> None:
    decoder = EdaDecoder(cfg)
    lo, hi = cfg.valid_range_us
    for i, data in enumerate(payloads):
        try:
            packet = decoder.decode(data, arrival + i)
        except GattParseError:
            continue
        assert isinstance(packet, EdaPacket) and math.isfinite(packet.t)
        valid = [s for s in packet.samples_us if not math.isnan(s)]
        assert all(lo <= s <= hi for s in valid)
        assert len(valid) + packet.invalid == len(packet.samples_us)
        assert sum(len(run) for _, run in packet.runs()) == len(valid)
