"""Finding BLE devices: the one scanner that the BLE sources share, and `emotion-agent scan`.

One `BleScanner`, owned by the runtime and shared by every BLE source, scans an adapter only
while some source is looking for its device, and hands back a device seen in that scan:
BlueZ forgets devices it has not seen for a while, and a stale `BLEDevice` fails with
"device not found". It also finds a device that BlueZ still holds a link to (a connected
device stops advertising), and holds the per-adapter lock that makes connects take turns.
`scan` lists the devices nearby for the CLI. This module imports bleak: it is imported only
where a BLE source is configured or the scan command runs, never by the config or runtime
at import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from agent.sources.ble_config import HEART_RATE_SERVICE, BleDeviceMatch, EdaSourceConfig

log = logging.getLogger("agent.sources.ble")  # one logger for all the BLE messages

# Failures of the radio, of BlueZ or of the D-Bus link: retried by the link loop. Anything
# else is a bug and goes to the supervisor, which logs it with its traceback.
LINK_ERRORS: tuple[type[BaseException], ...] = (BleakError, TimeoutError, OSError, EOFError)


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
