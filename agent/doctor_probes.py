"""The low-level probes behind the doctor's checks, each answering one question about this machine.

Whether a module imports, who is (or should be) in a group such as video or bluetooth,
whether BlueZ answers on the system D-Bus with a powered adapter, whether the broker
accepts a connection from the agent's own MQTT client (under another client id, so a
running agent is not knocked off), which fix a broker failure calls for, and whether the
kernel's clock is synchronised (adjtimex). agent/doctor_checks.py turns their answers into
results.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import grp
import os
import pwd
from typing import Literal

from agent.config import AgentConfig
from agent.config_mqtt import SecretRef, parse_broker_url

Status = Literal["ok", "warn", "fail", "skip"]
SERVICE_USER = "emotion-agent"


def has_module(name: str) -> bool:
    try:
        __import__(name)
    except Exception:  # picamera2 raises more than ImportError off a Pi
        return False
    return True


def current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def group_problems(group: str) -> list[str]:
    """Who should be in `group` but is not: this user (unless root) and the service user."""
    try:
        g = grp.getgrnam(group)
    except KeyError:
        return [f"no group {group} on this system"]
    out = []
    if os.getuid() != 0 and g.gr_gid not in os.getgroups():
        out.append(f"{current_user()} is not in group {group}")
    try:
        svc = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return out
    if SERVICE_USER not in g.gr_mem and svc.pw_gid != g.gr_gid:
        out.append(f"{SERVICE_USER} is not in group {group}")
    return out


async def bluez_adapter(wanted: str | None) -> tuple[Status, str, str | None]:
    from dbus_fast import BusType, Message, MessageType
    from dbus_fast.aio import MessageBus

    try:
        bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM).connect(), 5)
    except Exception as exc:
        return "fail", f"system D-Bus: {describe(exc)}", "is dbus running? (systemctl status dbus)"
    try:
        reply = await asyncio.wait_for(
            bus.call(
                Message(
                    destination="org.bluez",
                    path="/",
                    interface="org.freedesktop.DBus.ObjectManager",
                    member="GetManagedObjects",
                )
            ),
            5,
        )
    finally:
        bus.disconnect()
    if reply is None or reply.message_type == MessageType.ERROR:
        error = reply.error_name if reply else "no reply"
        if error and "AccessDenied" in error:
            return "fail", f"org.bluez: {error}", f"sudo usermod -aG bluetooth {current_user()}"
        return (
            "fail",
            f"org.bluez: {error}",
            "sudo apt install bluez && sudo systemctl enable --now bluetooth",
        )
    adapters = {
        path.rsplit("/", 1)[-1]: ifaces["org.bluez.Adapter1"]
        for path, ifaces in reply.body[0].items()
        if "org.bluez.Adapter1" in ifaces
    }
    if wanted:
        adapters = {k: v for k, v in adapters.items() if k == wanted}
    if not adapters:
        return (
            "fail",
            f"no Bluetooth adapter{' ' + wanted if wanted else ''} in BlueZ",
            "sudo rfkill unblock bluetooth; check `bluetoothctl list`",
        )
    powered = [name for name, props in adapters.items() if props["Powered"].value]
    if not powered:
        return (
            "fail",
            f"adapter(s) {', '.join(adapters)} not powered",
            "bluetoothctl power on (and AutoEnable=true in /etc/bluetooth/main.conf)",
        )
    return "ok", f"BlueZ adapter {', '.join(powered)} powered", None


async def mqtt_connect(cfg: AgentConfig) -> None:
    """Connect and disconnect with the agent's own client (another client id, so a running
    agent is not knocked off the broker)."""
    from agent.publish.mqtt import MqttPublisher
    from agent.publish.outbox import Outbox

    mqtt = cfg.mqtt.model_copy(update={"client_id": f"{cfg.client_id()}-doctor"[:64]})
    probe = cfg.model_copy(update={"mqtt": mqtt})
    outbox = Outbox(":memory:")
    try:
        client = MqttPublisher(probe, outbox).client()
        async with asyncio.timeout(15):
            async with client:
                pass
    finally:
        outbox.close()


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def broker_fix(exc: BaseException, cfg: AgentConfig) -> tuple[Status, str]:
    text = str(exc).lower()
    addr = parse_broker_url(cfg.mqtt.broker)
    rc = getattr(getattr(exc, "rc", None), "value", getattr(exc, "rc", None))
    if rc in (4, 5, 134, 135) or "not authori" in text or "bad user" in text:
        pw = cfg.mqtt.password
        source = (
            f"the file {os.environ.get('CREDENTIALS_DIRECTORY', '$CREDENTIALS_DIRECTORY')}/"
            f"{pw.credential}"
            if isinstance(pw, SecretRef) and pw.credential
            else "mqtt.password"
        )
        return "fail", (
            f"check mqtt.username and the password ({source}) against the broker's "
            "password file (mosquitto_passwd)"
        )
    if "certificate" in text or "ssl" in text or "tls" in text:
        return "fail", (
            "check mqtt.tls.ca_file (the CA that signed the broker), the broker's "
            "host name, and the clock (a wrong date invalidates certificates)"
        )
    return "fail", (
        f"is a broker listening on {addr.host}:{addr.port}? check mqtt.broker, "
        f"the network and firewall (try: mosquitto_sub -h {addr.host} "
        f"-p {addr.port} -t '$SYS/#' -C 1)"
    )


def adjtimex_state() -> int | None:
    """adjtimex(2)'s clock state (5 = TIME_ERROR: unsynchronised), read-only (modes 0)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    buf = ctypes.create_string_buffer(512)  # >= sizeof(struct timex); modes=0 reads only
    try:
        state = ctypes.CDLL(libc_name, use_errno=True).adjtimex(buf)
    except (OSError, AttributeError):
        return None
    return None if state < 0 else int(state)
