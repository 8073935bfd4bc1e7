"""Shared fixtures: real Mosquitto brokers on free ports, subscribers, agent processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private Mosquitto that a test may stop and start again on the same port."""

    def __init__(self, workdir: Path, extra_conf: str = "") -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        # persistence keeps retained messages and persistent sessions across a restart, as
        # a real deployment does. Started as root, mosquitto drops to the `mosquitto` user,
        # which cannot write in a root-owned private test folder: it then saves nothing and
        # says so only in its log, so a restarted broker forgot every session (a subscriber
        # missed what was published before it reconnected). `user root` keeps it as root.
        stay = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        self.db = workdir / "mosquitto.db"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{stay}"
            f"persistence true\npersistence_location {workdir}/\n{extra_conf}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and retained messages, or the test fails."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
            if "persistence true" in self.conf.read_text() and not self.db.exists():
                raise RuntimeError(f"mosquitto saved no persistence database at {self.db}")

    def kill(self) -> None:
        """SIGKILL: a crash or power cut; only what persistence autosaved survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("the mosquitto binary is not installed (apt install mosquitto)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    """A plain paho subscriber (QoS 1, persistent session) collecting messages in a thread."""

    def __init__(self, port: int, topic: str, client_id: str = "test-sub") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        # the broker must know the subscription before a test publishes or stops it
        if not self.subscribed.wait(10):
            raise RuntimeError(f"subscription to {topic!r} not acknowledged")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber_factory():
    made: list[Subscriber] = []

    def make(port: int, topic: str, client_id: str = "test-sub") -> Subscriber:
        s = Subscriber(port, topic, client_id)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def availability_state(payload: bytes) -> bytes:
    """b"online"/b"offline" out of an availability message (JSON, schema availability)."""
    import json

    return json.loads(payload)["state"].encode()


def agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def mini_fer2013(path: Path, train: int = 0, public: int = 0, seed: int = 0) -> Path:
    """A FER2013 file in ../shared's layout, of random faces, for tests that need one: for
    each split asked for, `x_<split>` (N, 48, 48) uint8, `y_<split>` the classes in turn and
    `ferplus_<split>` random crowd votes (N, 10)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", train), ("public", public)):
        if n:
            arrays[f"x_{split}"] = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
            arrays[f"y_{split}"] = np.arange(n) % 7
            arrays[f"ferplus_{split}"] = rng.integers(0, 6, (n, 10))
    np.savez(path, **arrays)
    return path
