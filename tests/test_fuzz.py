"""Property-based fuzzing of everything that parses input from outside the process.

Each property: any input gives a valid result or the one clean, counted rejection, never
another exception. The inputs come from a radio (GATT notifications), from a person (the
YAML configuration) and from the network (MQTT commands). The byte-level "any bytes"
properties of the GATT decoders live in test_gatt.py; here are the round trips (what a
strap or sensor encodes is exactly what comes out) and the other parsers. The longer,
coverage-guided campaign over the same targets is `python -m agent.bench.fuzz`.

`pytest tests/test_fuzz.py --hypothesis-show-statistics` prints how many examples ran.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig
from agent.config_loader import ConfigError, load_config, parse_config
from agent.control import COMMANDS, Command, CommandError, parse_command
from agent.sources.gatt import RR_UNITS_PER_S, GattParseError, parse_heart_rate
from agent.sources.gatt_eda import EdaDecoder, EdaDecoderConfig
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(300)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Heart Rate Measurement: what a strap encodes comes out -----------------------------------


@FAST
@given(
    hr=st.integers(1, 300),
    wide=st.booleans(),
    contact=st.sampled_from([0, 1, 2, 3]),
    energy=st.none() | st.integers(0, 0xFFFF),
    rr=st.none() | st.lists(st.integers(1, 0xFFFF), max_size=9),
    reserved=st.integers(0, 7),
)
def test_heart_rate_round_trip(
    hr: int, wide: bool, contact: int, energy: int | None, rr: list[int] | None, reserved: int
) -> None:
    flags = (wide * 0x01) | (contact << 1) | (0x08 if energy is not None else 0)
    flags |= (0x10 if rr is not None else 0) | (reserved << 5)
    assume(wide or hr < 256)
    data = bytes([flags]) + hr.to_bytes(2 if wide else 1, "little")
    if energy is not None:
        data += struct.pack("<H", energy)
    data += b"".join(struct.pack("<H", v) for v in rr or [])
    m = parse_heart_rate(data)
    assert m.hr_bpm == hr
    assert m.energy_kj == energy
    assert m.contact == {0: None, 1: None, 2: False, 3: True}[contact]
    assert m.rr_ms == tuple(v * 1000.0 / RR_UNITS_PER_S for v in rr or [])


@FAST
@given(st.binary(min_size=2, max_size=24), st.integers(0, 23))
def test_heart_rate_single_byte_corruption_is_decoded_or_rejected(data: bytes, at: int) -> None:
    """Flip one byte of a valid packet: a result that obeys the rules, or GattParseError."""
    valid = bytes([0x16, 72]) + struct.pack("<HH", 800, 820)
    corrupted = bytearray(valid)
    corrupted[at % len(valid)] ^= data[0] | 1
    try:
        m = parse_heart_rate(bytes(corrupted))
    except GattParseError:
        return
    assert 0 <= m.hr_bpm <= 300 and all(r > 0 for r in m.rr_ms)


# --- the EDA decoder: what a sensor encodes comes out ------------------------------------------

EDA_CFG = EdaDecoderConfig(
    service_uuid="6e400001-b5a3-f393-e0a9-e50e24dcca9e",
    characteristic_uuid="6e400003-b5a3-f393-e0a9-e50e24dcca9e",
    header_bytes=2,
    sequence={"offset": 0, "format": "u16"},
    sample_format="u16",
    sample_rate_hz=8.0,
    scale=0.01,
    byte_order="big",
)


@FAST
@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=9)),
        min_size=1,
        max_size=8,
    )
)
def test_eda_round_trip_with_sequence_gaps(packets: list[tuple[int, list[int]]]) -> None:
    decoder = EdaDecoder(EDA_CFG)
    lo, hi = EDA_CFG.valid_range_us
    previous: int | None = None
    for i, (seq, codes) in enumerate(packets):
        data = struct.pack(">H", seq) + b"".join(struct.pack(">H", c) for c in codes)
        try:
            packet = decoder.decode(data, 1000.0 + i)
        except GattParseError as exc:
            assert previous == seq and "duplicate" in str(exc)  # the only way to reject these
            continue
        expected = [c * 0.01 for c in codes]
        for got, want in zip(packet.samples_us, expected, strict=True):
            assert math.isnan(got) if not lo <= want <= hi else got == pytest.approx(want)
        step = None if previous is None else (seq - previous) % 0x10000
        assert packet.missing == (step - 1 if step and step <= 0x8000 else 0)
        assert packet.t == pytest.approx(1000.0 + i - (len(codes) - 1) / 8.0)
        previous = seq


# --- the configuration loader -------------------------------------------------------------------

LOCATED = re.compile(r"^fuzz\.yaml:\d+:\d+: ")


def _parse_or_clean_error(text: str) -> AgentConfig | None:
    try:
        return parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems, "a ConfigError lists its problems"
        for problem in exc.problems:
            assert LOCATED.match(problem), problem  # file:line:column: what
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_config_any_text(text: str) -> None:
    _parse_or_clean_error(text)


YAML_ALPHABET = st.sampled_from(
    [*":-[]{},#&*!|>'\"%@` \n\t?", "mqtt", "device", "sources", "windows", "0", "1e9", "~"]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(YAML_ALPHABET, max_size=60).map("".join))
def test_config_yaml_punctuation(text: str) -> None:
    _parse_or_clean_error(text)


SECTIONS = list(AgentConfig.model_fields)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["name", "broker", "speed", "x", "state_s", "heart"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8), values, max_size=5))
def test_config_any_structure(data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    cfg = _parse_or_clean_error(text)
    if cfg is not None:
        assert isinstance(cfg, AgentConfig)


EXAMPLE_LINES = (ROOT / "config" / "example.yaml").read_text().splitlines()
VALUE_LINES = [i for i, line in enumerate(EXAMPLE_LINES) if re.match(r"^\s*[a-z_]+: \S", line)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(VALUE_LINES), st.one_of(scalars.map(str), YAML_ALPHABET)),
        min_size=1,
        max_size=3,
    )
)
def test_config_example_with_mutated_values(edits: list[tuple[int, str]]) -> None:
    """The shipped example with up to three values replaced: near-valid files reach deep."""
    lines = list(EXAMPLE_LINES)
    for index, value in edits:
        key = lines[index].split(":", 1)[0]
        lines[index] = f"{key}: {value}"
    _parse_or_clean_error("\n".join(lines) + "\n")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_config_file_of_any_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert all(p.startswith(str(path)) for p in exc.problems), exc.problems


@pytest.mark.parametrize("text", ["mqtt:\n  er: " + "[" * 800, "a: " + "{b: " * 1000])
def test_config_nested_too_deeply_is_a_clean_error(text: str) -> None:
    """Found by the atheris campaign: PyYAML composes recursively, and a few hundred nested
    brackets raised RecursionError out of the loader."""
    assert _parse_or_clean_error(text) is None


def test_example_config_is_valid() -> None:
    assert isinstance(load_config(ROOT / "config" / "example.yaml"), AgentConfig)
    assert isinstance(load_config(Path(ROOT / "config" / "demo.yaml")), AgentConfig)


# --- MQTT commands ---------------------------------------------------------------------------

REASONS = {"unknown", "too_long", "not_utf8", "bad_value"}


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.sampled_from(COMMANDS), st.text(max_size=30)), st.binary(max_size=100))
def test_command_any_name_and_bytes(name: str, payload: bytes) -> None:
    try:
        command = parse_command(name, payload)
    except CommandError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(command, Command) and command.name == name
    assert isinstance(command.value, bool if name == "paused" else str)


WORDS = {
    "paused": ["ON", "off", "true", "False", "1", "0", "pause", "Resume"],
    "baseline": ["calibrate", "RESET"],
}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([(n, w) for n, ws in WORDS.items() for w in ws]),
    st.text(" \t\r\n", max_size=3),
    st.text(" \t\r\n", max_size=3),
)
def test_command_words_in_any_case_and_whitespace(
    word: tuple[str, str], left: str, right: str
) -> None:
    name, text = word
    command = parse_command(name, f"{left}{text}{right}".encode())
    lowered = text.lower()
    if name == "paused":
        assert command.value is (lowered in {"on", "true", "1", "pause"})
    else:
        assert command.value == lowered


# --- the coverage-guided campaign's command -------------------------------------------------


def test_atheris_campaign_command_runs_every_target() -> None:
    """A few hundred executions per target: the harness works (the campaign is long)."""
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed: pip install -e '.[fuzz]'")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.bench.fuzz", "all", "--runs", "300", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = {r["target"]: r for r in json.loads(proc.stdout)}
    assert set(results) == {"gatt", "eda", "config", "command"}
    for r in results.values():
        assert r["ok"] and r["executions"] >= 300 and r["cov"] > 0 and not r["findings"]
