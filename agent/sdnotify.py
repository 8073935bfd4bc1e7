"""The systemd notification protocol (sd_notify(3)), without libsystemd.

A Type=notify service tells systemd it is ready, what it is doing and that it is alive by
sending small KEY=VALUE datagrams to the AF_UNIX socket named in $NOTIFY_SOCKET. Outside
systemd (a terminal, the tests, a container) the variable is absent and every call here is
a cheap no-op, so callers never need to check.

Sending must never hurt the agent: the socket is non-blocking (a stalled systemd must not
stall the event loop that also feeds the watchdog) and a failed send is logged once and
counted, never raised. Only a programming error (a malformed field) raises.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# A datagram socket that is never read must not fill the process with inherited fds
# (SOCK_CLOEXEC) nor block a send when systemd is slow to drain it (SOCK_NONBLOCK).
_SOCK_FLAGS = getattr(socket, "SOCK_CLOEXEC", 0) | getattr(socket, "SOCK_NONBLOCK", 0)
_SEND_FLAGS = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)


def _flatten(text: str) -> str:
    """Free text (STATUS=) on one line: an exception message with a newline must not
    become a crash in the watchdog path, nor an injected KEY=VALUE line."""
    return " ".join(text.split())


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET (or `address`).

    Counters: `sent` (datagrams delivered to the socket) and `errors` (failed sends).
    """

    def __init__(self, address: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        if address is None:
            address = self._env.get("NOTIFY_SOCKET") or None
        self.address = address
        self.sent = 0
        self.errors = 0
        self._sock: socket.socket | None = None
        self._warned: set[int | None] = set()
        self._target: bytes | None = None
        if address:
            if address.startswith("@"):
                # Abstract namespace: no file on disk, the name starts with a NUL byte.
                self._target = b"\0" + os.fsencode(address[1:])
            elif address.startswith("/"):
                self._target = os.fsencode(address)
            else:
                # sd_notify also accepts vsock:CID:PORT (VMs); a Pi never gets one. A
                # relative path is rejected by systemd too. Say so loudly: without READY=1
                # systemd will time the start out and the reason would be invisible.
                log.warning("NOTIFY_SOCKET=%r is not supported; notifications disabled", address)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for $NOTIFY_SOCKET (a no-op one when it is unset)."""
        return cls(None, env)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    # -- sending ---------------------------------------------------------------------

    def send(self, **fields: object) -> bool:
        """Send one datagram of KEY=VALUE lines; True if the socket accepted it.

        Fields are validated even when disabled, so a malformed message fails in tests
        rather than only under systemd.
        """
        lines = []
        for key, value in fields.items():
            text = str(value)
            if not key or "=" in key or "\n" in key:
                raise ValueError(f"bad sd_notify field name {key!r}")
            if "\n" in text:
                raise ValueError(f"newline in sd_notify field {key}={text!r}")
            lines.append(f"{key}={text}")
        if not lines:
            raise ValueError("sd_notify message needs at least one field")
        return self.send_raw("\n".join(lines))

    def send_raw(self, message: str) -> bool:
        """Send `message` as is (already KEY=VALUE lines); True if the socket accepted it."""
        if self._target is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | _SOCK_FLAGS)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode("utf-8"), _SEND_FLAGS, self._target)
        except OSError as exc:
            self._failed(exc)
            return False
        self.sent += 1
        return True

    def _failed(self, exc: OSError) -> None:
        # ENOENT/ECONNREFUSED: systemd gone or a stale variable; EAGAIN: its queue is
        # full. Each kind is worth one warning, not one per watchdog tick.
        self.errors += 1
        if exc.errno in self._warned:
            log.debug("sd_notify send failed again: %s", exc)
            return
        self._warned.add(exc.errno)
        name = errno.errorcode.get(exc.errno or 0, "?")
        log.warning("sd_notify to %s failed (%s: %s); not raising", self.address, name, exc)

    # -- the messages ----------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Startup finished (Type=notify services are 'activating' until this)."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=_flatten(status))

    def status(self, text: str) -> bool:
        """Free-form one-line status shown by `systemctl status`."""
        return self.send(STATUS=_flatten(text))

    def watchdog(self) -> bool:
        """Keep-alive ping; must arrive every WatchdogSec= or systemd kills the service."""
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        if status is None:
            return self.send(STOPPING=1)
        return self.send(STOPPING=1, STATUS=_flatten(status))

    def reloading(self, status: str | None = None) -> bool:
        """Configuration reload begun; send `ready()` when done.

        MONOTONIC_USEC is required by Type=notify-reload (systemd >= 253) to tell this
        reload from an older one; time.monotonic() is CLOCK_MONOTONIC on Linux.
        """
        fields: dict[str, object] = {
            "RELOADING": 1,
            "MONOTONIC_USEC": int(time.monotonic() * 1_000_000),
        }
        if status is not None:
            fields["STATUS"] = _flatten(status)
        return self.send(**fields)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (EXTEND_TIMEOUT_USEC), e.g. while a model loads."""
        return self.send(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

    # -- watchdog --------------------------------------------------------------------

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WatchdogSec=), or None if no watchdog is set.

        Same rules as sd_watchdog_enabled(3): $WATCHDOG_USEC must be a positive integer,
        and $WATCHDOG_PID, when present, must be this process (a child that inherited
        the environment must not think it owns the parent's watchdog). Pinging at half
        the period leaves room for one late tick.
        """
        raw = self._env.get("WATCHDOG_USEC")
        if not raw:
            return None
        try:
            usec = int(raw)
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_USEC=%r", raw)
            return None
        if usec <= 0:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                log.warning("ignoring watchdog: malformed WATCHDOG_PID=%r", pid)
                return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self) -> str:
        return f"Notifier({self.address!r}, sent={self.sent}, errors={self.errors})"
