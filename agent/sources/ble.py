"""Live Bluetooth LE sources (a heart-rate strap, an EDA sensor) through bleak.

Here live the link loop the BLE sources share and the two sources that decode their
characteristic: `BleHeartSource` (Heart Rate Measurement) and `BleEdaSource` (a configured
EDA characteristic), with the battery read (GATT, or BlueZ over D-Bus). Each source finds
its device through the shared `BleScanner` (`agent.sources.ble_scan`) and runs its own loop:

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

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError
from bleak_retry_connector import establish_connection

from agent.events import EdaEvent, Event, EvidenceSink, HeartEvent
from agent.sources.base import SourceStatus
from agent.sources.ble_config import (
    BleDeviceMatch,
    BleLinkConfig,
    EdaSourceConfig,
    HeartSourceConfig,
)
from agent.sources.ble_scan import LINK_ERRORS, BleScanner, Sighting
from agent.sources.gatt import GattParseError, normalize_uuid, parse_heart_rate
from agent.sources.gatt_eda import EdaDecoder
from agent.supervisor import STABLE_AFTER_S, backoff_delays

log = logging.getLogger("agent.sources.ble")

HEART_RATE_MEASUREMENT = normalize_uuid("2a37")
BATTERY_LEVEL = normalize_uuid("2a19")
DISCONNECT_TIMEOUT_S = 10.0


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
