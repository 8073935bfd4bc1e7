"""A fake `org.bluez` on a private dbus-daemon, so real bleak runs without a radio.

bleak's BlueZ backend talks D-Bus only (ObjectManager, Adapter1, Device1, GattService1,
GattCharacteristic1), so serving those objects on a private bus, with
DBUS_SYSTEM_BUS_ADDRESS pointed at it, exercises bleak (and bleak-retry-connector) for real:
scan, connect, service discovery, notifications, reads, injected errors, link loss.

The fake answers raw messages (no dbus-fast ServiceInterface classes): it owns the whole
object tree, emits InterfacesAdded/Removed and PropertiesChanged itself, and can reply to a
call late (a connect takes time) or with any error. It runs on its own event loop in a
thread, so the test's loop talks to it over the socket like to bluetoothd; its public
methods are thread-safe and block until the fake has done the thing.

What it copies from BlueZ: object paths `/org/bluez/hciN/dev_AA_BB_..../serviceXXXX/charXXXX`;
an adapter with Roles ["central", ...]; discovery per D-Bus client with merged UUID filters;
advertising devices re-announced (RSSI changes) while a discovery runs, and silent while
connected; GATT objects present only while connected (no bond, no cache); ServicesResolved
after the Connect reply; "InProgress" for a second concurrent connect on one adapter; the
le-connection-abort-by-local error preceded by Connected going true then false.
"""

import asyncio
import contextlib
import os
import random
import select
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

OM = "org.freedesktop.DBus.ObjectManager"
PROPS = "org.freedesktop.DBus.Properties"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
SERVICE = "org.bluez.GattService1"
CHAR = "org.bluez.GattCharacteristic1"
BATTERY = "org.bluez.Battery1"
ABORT_BY_LOCAL = ("org.bluez.Error.Failed", "le-connection-abort-by-local")
BASE_UUID = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: str) -> str:
    return f"0000{short.lower()}{BASE_UUID}"


@dataclass
class FakeCharacteristic:
    uuid: str
    flags: list[str] = field(default_factory=lambda: ["read", "notify"])
    value: bytes = b""
    notifying: bool = False
    path: str = ""


@dataclass
class FakeService:
    uuid: str
    characteristics: list[FakeCharacteristic]
    path: str = ""


@dataclass
class FakeDevice:
    address: str
    name: str | None
    advertised_uuids: list[str]
    services: list[FakeService]
    adapter: str = "hci0"
    rssi: int = -60
    battery_percent: int | None = None  # served as org.bluez.Battery1 while connected
    advertising: bool = True
    connected: bool = False
    connect_calls: int = 0
    connect_errors: list[tuple[str, str]] = field(default_factory=list)
    pending_connect: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return f"/org/bluez/{self.adapter}/dev_{self.address.replace(':', '_')}"

    def characteristic(self, uuid: str) -> FakeCharacteristic:
        uuid = uuid if len(uuid) > 8 else uuid16(uuid)
        return next(c for s in self.services for c in s.characteristics if c.uuid == uuid)


@dataclass
class _Adapter:
    name: str
    sessions: dict[str, list[str]] = field(default_factory=dict)  # D-Bus client -> UUIDs
    advertiser: asyncio.Task[None] | None = None
    connecting: bool = False

    @property
    def path(self) -> str:
        return f"/org/bluez/{self.name}"


