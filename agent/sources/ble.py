"""Live Bluetooth LE sources (a heart-rate strap, an EDA sensor) through bleak.

One `BleScanner`, owned by the runtime and shared by every BLE source, scans an adapter only
while some source is looking for its device, and hands back a device seen in that scan:
BlueZ forgets devices it has not seen for a while, and a stale `BLEDevice` fails with
"device not found". Each source then runs its own link loop:

    find -> connect -> subscribe -> wait for the link to drop -> back off -> find ...

Connects on one adapter take turns (BlueZ answers a second concurrent LE connect with
"Operation already in progress"); each goes through bleak-retry-connector's
`establish_connection`, which retries transient BlueZ failures quickly, and a failure it
gives up on is followed by the capped backoff of `supervisor.backoff_delays`. Bluetooth
errors never leave `run`: a strap out of range is a normal state, reported in
`status.extra`, not a crash. Bad packets are counted in `status.rejected` and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from agent.events import EdaEvent, Event, EvidenceSink, HeartEvent
from agent.sources.base import SourceStatus
from agent.sources.ble_config import (
    HEART_RATE_SERVICE,
    BleDeviceMatch,
    BleLinkConfig,
    EdaSourceConfig,
    HeartSourceConfig,
)
from agent.sources.gatt import EdaDecoder, GattParseError, normalize_uuid, parse_heart_rate
from agent.supervisor import STABLE_AFTER_S, backoff_delays

log = logging.getLogger("agent.sources.ble")

HEART_RATE_MEASUREMENT = normalize_uuid("2a37")
BATTERY_LEVEL = normalize_uuid("2a19")
# Failures of the radio, of BlueZ or of the D-Bus link: retried by the link loop. Anything
# else is a bug and goes to the supervisor, which logs it with its traceback.
LINK_ERRORS: tuple[type[BaseException], ...] = (BleakError, TimeoutError, OSError, EOFError)
DISCONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Sighting:
    """A device as one advertisement showed it."""

    device: BLEDevice
    adv: AdvertisementData
    seen: float  # time.monotonic()

    @property
    def name(self) -> str | None:
        return self.adv.local_name or self.device.name


class _AdapterScan:
    """Scan state of one adapter: who is waiting, what has been seen since it started."""

    def __init__(self, adapter: str | None) -> None:
        self.adapter = adapter
        self.scanner: BleakScanner | None = None
        self.users = 0
        self.sightings: dict[str, Sighting] = {}
        self.waiters: list[tuple[BleDeviceMatch, asyncio.Future[Sighting]]] = []
        self.start_stop = asyncio.Lock()
        self.connect_lock = asyncio.Lock()

    def on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        sighting = Sighting(device, adv, time.monotonic())
        self.sightings[device.address] = sighting
        for match, waiter in self.waiters:
            if not waiter.done() and _matches(match, sighting):
                waiter.set_result(sighting)


def _matches(match: BleDeviceMatch, sighting: Sighting) -> bool:
    return match.matches(sighting.device.address, sighting.name, sighting.adv.service_uuids)


class BleScanner:
    """The one scanner of the agent: per adapter, it runs while anyone looks for a device."""

    def __init__(self) -> None:
        self._scans: dict[str | None, _AdapterScan] = {}

    def _scan(self, adapter: str | None) -> _AdapterScan:
        return self._scans.setdefault(adapter, _AdapterScan(adapter))

    @asynccontextmanager
    async def scanning(self, adapter: str | None = None) -> AsyncIterator[_AdapterScan]:
        """Keep `adapter` scanning for the duration of the block."""
        scan = self._scan(adapter)
        async with scan.start_stop:
            if scan.scanner is None:
                scanner = BleakScanner(
                    detection_callback=scan.on_advertisement,
                    bluez={"adapter": adapter} if adapter else {},
                )
                scan.sightings.clear()  # only what this scan sees is fresh
                await scanner.start()
                scan.scanner = scanner
            scan.users += 1
        try:
            yield scan
        finally:
            # shielded: a cancelled source must still stop the discovery it started
            await asyncio.shield(self._release(scan))

    async def _release(self, scan: _AdapterScan) -> None:
        async with scan.start_stop:
            scan.users -= 1
            if scan.users == 0 and scan.scanner is not None:
                scanner, scan.scanner = scan.scanner, None
                try:
                    await scanner.stop()
                except (*LINK_ERRORS, AssertionError) as exc:
                    log.warning("stopping the BLE scan on %s failed: %s", scan.adapter, exc)

    async def find(
        self, match: BleDeviceMatch, adapter: str | None = None, timeout: float = 30.0
    ) -> Sighting:
        """A device matching `match`, seen advertising in the current scan.

        Raises TimeoutError when none shows up within `timeout` seconds.
        """
        async with self.scanning(adapter) as scan:
            for address, sighting in list(scan.sightings.items()):
                if _matches(match, sighting):
                    return scan.sightings.pop(address)  # used once: the next find waits anew
            waiter: asyncio.Future[Sighting] = asyncio.get_running_loop().create_future()
            entry = (match, waiter)
            scan.waiters.append(entry)
            try:
                async with asyncio.timeout(timeout):
                    sighting = await waiter
            finally:
                scan.waiters.remove(entry)
            scan.sightings.pop(sighting.device.address, None)
            return sighting

    async def connected(self, match: BleDeviceMatch, adapter: str | None = None) -> Sighting | None:
        """A matching device that BlueZ already holds a link to, if any.

        BlueZ keeps a link up when the client that made it dies, and a connected device stops
        advertising: after a crash and restart, scanning would never find the strap again.
        """
        try:
            from bleak import BleakAdapter  # bleak >= 3.1
        except ImportError:
            return None
        try:
            found = await BleakAdapter.get(bluez={"adapter": adapter} if adapter else {})
            services = [match.service_uuid] if match.service_uuid else ["1800", "1801"]
            devices = await found.get_connected_devices(services)
        except NotImplementedError:
            return None
        for device in devices:
            props = device.details.get("props", {}) if isinstance(device.details, dict) else {}
            uuids = list(props.get("UUIDs", []))
            rssi = props.get("RSSI", -127)
            adv = AdvertisementData(device.name, {}, {}, uuids, None, rssi, (None, props))
            sighting = Sighting(device, adv, time.monotonic())
            if _matches(match, sighting):
                return sighting
        return None

    async def collect(self, seconds: float, adapter: str | None = None) -> list[Sighting]:
        """Everything seen advertising during `seconds` of scanning."""
        async with self.scanning(adapter) as scan:
            started = time.monotonic()
            await asyncio.sleep(seconds)
            return [s for s in scan.sightings.values() if s.seen >= started]

    def connect_lock(self, adapter: str | None) -> asyncio.Lock:
        """Held around a connect: one LE connection attempt per adapter at a time."""
        return self._scan(adapter).connect_lock


class _BleSource:
    """The link loop shared by the BLE sources; subclasses decode their characteristic."""

    name = "ble"

    def __init__(self, cfg: BleLinkConfig, scanner: BleScanner, name: str | None = None) -> None:
        self.cfg = cfg
        self.scanner = scanner
        if name is not None:
            self.name = name
        self.status = SourceStatus()
        self.status.extra.update(
            connected=False,
            address=None,
            device_name=None,
            rssi=None,
            connects=0,
            reconnects=0,
            connect_failures=0,
            packets=0,
            rejects=0,
            battery_pct=None,
            last_error=None,
        )

    # -- what a subclass provides
    match: BleDeviceMatch
    characteristic: str

    def _decode(self, data: bytes, arrival_t: float) -> list[Event]:
        raise NotImplementedError

    def _new_connection(self) -> None:
        """Called before subscribing on every connection (reset per-link state)."""

    # -- the loop
    async def run(self, sink: EvidenceSink) -> None:
        cfg = self.cfg
        delays = backoff_delays(cfg.reconnect_initial_s, cfg.reconnect_max_s)
        while True:
            self._connected_at: float | None = None
            try:
                await self._attempt(sink)
            except LINK_ERRORS as exc:
                self._failed(f"{type(exc).__name__}: {exc}", connecting=self._connected_at is None)
            if self._connected_at and time.monotonic() - self._connected_at > STABLE_AFTER_S:
                delays = backoff_delays(cfg.reconnect_initial_s, cfg.reconnect_max_s)
            await asyncio.sleep(next(delays))

    async def _attempt(self, sink: EvidenceSink) -> None:
        """Find, connect, stream until the link drops; link errors propagate to `run`."""
        cfg, extra = self.cfg, self.status.extra
        sighting = await self.scanner.connected(self.match, cfg.adapter)
        if sighting is not None:
            log.info("%s: adopting the existing link to %s", self.name, sighting.device.address)
        else:
            try:
                sighting = await self.scanner.find(self.match, cfg.adapter, cfg.scan_timeout_s)
            except TimeoutError:
                wanted = self.match.describe()
                seen = f"no device matching {wanted} seen in {cfg.scan_timeout_s:g} s"
                self._failed(seen, connecting=True, level=logging.INFO)
                return
        address = sighting.device.address
        extra.update(address=address, device_name=sighting.name, rssi=sighting.adv.rssi)
        client, lost = await self._connect(sighting)
        self._connected_at = time.monotonic()
        try:
            await self._session(client, sighting.device, sink, lost)
        finally:
            extra["connected"] = False
            await asyncio.shield(_disconnect(client))
        self._failed(f"link to {address} lost", connecting=False)

    def _failed(self, message: str, connecting: bool, level: int = logging.WARNING) -> None:
        extra = self.status.extra
        if connecting:
            extra["connect_failures"] = int(extra["connect_failures"]) + 1
        extra["last_error"] = message
        log.log(level, "%s: %s", self.name, message)

    async def _connect(self, sighting: Sighting) -> tuple[BleakClient, asyncio.Event]:
        """A connected client and the event its link loss will set."""
        lost = asyncio.Event()
        limit = self.cfg.connect_timeout_s
        async with self.scanner.connect_lock(self.cfg.adapter):
            try:
                # establish_connection gives each attempt bleak's own 20 s: bound the total
                async with asyncio.timeout(limit):
                    client = await establish_connection(
                        BleakClient,
                        sighting.device,
                        f"{self.name} ({sighting.device.address})",
                        disconnected_callback=lambda _client: lost.set(),
                        max_attempts=self.cfg.connect_attempts,
                    )
            except TimeoutError as exc:
                raise BleakError(f"connect did not finish in {limit:g} s") from exc
        # bleak also calls back for the drops it retried inside the connect
        lost.clear()
        if not client.is_connected:
            lost.set()
        return client, lost

    async def _session(
        self, client: BleakClient, device: BLEDevice, sink: EvidenceSink, lost: asyncio.Event
    ) -> None:
        extra = self.status.extra
        self._new_connection()
        await client.start_notify(
            self.characteristic, lambda _char, data: self._on_notify(sink, data)
        )
        extra["connected"] = True
        extra["connects"] = int(extra["connects"]) + 1
        if int(extra["connects"]) > 1:
            extra["reconnects"] = int(extra["reconnects"]) + 1
        log.info("%s: connected to %s", self.name, device.address)
        battery = None
        if self.cfg.battery_interval_s > 0:
            battery = asyncio.create_task(self._battery_loop(client, device))
        try:
            await lost.wait()
        finally:
            if battery is not None:
                battery.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await battery

    def _on_notify(self, sink: EvidenceSink, data: bytearray) -> None:
        """A notification, on the event loop: timestamp, decode, emit; never raise."""
        arrival = time.time()
        extra = self.status.extra
        extra["packets"] = int(extra["packets"]) + 1
        try:
            events = self._decode(bytes(data), arrival)
        except GattParseError as exc:
            self.status.rejected += 1
            extra["rejects"] = self.status.rejected
            extra["last_reject"] = str(exc)
            if _is_power_of_ten(self.status.rejected):  # 1, 10, 100...: visible, not a flood
                log.warning(
                    "%s: dropped a malformed packet (%d so far): %s",
                    self.name,
                    self.status.rejected,
                    exc,
                )
            return
        for event in events:
            sink.put(event)
            self.status.mark()

    async def _battery_loop(self, client: BleakClient, device: BLEDevice) -> None:
        while True:
            level = await read_battery(client, device)
            if level is not None:
                self.status.extra["battery_pct"] = level
            await asyncio.sleep(self.cfg.battery_interval_s)


class BleHeartSource(_BleSource):
    """Heart Rate Measurement notifications (0x2A37) as `HeartEvent`s, dated on arrival."""

    name = "heart"
    characteristic = HEART_RATE_MEASUREMENT

    def __init__(self, cfg: HeartSourceConfig, scanner: BleScanner, name: str | None = None):
        super().__init__(cfg, scanner, name)
        self.match = cfg.match
        self.status.extra["no_reading"] = 0

    def _decode(self, data: bytes, arrival_t: float) -> list[Event]:
        m = parse_heart_rate(data)
        if m.hr_bpm == 0:  # the strap has no reading yet (or lost the skin): nothing to say
            self.status.extra["no_reading"] = int(self.status.extra["no_reading"]) + 1
            return []
        return [HeartEvent(arrival_t, m.hr_bpm, m.rr_ms, m.contact, m.energy_kj, self.name)]


class BleEdaSource(_BleSource):
    """A custom EDA characteristic decoded per configuration into `EdaEvent`s."""

    name = "eda"

    def __init__(self, cfg: EdaSourceConfig, scanner: BleScanner, name: str | None = None):
        super().__init__(cfg, scanner, name)
        self.match = cfg.device_match
        self.characteristic = cfg.decoder.characteristic_uuid
        self.decoder = EdaDecoder(cfg.decoder)
        self.status.extra.update(missing_packets=0, out_of_range=0)

    def _new_connection(self) -> None:
        self.decoder.reset()  # counters and device clock may have restarted with the link

    def _decode(self, data: bytes, arrival_t: float) -> list[Event]:
        packet = self.decoder.decode(data, arrival_t)
        extra = self.status.extra
        extra["missing_packets"] = int(extra["missing_packets"]) + packet.missing
        extra["out_of_range"] = int(extra["out_of_range"]) + packet.invalid
        return [EdaEvent(t, samples, packet.rate_hz, self.name) for t, samples in packet.runs()]


async def read_battery(client: BleakClient, device: BLEDevice) -> int | None:
    """Battery percentage from 0x2A19, or from BlueZ when BlueZ keeps that to itself.

    BlueZ's battery plugin claims the Battery Service and hides it from GATT clients; it
    publishes the level as org.bluez.Battery1.Percentage on the device object instead.
    """
    try:
        char: BleakGATTCharacteristic | None = client.services.get_characteristic(BATTERY_LEVEL)
        if char is not None:
            data = await client.read_gatt_char(char)
            return data[0] if len(data) >= 1 and data[0] <= 100 else None
        path = device.details.get("path") if isinstance(device.details, dict) else None
        return None if path is None else await _bluez_battery(path)
    except Exception as exc:  # informational only: never worth breaking a working link
        log.debug("battery read failed: %s", exc)
        return None


async def _bluez_battery(device_path: str) -> int | None:
    from dbus_fast import BusType, Message, MessageType  # Linux only, like BlueZ
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path=device_path,
                interface="org.freedesktop.DBus.Properties",
                member="Get",
                signature="ss",
                body=["org.bluez.Battery1", "Percentage"],
            )
        )
    finally:
        bus.disconnect()
    if reply is None or reply.message_type != MessageType.METHOD_RETURN:
        return None
    return int(reply.body[0].value)


async def _disconnect(client: BleakClient) -> None:
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await client.disconnect()
    except (*LINK_ERRORS, AssertionError) as exc:
        log.debug("disconnect failed: %s", exc)


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


async def scan(
    seconds: float = 10.0,
    adapter: str | None = None,
    eda_configs: Sequence[EdaSourceConfig] = (),
    include_all: bool = False,
) -> list[dict[str, object]]:
    """Devices nearby, for `emotion-agent scan`: heart-rate straps (advertising 0x180D) and
    devices that a configured EDA source would use, strongest signal first."""
    sightings = await BleScanner().collect(seconds, adapter)
    rows: list[dict[str, object]] = []
    for s in sightings:
        uuids = sorted({u.lower() for u in s.adv.service_uuids})
        kinds = ["heart"] if HEART_RATE_SERVICE in uuids else []
        if any(_matches(cfg.device_match, s) for cfg in eda_configs):
            kinds.append("eda")
        if kinds or include_all:
            rows.append(
                {
                    "address": s.device.address,
                    "name": s.name,
                    "rssi": s.adv.rssi,
                    "kinds": kinds,
                    "service_uuids": uuids,
                }
            )
    rows.sort(key=lambda row: -int(row["rssi"]))  # type: ignore[call-overload]
    return rows
