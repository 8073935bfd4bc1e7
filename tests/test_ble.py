"""The live BLE sources with real bleak and bleak-retry-connector against a fake BlueZ.

Each test gets its own dbus-daemon and fake bluetoothd (tests/fake_bluez.py) and runs the
sources in `asyncio.run`, so bleak builds a fresh BlueZ manager on the fresh bus every time.
Waits poll for a condition with a generous deadline; nothing asserts on tight timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from agent.events import EdaEvent, Event, HeartEvent
from agent.sources import ble
from agent.sources.ble import BleEdaSource, BleHeartSource
from agent.sources.ble_config import BleDeviceMatch, EdaSourceConfig, HeartSourceConfig
from agent.sources.ble_scan import BleScanner, scan
from agent.sources.gatt_eda import EdaDecoderConfig
from agent.supervisor import backoff_delays
from tests.fake_bluez import (
    ABORT_BY_LOCAL,
    FakeBluez,
    FakeCharacteristic,
    FakeDevice,
    FakeService,
    fake_bluez_fixture,  # noqa: F401  (provides the `fake_bluez` fixture)
    uuid16,
)

pytestmark = pytest.mark.timeout(60)

STRAP = "C0:FF:EE:00:00:01"
EDA = "C0:FF:EE:00:00:02"
EDA_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
EDA_CHAR = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "scan_timeout_s": 5.0}


def strap(address: str = STRAP, adapter: str = "hci0", name: str = "Polar H10 1A2B") -> FakeDevice:
    return FakeDevice(
        address,
        name,
        [uuid16("180d")],
        [
            FakeService(uuid16("180d"), [FakeCharacteristic(uuid16("2a37"), ["notify"])]),
            FakeService(uuid16("180f"), [FakeCharacteristic(uuid16("2a19"), ["read"], b"\x57")]),
        ],
        adapter=adapter,
    )


def eda_sensor() -> FakeDevice:
    # no GATT Battery Service: BlueZ's battery plugin would own it and publish Battery1
    return FakeDevice(
        EDA,
        "GSR-42",
        [EDA_SERVICE],
        [FakeService(EDA_SERVICE, [FakeCharacteristic(EDA_CHAR, ["notify"])])],
        battery_percent=55,
    )


EDA_DECODER = EdaDecoderConfig(
    service_uuid=EDA_SERVICE,
    characteristic_uuid=EDA_CHAR,
    header_bytes=1,
    sequence={"offset": 0, "format": "u8"},
    sample_format="u16",
    samples_per_packet=4,
    sample_rate_hz=4.0,
    scale=0.01,
)


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def put(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(*sources: BleHeartSource | BleEdaSource) -> AsyncIterator[ListSink]:
    sink = ListSink()
    tasks = [asyncio.create_task(s.run(sink)) for s in sources]
    try:
        yield sink
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def connected(source: BleHeartSource | BleEdaSource) -> Callable[[], bool]:
    return lambda: source.status.extra["connected"] is True


def test_scan_lists_straps_and_configured_eda_sensors(fake_bluez: FakeBluez) -> None:
    fake_bluez.add_device(strap())
    fake_bluez.add_device(eda_sensor())
    fake_bluez.add_device(FakeDevice("C0:FF:EE:00:00:09", "Lamp", [uuid16("fe95")], []))
    rows = asyncio.run(scan(0.5, eda_configs=[EdaSourceConfig(decoder=EDA_DECODER)]))
    by_address = {row["address"]: row for row in rows}
    assert set(by_address) == {STRAP, EDA}
    assert by_address[STRAP]["kinds"] == ["heart"]
    assert by_address[STRAP]["name"] == "Polar H10 1A2B"
    assert by_address[EDA]["kinds"] == ["eda"]
    assert all(-70 <= int(row["rssi"]) <= -50 for row in rows)  # type: ignore[call-overload]
    everything = asyncio.run(scan(0.3, include_all=True))
    assert "C0:FF:EE:00:00:09" in {row["address"] for row in everything}


def test_heart_source_streams_rr_and_reads_battery(fake_bluez: FakeBluez) -> None:
    fake_bluez.add_device(strap())
    fake_bluez.add_device(strap("C0:FF:EE:00:00:07", name="Garmin HRM"))  # not the one we want
    cfg = HeartSourceConfig(match={"name": "Polar H10"}, battery_interval_s=0.2, **FAST)
    source = BleHeartSource(cfg, BleScanner())

    async def main() -> ListSink:
        async with running(source) as sink:
            await wait_for(lambda: fake_bluez.is_notifying(STRAP, "2a37"))
            before = time.time()
            fake_bluez.notify(
                STRAP, "2a37", bytes.fromhex("163c1104"), bytes.fromhex("164e1b031203")
            )
            fake_bluez.notify(STRAP, "2a37", bytes([0x04, 0]))  # no skin contact: no reading
            await wait_for(lambda: len(sink.events) == 2 and source.status.extra["no_reading"] == 1)
            after = time.time()
            await wait_for(lambda: source.status.extra["battery_pct"] == 0x57)
            assert all(before <= e.t <= after for e in sink.events)
            return sink

    sink = asyncio.run(main())
    first, second = sink.of(HeartEvent)
    assert (first.hr_bpm, first.contact, first.source) == (60, True, "heart")
    assert first.rr_ms == pytest.approx((1016.6,), abs=0.05)
    assert second.hr_bpm == 78
    assert second.rr_ms == pytest.approx((776.4, 767.6), abs=0.05)
    extra = source.status.extra
    assert extra["address"] == STRAP and extra["device_name"] == "Polar H10 1A2B"
    assert isinstance(extra["rssi"], int)
    assert (extra["packets"], source.status.events, source.status.rejected) == (3, 2, 0)
    assert fake_bluez.devices["C0:FF:EE:00:00:07"].connect_calls == 0
    # cancelled: the link and the discovery were both released
    assert not fake_bluez.devices[STRAP].connected
    assert not fake_bluez.discovering()


def test_a_link_left_up_by_a_previous_run_is_adopted(fake_bluez: FakeBluez) -> None:
    fake_bluez.add_device(strap())
    fake_bluez.connect_now(STRAP)  # a connected strap does not advertise: no scan finds it
    source = BleHeartSource(HeartSourceConfig(**FAST), BleScanner())

    async def main() -> ListSink:
        async with running(source) as sink:
            await wait_for(lambda: fake_bluez.is_notifying(STRAP, "2a37"))
            fake_bluez.notify(STRAP, "2a37", bytes.fromhex("163c1104"))
            await wait_for(lambda: len(sink.events) == 1)
            return sink

    asyncio.run(main())
    assert fake_bluez.devices[STRAP].connect_calls == 0
    assert fake_bluez.discovery_starts == 0


@pytest.mark.faults
def test_link_loss_reconnects_and_data_resumes(fake_bluez: FakeBluez) -> None:
    fake_bluez.add_device(strap())
    source = BleHeartSource(HeartSourceConfig(**FAST), BleScanner())

    async def main() -> ListSink:
        async with running(source) as sink:
            await wait_for(lambda: fake_bluez.is_notifying(STRAP, "2a37"))
            fake_bluez.notify(STRAP, "2a37", bytes.fromhex("163c1104"))
            await wait_for(lambda: len(sink.events) == 1)
            fake_bluez.drop_link(STRAP, silent_for_s=0.3)  # out of range for a moment
            await wait_for(lambda: source.status.extra["connected"] is False)
            assert "lost" in str(source.status.extra["last_error"])
            await wait_for(lambda: fake_bluez.is_notifying(STRAP, "2a37"))
            fake_bluez.notify(STRAP, "2a37", bytes.fromhex("164e1b031203"))
            await wait_for(lambda: len(sink.events) == 2)
            return sink

    sink = asyncio.run(main())
    assert [e.hr_bpm for e in sink.of(HeartEvent)] == [60, 78]
    assert source.status.extra["reconnects"] == 1
    assert fake_bluez.devices[STRAP].connect_calls == 2


@pytest.mark.faults
def test_connect_errors_are_retried_with_backoff(
    fake_bluez: FakeBluez, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    def recorded(initial: float, cap: float) -> Iterator[float]:
        for delay in backoff_delays(initial, cap, jitter=0):
            waits.append(delay)
            yield delay

    monkeypatch.setattr(ble, "backoff_delays", recorded)
    device = fake_bluez.add_device(strap())
    fake_bluez.fail_next_connects(STRAP, 3, ("org.bluez.Error.Failed", "Input/output error"))
    cfg = HeartSourceConfig(connect_attempts=1, **FAST)
    source = BleHeartSource(cfg, BleScanner())

    async def main() -> None:
        async with running(source):
            await wait_for(connected(source))

    asyncio.run(main())
    assert device.connect_calls == 4
    assert source.status.extra["connect_failures"] == 3
    assert "Input/output error" in str(source.status.extra["last_error"])
    assert waits == [0.05, 0.1, 0.2]  # the supervisor's capped doubling, one wait per failure


@pytest.mark.faults
def test_a_hanging_connect_times_out_and_is_retried(fake_bluez: FakeBluez) -> None:
    device = fake_bluez.add_device(strap())
    fake_bluez.connect_delay_s = 30.0  # BlueZ waiting for a device that never answers
    source = BleHeartSource(HeartSourceConfig(connect_timeout_s=0.3, **FAST), BleScanner())

    async def main() -> None:
        async with running(source):
            await wait_for(lambda: source.status.extra["connect_failures"] == 1)
            assert "did not finish in 0.3 s" in str(source.status.extra["last_error"])
            fake_bluez.connect_delay_s = 0.05
            await wait_for(connected(source))

    asyncio.run(main())
    assert device.connect_calls >= 2
    assert fake_bluez.in_progress_rejections == 0  # the abandoned connect was cancelled


def test_le_abort_by_local_is_retried_inside_the_connect(fake_bluez: FakeBluez) -> None:
    device = fake_bluez.add_device(strap())
    fake_bluez.fail_next_connects(STRAP, 2, ABORT_BY_LOCAL)
    source = BleHeartSource(HeartSourceConfig(**FAST), BleScanner())

    async def main() -> None:
        async with running(source):
            await wait_for(connected(source))
            await asyncio.sleep(0.1)  # a stale disconnect callback would show up here
            assert source.status.extra["connected"] is True

    asyncio.run(main())
    assert device.connect_calls == 3
    assert source.status.extra["connect_failures"] == 0


@pytest.mark.faults
def test_malformed_storm_is_counted_and_the_link_survives(fake_bluez: FakeBluez) -> None:
    fake_bluez.add_device(strap())
    source = BleHeartSource(HeartSourceConfig(**FAST), BleScanner())
    garbage = [b"", b"\x01\x3c", b"\x10\x3c\x11", b"\x00\x3c\xff", b"\x16\x00\x11\x04"] * 200

    async def main() -> ListSink:
        async with running(source) as sink:
            await wait_for(lambda: fake_bluez.is_notifying(STRAP, "2a37"))
            assert fake_bluez.notify(STRAP, "2a37", *garbage) == 1000
            fake_bluez.notify(STRAP, "2a37", bytes.fromhex("164e1b031203"))
            await wait_for(lambda: len(sink.events) == 1)
            assert source.status.extra["connected"] is True
            return sink

    sink = asyncio.run(main())
    assert sink.of(HeartEvent)[0].hr_bpm == 78
    assert source.status.rejected == 1000
    assert source.status.extra["rejects"] == 1000
    assert source.status.extra["connects"] == 1
    assert fake_bluez.devices[STRAP].connect_calls == 1


def test_eda_and_heart_sources_share_the_scanner(fake_bluez: FakeBluez) -> None:
    fake_bluez.add_device(strap())
    fake_bluez.add_device(eda_sensor())
    fake_bluez.connect_delay_s = 0.2  # long enough for two connects to collide
    scanner = BleScanner()
    heart = BleHeartSource(HeartSourceConfig(**FAST), scanner)
    eda = BleEdaSource(
        EdaSourceConfig(decoder=EDA_DECODER, battery_interval_s=0.2, **FAST), scanner
    )

    def packet(seq: int, *centi_us: int) -> bytes:
        return bytes([seq]) + b"".join(v.to_bytes(2, "little") for v in centi_us)

    async def main() -> ListSink:
        async with running(heart, eda) as sink:
            await wait_for(lambda: fake_bluez.is_notifying(EDA, EDA_CHAR))
            await wait_for(lambda: fake_bluez.is_notifying(STRAP, "2a37"))
            fake_bluez.notify(EDA, EDA_CHAR, packet(7, 500, 510, 520, 530))
            fake_bluez.notify(EDA, EDA_CHAR, packet(9, 540, 65535, 560, 570))  # 8 lost, 1 bad
            fake_bluez.notify(EDA, EDA_CHAR, b"\x0a\x01")  # truncated
            fake_bluez.notify(STRAP, "2a37", bytes.fromhex("163c1104"))
            await wait_for(lambda: len(sink.of(EdaEvent)) == 3 and len(sink.of(HeartEvent)) == 1)
            await wait_for(lambda: eda.status.extra["battery_pct"] == 55)
            return sink

    sink = asyncio.run(main())
    first, before_gap, after_gap = sink.of(EdaEvent)
    assert first.microsiemens == pytest.approx((5.0, 5.1, 5.2, 5.3))
    assert (first.rate_hz, first.source) == (4.0, "eda")
    assert before_gap.microsiemens == pytest.approx((5.4,))
    assert after_gap.microsiemens == pytest.approx((5.6, 5.7))
    assert after_gap.t - before_gap.t == pytest.approx(0.5)  # the bad sample left a hole
    extra = eda.status.extra
    assert (extra["missing_packets"], extra["out_of_range"], eda.status.rejected) == (1, 1, 1)
    assert fake_bluez.in_progress_rejections == 0  # connects took turns on the adapter


def test_adapter_is_selectable(fake_bluez: FakeBluez) -> None:
    fake_bluez.add_adapter("hci1")
    fake_bluez.add_device(strap("C0:FF:EE:00:01:01", adapter="hci0"))
    fake_bluez.add_device(strap("C0:FF:EE:00:01:02", adapter="hci1"))
    source = BleHeartSource(HeartSourceConfig(adapter="hci1", **FAST), BleScanner())

    async def main() -> None:
        async with running(source):
            await wait_for(connected(source))

    asyncio.run(main())
    assert source.status.extra["address"] == "C0:FF:EE:00:01:02"
    assert fake_bluez.devices["C0:FF:EE:00:01:01"].connect_calls == 0


def test_missing_device_is_reported_then_found(fake_bluez: FakeBluez) -> None:
    cfg = HeartSourceConfig(match=BleDeviceMatch(address=STRAP), **FAST | {"scan_timeout_s": 0.2})
    source = BleHeartSource(cfg, BleScanner())

    async def main() -> None:
        async with running(source):
            await wait_for(lambda: int(source.status.extra["connect_failures"]) >= 2)
            assert "no device matching address=" in str(source.status.extra["last_error"])
            fake_bluez.add_device(strap())
            await wait_for(connected(source))

    asyncio.run(main())


def test_scan_command_prints_the_strap(fake_bluez: FakeBluez) -> None:
    import json
    import subprocess
    import sys

    fake_bluez.add_device(strap())
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "scan", "--seconds", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["address"] for r in rows] == [STRAP]
    assert rows[0]["kinds"] == ["heart"]