class FakeBluez:
    """The fake bluetoothd. Build devices with `add_device`, then drive them."""

    def __init__(self, bus_address: str, adv_interval_s: float = 0.05) -> None:
        self.bus_address = bus_address
        self.adv_interval_s = adv_interval_s
        self.connect_delay_s = 0.05
        self.devices: dict[str, FakeDevice] = {}
        self.in_progress_rejections = 0  # connects refused because another was running
        self.discovery_starts = 0
        self._adapters: dict[str, _Adapter] = {}
        self._objects: dict[str, dict[str, dict[str, Variant]]] = {}
        self._loop = asyncio.new_event_loop()
        # a daemon thread: a wedged fake must never keep pytest from exiting
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-bluez", daemon=True
        )
        self._bus: MessageBus | None = None

    # -- lifecycle and thread plumbing --------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._call(self._connect_bus())
        self.add_adapter("hci0")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, work: Coroutine[Any, Any, Any] | Callable[[], Any]) -> Any:
        async def run() -> Any:
            return await work if asyncio.iscoroutine(work) else work()  # type: ignore[operator]

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    async def _connect_bus(self) -> None:
        self._bus = await MessageBus(bus_address=self.bus_address).connect()
        writer = self._bus._writer
        assert writer is not None
        writer.sock = _PatientSocket(writer.sock)
        await self._bus.request_name("org.bluez")
        self._bus.add_message_handler(self._handle)

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:  # advertisers, connects still pending
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._bus:
            self._bus.disconnect()

    # -- building the world (thread-safe) -------------------------------------------------
    def add_adapter(self, name: str) -> None:
        def add() -> None:
            adapter = self._adapters[name] = _Adapter(name)
            self._add(adapter.path, ADAPTER, {
                "Address": Variant("s", f"00:1A:7D:DA:71:{len(self._adapters):02X}"),
                "Name": Variant("s", "fake"), "Alias": Variant("s", "fake"),
                "Powered": Variant("b", True), "Discovering": Variant("b", False),
                "Discoverable": Variant("b", False), "Pairable": Variant("b", True),
                "Roles": Variant("as", ["central", "peripheral"]), "UUIDs": Variant("as", []),
            })  # fmt: skip

        self._call(add)

    def add_device(self, device: FakeDevice) -> FakeDevice:
        """Register a device; it appears on the bus when a discovery sees it advertise."""
        handle = 0x000A
        for service in device.services:
            service.path = f"{device.path}/service{handle:04x}"
            handle += 1
            for char in service.characteristics:
                char.path = f"{service.path}/char{handle:04x}"
                handle += 2  # a declaration and a value handle each, as on a real GATT server
        self._call(lambda: self.devices.__setitem__(device.address, device))
        return device

    # -- driving devices (thread-safe) ----------------------------------------------------
    def notify(self, address: str, char_uuid: str, *payloads: bytes) -> int:
        """Send notifications; returns how many went out (only while notifying)."""

        def send() -> int:
            char = self.devices[address].characteristic(char_uuid)
            sent = 0
            for payload in payloads:
                char.value = bytes(payload)
                if char.notifying:
                    self._set(char.path, CHAR, Value=Variant("ay", char.value))
                    sent += 1
            return sent

        return self._call(send)

    def is_notifying(self, address: str, char_uuid: str) -> bool:
        return self._call(lambda: self.devices[address].characteristic(char_uuid).notifying)

    def fail_next_connects(self, address: str, count: int, error: tuple[str, str]) -> None:
        self._call(lambda: self.devices[address].connect_errors.extend([error] * count))

    def connect_now(self, address: str) -> None:
        """Connect as a previous client would have: the link is up before the test starts."""

        def connect() -> None:
            device = self.devices[address]
            self._announce(device)
            device.connected = True
            self._set(device.path, DEVICE, Connected=Variant("b", True))
            self._resolve_services(device)

        self._call(connect)

    def discovering(self, adapter: str = "hci0") -> bool:
        return self._call(lambda: self._adapters[adapter].advertiser is not None)

    def drop_link(self, address: str, silent_for_s: float = 0.0) -> None:
        """Link loss (supervision timeout): Connected -> False without anyone asking.

        The device stays silent (not advertising) for `silent_for_s`, like a strap that went
        out of range and came back.
        """

        async def drop() -> None:
            device = self.devices[address]
            self._disconnect(device)
            if silent_for_s > 0:
                device.advertising = False
                self._loop.call_later(silent_for_s, setattr, device, "advertising", True)

        self._call(drop())

    # -- the object tree and its signals --------------------------------------------------
    def _send(self, message: Message) -> asyncio.Future[None]:
        assert self._bus is not None
        return self._bus.send(message)

    def _add(self, path: str, interface: str, props: dict[str, Variant]) -> None:
        self._objects.setdefault(path, {})[interface] = props
        self._send(Message.new_signal("/", OM, "InterfacesAdded", "oa{sa{sv}}",
                                      [path, {interface: props}]))  # fmt: skip

    def _remove(self, path: str, interface: str) -> None:
        if self._objects.get(path, {}).pop(interface, None) is None:
            return
        if not self._objects[path]:
            del self._objects[path]
        self._send(Message.new_signal("/", OM, "InterfacesRemoved", "oas", [path, [interface]]))

    def _set(self, path: str, interface: str, **changed: Variant) -> asyncio.Future[None]:
        self._objects[path][interface].update(changed)
        return self._send(Message.new_signal(path, PROPS, "PropertiesChanged", "sa{sv}as",
                                      [interface, changed, []]))  # fmt: skip

    # -- discovery ------------------------------------------------------------------------
    def _announce(self, device: FakeDevice) -> None:
        """One advertisement: the device object appears, or its RSSI changes."""
        rssi = device.rssi + random.randint(-3, 3)
        if device.path not in self._objects or DEVICE not in self._objects[device.path]:
            props = {
                "Address": Variant("s", device.address),
                "AddressType": Variant("s", "random"),
                "Alias": Variant("s", device.name or device.address.replace(":", "-")),
                "Adapter": Variant("o", f"/org/bluez/{device.adapter}"),
                "Paired": Variant("b", False), "Bonded": Variant("b", False),
                "Trusted": Variant("b", False), "Blocked": Variant("b", False),
                "LegacyPairing": Variant("b", False),
                "Connected": Variant("b", False), "ServicesResolved": Variant("b", False),
                "UUIDs": Variant("as", device.advertised_uuids), "RSSI": Variant("n", rssi),
            }  # fmt: skip
            if device.name is not None:
                props["Name"] = Variant("s", device.name)
            self._add(device.path, DEVICE, props)
        else:
            self._set(device.path, DEVICE, RSSI=Variant("n", rssi))

    async def _advertise(self, adapter: _Adapter) -> None:
        while True:
            filters = list(adapter.sessions.values())
            wanted = None if any(not f for f in filters) else {u for f in filters for u in f}
            for device in list(self.devices.values()):
                if device.adapter != adapter.name or device.connected or not device.advertising:
                    continue
                if wanted is None or wanted & set(device.advertised_uuids):
                    self._announce(device)
            await asyncio.sleep(self.adv_interval_s)

    # -- method calls -----------------------------------------------------------------------
    def _handle(self, msg: Message) -> Message | bool | None:
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if msg.interface == OM and msg.member == "GetManagedObjects":
            under = {p: i for p, i in self._objects.items() if p.startswith(msg.path)}
            return Message.new_method_return(msg, "a{oa{sa{sv}}}", [under])
        interfaces = self._objects.get(msg.path or "")
        if interfaces is None:
            return _error(msg, "org.freedesktop.DBus.Error.UnknownObject", "no such object")
        if msg.interface == PROPS:
            return self._properties(msg, interfaces)
        handler = getattr(self, f"_m_{(msg.interface or '').rsplit('.', 1)[-1]}_{msg.member}", None)
        if handler is None or msg.interface not in interfaces:
            return _error(msg, "org.freedesktop.DBus.Error.UnknownMethod", f"{msg.member}?")
        return handler(msg)

    def _properties(self, msg: Message, interfaces: dict[str, dict[str, Variant]]) -> Message:
        props = interfaces.get(msg.body[0])
        if props is None:
            return _error(msg, "org.freedesktop.DBus.Error.InvalidArgs", "no such interface")
        if msg.member == "GetAll":
            return Message.new_method_return(msg, "a{sv}", [props])
        if msg.member == "Get" and msg.body[1] in props:
            return Message.new_method_return(msg, "v", [props[msg.body[1]]])
        if msg.member == "Set":
            self._set(msg.path or "", msg.body[0], **{msg.body[1]: msg.body[2]})
            return Message.new_method_return(msg)
        return _error(msg, "org.freedesktop.DBus.Error.InvalidArgs", "no such property")

    def _adapter_of(self, msg: Message) -> _Adapter:
        return self._adapters[(msg.path or "").split("/")[3]]

    def _m_Adapter1_SetDiscoveryFilter(self, msg: Message) -> Message:
        uuids = msg.body[0].get("UUIDs")
        self._adapter_of(msg).sessions[msg.sender or ""] = list(uuids.value) if uuids else []
        return Message.new_method_return(msg)

    def _m_Adapter1_StartDiscovery(self, msg: Message) -> Message:
        adapter = self._adapter_of(msg)
        adapter.sessions.setdefault(msg.sender or "", [])
        self.discovery_starts += 1
        if adapter.advertiser is None:
            self._set(adapter.path, ADAPTER, Discovering=Variant("b", True))
            adapter.advertiser = self._loop.create_task(self._advertise(adapter))
        return Message.new_method_return(msg)

    def _m_Adapter1_StopDiscovery(self, msg: Message) -> Message:
        adapter = self._adapter_of(msg)
        if adapter.sessions.pop(msg.sender or "", None) is None:
            return _error(msg, "org.bluez.Error.Failed", "No discovery started")
        if not adapter.sessions and adapter.advertiser is not None:
            adapter.advertiser.cancel()
            adapter.advertiser = None
            self._set(adapter.path, ADAPTER, Discovering=Variant("b", False))
        return Message.new_method_return(msg)

    def _device_of(self, msg: Message) -> FakeDevice:
        return next(d for d in self.devices.values() if d.path == msg.path)

    def _m_Device1_Connect(self, msg: Message) -> bool:
        device = self._device_of(msg)
        device.pending_connect = self._loop.create_task(self._connect(msg, device))
        return True  # replied later, like BlueZ after the link is up

    async def _connect(self, msg: Message, device: FakeDevice) -> None:
        device.connect_calls += 1
        adapter = self._adapters[device.adapter]
        if adapter.connecting:
            self.in_progress_rejections += 1
            self._send(_error(msg, "org.bluez.Error.InProgress", "Operation already in progress"))
            return
        adapter.connecting = True
        try:
            try:
                await asyncio.sleep(self.connect_delay_s)
            except asyncio.CancelledError:  # Disconnect while connecting aborts the attempt
                self._send(_error(msg, "org.bluez.Error.Failed", "Operation aborted"))
                return
            if device.connect_errors:
                name, text = device.connect_errors.pop(0)
                if (name, text) == ABORT_BY_LOCAL:  # BlueZ saw the link come up, then die
                    self._set(device.path, DEVICE, Connected=Variant("b", True))
                    self._set(device.path, DEVICE, Connected=Variant("b", False))
                self._send(_error(msg, name, text))
                return
            if not device.connected:
                device.connected = True
                self._set(device.path, DEVICE, Connected=Variant("b", True))
            self._send(Message.new_method_return(msg))
        finally:
            adapter.connecting = False
        await asyncio.sleep(0.01)
        self._resolve_services(device)

    def _resolve_services(self, device: FakeDevice) -> None:
        if not device.connected:
            return
        for service in device.services:
            self._add(service.path, SERVICE, {
                "UUID": Variant("s", service.uuid), "Primary": Variant("b", True),
                "Device": Variant("o", device.path), "Includes": Variant("ao", []),
            })  # fmt: skip
            for char in service.characteristics:
                self._add(char.path, CHAR, {
                    "UUID": Variant("s", char.uuid), "Service": Variant("o", service.path),
                    "Flags": Variant("as", char.flags), "Value": Variant("ay", char.value),
                    "Notifying": Variant("b", False), "MTU": Variant("q", 247),
                })  # fmt: skip
        # BlueZ lists every service once resolved, GAP and GATT included
        uuids = {uuid16("1800"), uuid16("1801"), *device.advertised_uuids}
        uuids |= {s.uuid for s in device.services}
        self._set(device.path, DEVICE, UUIDs=Variant("as", sorted(uuids)))
        if device.battery_percent is not None:
            self._add(device.path, BATTERY, {"Percentage": Variant("y", device.battery_percent)})
        self._set(device.path, DEVICE, ServicesResolved=Variant("b", True))

    def _disconnect(self, device: FakeDevice) -> None:
        if not device.connected:
            return
        device.connected = False
        self._set(device.path, DEVICE, ServicesResolved=Variant("b", False))
        self._set(device.path, DEVICE, Connected=Variant("b", False))
        for service in device.services:
            for char in service.characteristics:
                char.notifying = False
                self._remove(char.path, CHAR)
            self._remove(service.path, SERVICE)
        self._remove(device.path, BATTERY)

    def _m_Device1_Disconnect(self, msg: Message) -> Message:
        device = self._device_of(msg)
        if device.pending_connect is not None and not device.pending_connect.done():
            device.pending_connect.cancel()
        self._disconnect(device)
        return Message.new_method_return(msg)

    def _char_of(self, msg: Message) -> FakeCharacteristic:
        device = next(d for d in self.devices.values() if (msg.path or "").startswith(d.path))
        return next(c for s in device.services for c in s.characteristics if c.path == msg.path)

    def _m_GattCharacteristic1_ReadValue(self, msg: Message) -> Message:
        return Message.new_method_return(msg, "ay", [self._char_of(msg).value])

    def _m_GattCharacteristic1_WriteValue(self, msg: Message) -> Message:
        self._char_of(msg).value = bytes(msg.body[0])
        return Message.new_method_return(msg)

    def _m_GattCharacteristic1_StartNotify(self, msg: Message) -> Message:
        char = self._char_of(msg)
        char.notifying = True
        self._set(char.path, CHAR, Notifying=Variant("b", True))
        return Message.new_method_return(msg)

    def _m_GattCharacteristic1_StopNotify(self, msg: Message) -> Message:
        char = self._char_of(msg)
        char.notifying = False
        self._set(char.path, CHAR, Notifying=Variant("b", False))
        return Message.new_method_return(msg)


class _PatientSocket:
    """The fake bus's socket, with a full send buffer meaning "later", not "dead".

    dbus-fast's asyncio writer treats EAGAIN from send() as fatal and drops the connection
    (inherited from python-dbus-next, issue #153). bluetoothd uses libdbus, which queues;
    without this a burst of notifications (faster than dbus-daemon reads) would look like
    BlueZ crashing. Reporting 0 bytes sent makes the writer wait until it is writable.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _error(msg: Message, name: str, text: str) -> Message:
    return Message.new_error(msg, name, text)


class PrivateBus:
    """A `dbus-daemon --session` of our own, on a socket in a fresh temporary directory."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fake-bluez-")  # short: socket paths max ~107 bytes
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""

    def start(self) -> None:
        config = os.path.join(self.dir, "bus.conf")
        self._log = open(os.path.join(self.dir, "daemon.log"), "w")
        with open(config, "w") as f:
            f.write(
                "<!DOCTYPE busconfig PUBLIC '-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN'"
                " 'http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd'>\n"
                f"<busconfig><type>session</type><listen>unix:dir={self.dir}</listen>"
                "<auth>EXTERNAL</auth><policy context='default'><allow send_destination='*'/>"
                "<allow receive_sender='*'/><allow own='*'/></policy></busconfig>\n"
            )
        self.proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        self.address = self.proc.stdout.readline().strip() if ready else ""
        if not self.address:
            with open(os.path.join(self.dir, "daemon.log")) as f:
                log = f.read()
            self.stop()
            raise RuntimeError(f"dbus-daemon did not print its address: {log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_fake_bluez(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBluez]:
    """A private bus with a fake bluetoothd on it, set as the system bus; always torn down."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian: apt install dbus-daemon)")
    bus = PrivateBus()
    bus.start()
    try:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        fake = FakeBluez(bus.address)
        fake.start()
        try:
            yield fake
        finally:
            fake.stop()
    finally:
        bus.stop()


@pytest.fixture(name="fake_bluez")
def fake_bluez_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBluez]:
    """The fixture `fake_bluez`: import `fake_bluez_fixture` into a test module to use it."""
    with running_fake_bluez(monkeypatch) as fake:
        yield fake
