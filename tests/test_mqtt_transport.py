"""The publisher's transport against real Mosquitto brokers: MQTT 3.1.1 and 5, user name and
password, mutual TLS with an encrypted client key, and the last will.

The publisher runs in-process (`asyncio.run` in plain test functions); every broker is a
private `mosquitto` on free ports, configured from a file in the test's tmp_path. Tests
that need a broker feature also give it a second, plain anonymous listener, so the test's
subscriber needs neither credentials nor certificates.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.publish.mqtt import MqttPublisher
from agent.publish.outbox import Outbox
from tests.conftest import MOSQUITTO, Subscriber, availability_state, free_port

PREFIX = "emotion-agent/t"
STATE = f"{PREFIX}/state"
AVAILABILITY = f"{PREFIX}/availability"
KEY_PASS = "s3cret-key-pass"


def need(binary: str) -> str:
    path = shutil.which(binary) or (MOSQUITTO if binary == "mosquitto" else None)
    if not path or not os.path.exists(path):
        pytest.skip(f"the {binary} binary is not installed")
    return path


# -- brokers ----------------------------------------------------------------------------


class Mosquitto:
    """A mosquitto process started from `conf`; its log goes to `log` for failure messages."""

    def __init__(self, workdir: Path, conf: str, ports: list[int]) -> None:
        self.workdir = workdir
        self.ports = ports
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # as root mosquitto drops to the `mosquitto` user, which cannot read a 0700 tmp_path
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(user + "log_dest stderr\nlog_type all\n" + conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [need("mosquitto"), "-c", str(self.conf)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10
        waiting = list(self.ports)
        while waiting and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited:\n{self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2).close()
                waiting.pop(0)
            except OSError:
                time.sleep(0.05)
        if waiting:
            raise RuntimeError(f"mosquitto did not listen on {waiting}:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[[str, list[int]], Mosquitto]]:
    need("mosquitto")
    started: list[Mosquitto] = []

    def make(conf: str, ports: list[int]) -> Mosquitto:
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        broker = Mosquitto(workdir, conf, ports)
        started.append(broker)
        broker.start()
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture
def subscribers() -> Iterator[Callable[[int], Subscriber]]:
    made: list[Subscriber] = []

    def make(port: int, client_id: str = "transport-sub") -> Subscriber:
        sub = Subscriber(port, f"{PREFIX}/#", client_id)
        made.append(sub)
        # the subscription is made in on_connect: probe until it is in place, so that
        # nothing the publisher sends afterwards can be missed
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sub.client.publish(f"{PREFIX}/probe", b"probe", qos=1)
            if sub.wait_for(lambda m: any(t == f"{PREFIX}/probe" for t, _, _ in m), 0.3):
                return sub
        raise RuntimeError("the test subscriber did not get its subscription")

    yield make
    for sub in made:
        sub.close()


# -- the publisher ----------------------------------------------------------------------


def config(tmp_path: Path, broker: str, **mqtt: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "device": {"name": "t", "state_dir": str(tmp_path)},
            "mqtt": {
                "broker": broker,
                "client_id": "transport-test",
                "reconnect": {"initial_s": 0.2, "max_s": 1},
                **mqtt,
            },
        }
    )


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def deliver(cfg: AgentConfig, outbox: Outbox, n: int = 5) -> tuple[MqttPublisher, list[int]]:
    """Connect, put `n` states, wait until the outbox is empty, stop cleanly."""
    pub = MqttPublisher(cfg, outbox)
    task = asyncio.create_task(pub.run())
    try:
        assert await pub.wait_connected(10), pub.stats.last_error
        assert pub.prefix == PREFIX
        seqs = [outbox.put(f"{pub.prefix}/state", {"i": i}) for i in range(n)]
        assert await until(lambda: outbox.depth() == 0), pub.stats
        assert pub.stats.published == n
    finally:
        pub.stop(2)
        await asyncio.wait_for(task, 10)
    return pub, seqs


async def never_connects(cfg: AgentConfig, outbox: Outbox, attempts: int = 2) -> MqttPublisher:
    """Run against a broker that refuses us: it keeps retrying, loses nothing, stops cleanly."""
    pub = MqttPublisher(cfg, outbox)
    outbox.put(STATE, {"i": 0})
    outbox.put(STATE, {"i": 1})
    task = asyncio.create_task(pub.run())
    try:
        assert await until(lambda: sum(pub.stats.errors.values()) >= attempts, 30), pub.stats
        assert not task.done()  # still retrying, not crashed
        assert pub.stats.connects == 0
        assert not pub.stats.connected
        assert pub.stats.last_error
        assert outbox.depth() == 2
    finally:
        pub.stop(2)
        await asyncio.wait_for(task, 15)
    assert task.exception() is None
    assert outbox.depth() == 2  # nothing lost: the messages wait for a broker that lets us in
    assert [m.seq for m in outbox.pending(10)] == [1, 2]
    return pub


Messages = list[tuple[str, bytes, bool]]


def states(messages: Messages) -> list[dict]:
    return [json.loads(p) for t, p, _ in messages if t == STATE]


def availability(messages: Messages) -> list[tuple[bytes, bool]]:
    return [(availability_state(p), r) for t, p, r in messages if t == AVAILABILITY]


def states_of(messages: Messages) -> Messages:
    """Availability messages with their JSON reduced to the state word."""
    return [(t, availability_state(p), r) for t, p, r in messages if t == AVAILABILITY]


def received(sub: Subscriber) -> Messages:
    with sub.lock:
        return list(sub.messages)


def assert_delivered(sub: Subscriber, seqs: list[int]) -> None:
    assert sub.wait_for(lambda m: len(states(m)) >= len(seqs), 10), sub.messages
    got = states(received(sub))
    assert [s["seq"] for s in got] == seqs
    assert [s["i"] for s in got] == list(range(len(seqs)))
    assert sub.wait_for(lambda m: availability(m)[-1:] == [(b"offline", False)], 10)
    assert (b"online", False) in availability(received(sub))


# -- 1. protocol versions ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_protocol_version_delivers_in_order_with_retained_online(
    protocol: str, tmp_path: Path, mosquitto_factory, subscribers
) -> None:
    port = free_port()
    mosquitto_factory(f"listener {port} 127.0.0.1\nallow_anonymous true\n", [port])
    sub = subscribers(port)
    cfg = config(tmp_path, f"mqtt://127.0.0.1:{port}", protocol=protocol)
    outbox = Outbox(tmp_path / "o.sqlite3")

    async def main() -> None:
        pub = MqttPublisher(cfg, outbox)
        task = asyncio.create_task(pub.run())
        try:
            assert await pub.wait_connected(10), pub.stats.last_error
            seqs = [outbox.put(STATE, {"i": i}) for i in range(5)]
            assert await until(lambda: outbox.depth() == 0), pub.stats
            assert seqs == [1, 2, 3, 4, 5]
            # a subscriber arriving now is told by the retained message that we are online
            late = await asyncio.to_thread(subscribers, port, "late-sub")
            assert await asyncio.to_thread(
                late.wait_for, lambda m: (AVAILABILITY, b"online", True) in states_of(m), 10
            )
        finally:
            pub.stop(2)
            await asyncio.wait_for(task, 10)
        assert pub.stats.connects == 1 and pub.stats.published == 5
        assert task.exception() is None

    asyncio.run(main())
    assert_delivered(sub, [1, 2, 3, 4, 5])
    assert outbox.depth() == 0


# -- 2. user name and password ----------------------------------------------------------


@pytest.fixture
def password_broker(tmp_path: Path, mosquitto_factory) -> tuple[int, int]:
    """(authenticated port, plain port for the test's subscriber): user `agent`/`right-pw`."""
    passwd = need("mosquitto_passwd")
    pwfile = tmp_path / "passwd"
    subprocess.run([passwd, "-b", "-c", str(pwfile), "agent", "right-pw"], check=True)
    auth, plain = free_port(), free_port()
    mosquitto_factory(
        "per_listener_settings true\n"
        f"listener {auth} 127.0.0.1\nallow_anonymous false\npassword_file {pwfile}\n"
        f"listener {plain} 127.0.0.1\nallow_anonymous true\n",
        [auth, plain],
    )
    return auth, plain


@pytest.mark.parametrize("form", ["env", "file"])
def test_right_password_from_a_secret_connects_and_delivers(
    form: str, tmp_path: Path, password_broker, subscribers, monkeypatch
) -> None:
    auth, plain = password_broker
    if form == "env":
        monkeypatch.setenv("TRANSPORT_TEST_PW", "right-pw")
        secret: dict[str, str] = {"env": "TRANSPORT_TEST_PW"}
    else:
        (tmp_path / "pw.txt").write_text("right-pw\n")  # the trailing newline is dropped
        secret = {"file": str(tmp_path / "pw.txt")}
    sub = subscribers(plain)
    cfg = config(tmp_path, f"mqtt://127.0.0.1:{auth}", username="agent", password=secret)
    outbox = Outbox(tmp_path / "o.sqlite3")
    pub, seqs = asyncio.run(deliver(cfg, outbox))
    assert pub.stats.connects == 1
    assert_delivered(sub, seqs)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_wrong_password_never_connects_keeps_retrying_loses_nothing(
    protocol: str, tmp_path: Path, password_broker, subscribers, monkeypatch
) -> None:
    auth, plain = password_broker
    sub = subscribers(plain)
    monkeypatch.setenv("TRANSPORT_TEST_PW", "wrong-pw")
    cfg = config(
        tmp_path,
        f"mqtt://127.0.0.1:{auth}",
        protocol=protocol,
        username="agent",
        password={"env": "TRANSPORT_TEST_PW"},
    )
    outbox = Outbox(tmp_path / "o.sqlite3")
    pub = asyncio.run(never_connects(cfg, outbox, attempts=3))
    assert "MqttConnectError" in pub.stats.errors, pub.stats
    assert "authori" in pub.stats.last_error.lower(), pub.stats.last_error
    time.sleep(0.2)
    assert states(received(sub)) == [] and availability(received(sub)) == []

    # the same outbox drains once the password is right: the backlog was kept for this
    monkeypatch.setenv("TRANSPORT_TEST_PW", "right-pw")

    async def main() -> None:
        pub = MqttPublisher(cfg, outbox)
        task = asyncio.create_task(pub.run())
        try:
            assert await pub.wait_connected(10), pub.stats.last_error
            assert await until(lambda: outbox.depth() == 0)
        finally:
            pub.stop(2)
            await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert_delivered(sub, [1, 2])


def test_password_in_the_broker_url(tmp_path: Path, password_broker, subscribers) -> None:
    auth, plain = password_broker
    sub = subscribers(plain)
    cfg = config(tmp_path, f"mqtt://agent:right-pw@127.0.0.1:{auth}")
    pub, seqs = asyncio.run(deliver(cfg, Outbox(tmp_path / "o.sqlite3"), n=2))
    assert pub.stats.connects == 1
    assert_delivered(sub, seqs)


# -- 3. TLS -----------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run([need("openssl"), *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"openssl {' '.join(args)}:\n{proc.stderr}"


def _make_ca(d: Path, name: str) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN=transport test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=d,
    )  # fmt: skip


def _sign(d: Path, name: str, key_args: list[str], extensions: str) -> None:
    (d / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + extensions
    )
    _openssl("req", "-new", "-key", f"{name}.key", *key_args, "-subj", f"/CN={name}",
             "-out", f"{name}.csr", cwd=d)  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.crt",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate whose key
    is encrypted with KEY_PASS (all signed by the CA), and an unrelated second CA."""
    need("openssl")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key", cwd=d)
    _sign(
        d,
        "server",
        [],
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-aes-256-cbc", "-pass", f"pass:{KEY_PASS}", "-out", "client.key",
        cwd=d,
    )  # fmt: skip
    assert "ENCRYPTED" in (d / "client.key").read_text()
    _sign(d, "client", ["-passin", f"pass:{KEY_PASS}"], "extendedKeyUsage=clientAuth\n")
    return d


@pytest.fixture
def tls_broker(pki: Path, mosquitto_factory) -> tuple[int, int, Mosquitto]:
    """(mutual-TLS port, plain port for the test's subscriber, the broker)."""
    tls, plain = free_port(), free_port()
    broker = mosquitto_factory(
        "allow_anonymous true\n"
        f"listener {tls} 127.0.0.1\n"
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\n"
        f"listener {plain} 127.0.0.1\n",
        [tls, plain],
    )
    return tls, plain, broker


def test_mutual_tls_with_encrypted_client_key_delivers(
    tmp_path: Path, pki: Path, tls_broker, subscribers, monkeypatch
) -> None:
    tls, plain, _ = tls_broker
    sub = subscribers(plain)
    monkeypatch.setenv("TRANSPORT_TEST_KEY_PW", KEY_PASS)
    cfg = config(
        tmp_path,
        f"mqtts://127.0.0.1:{tls}",
        protocol="5",
        tls={
            "ca_file": str(pki / "ca.crt"),
            "cert_file": str(pki / "client.crt"),
            "key_file": str(pki / "client.key"),
            "key_password": {"env": "TRANSPORT_TEST_KEY_PW"},
        },
    )
    pub, seqs = asyncio.run(deliver(cfg, Outbox(tmp_path / "o.sqlite3")))
    assert pub.stats.connects == 1
    assert_delivered(sub, seqs)


def test_tls_enabled_flag_with_localhost_name(
    tmp_path: Path, pki: Path, tls_broker, subscribers
) -> None:
    """`tls.enabled` on an mqtt:// URL, and the server certificate's DNS name is checked."""
    tls, plain, _ = tls_broker
    sub = subscribers(plain)
    (tmp_path / "keypw").write_text(KEY_PASS)
    cfg = config(
        tmp_path,
        f"mqtt://localhost:{tls}",
        tls={
            "enabled": True,
            "ca_file": str(pki / "ca.crt"),
            "cert_file": str(pki / "client.crt"),
            "key_file": str(pki / "client.key"),
            "key_password": {"file": str(tmp_path / "keypw")},
        },
    )
    _, seqs = asyncio.run(deliver(cfg, Outbox(tmp_path / "o.sqlite3"), n=2))
    assert_delivered(sub, seqs)


def test_tls_without_client_certificate_fails_cleanly(
    tmp_path: Path, pki: Path, tls_broker, subscribers
) -> None:
    """The broker refuses a client without a certificate. Under TLS 1.3 the client's side of
    the handshake completes first and the broker's refusal arrives as the connection closing
    before CONNACK, which aiomqtt reports only when its 10 s connect timeout expires: one
    attempt is waited for, not two."""
    tls, plain, broker = tls_broker
    sub = subscribers(plain)
    cfg = config(tmp_path, f"mqtts://127.0.0.1:{tls}", tls={"ca_file": str(pki / "ca.crt")})
    asyncio.run(never_connects(cfg, Outbox(tmp_path / "o.sqlite3"), attempts=1))
    assert "peer did not return a certificate" in broker.log_text()
    assert states(received(sub)) == [] and availability(received(sub)) == []


def test_tls_with_the_wrong_ca_fails_verification(
    tmp_path: Path, pki: Path, tls_broker, subscribers, monkeypatch
) -> None:
    tls, plain, _ = tls_broker
    sub = subscribers(plain)
    monkeypatch.setenv("TRANSPORT_TEST_KEY_PW", KEY_PASS)
    cfg = config(
        tmp_path,
        f"mqtts://127.0.0.1:{tls}",
        tls={
            "ca_file": str(pki / "other-ca.crt"),
            "cert_file": str(pki / "client.crt"),
            "key_file": str(pki / "client.key"),
            "key_password": {"env": "TRANSPORT_TEST_KEY_PW"},
        },
    )
    pub = asyncio.run(never_connects(cfg, Outbox(tmp_path / "o.sqlite3")))
    assert "certificate verify failed" in pub.stats.last_error, pub.stats.last_error
    assert states(received(sub)) == [] and availability(received(sub)) == []


def test_tls_with_the_wrong_key_passphrase_fails_cleanly(
    tmp_path: Path, pki: Path, tls_broker, subscribers
) -> None:
    tls, plain, _ = tls_broker
    sub = subscribers(plain)
    cfg = config(
        tmp_path,
        f"mqtts://127.0.0.1:{tls}",
        tls={
            "ca_file": str(pki / "ca.crt"),
            "cert_file": str(pki / "client.crt"),
            "key_file": str(pki / "client.key"),
            "key_password": "not-the-passphrase",
        },
    )
    pub = asyncio.run(never_connects(cfg, Outbox(tmp_path / "o.sqlite3")))
    assert "SSL" in pub.stats.last_error, pub.stats.last_error  # "[SSL] PEM lib": bad key
    assert states(received(sub)) == [] and availability(received(sub)) == []


# -- 4. last will -----------------------------------------------------------------------


class CuttableProxy:
    """A TCP forwarder to the broker whose connections the test can abort (RST): to the
    broker this is a client vanishing without DISCONNECT, as in a crash or power loss."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links.append((writer, up_writer))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except OSError:
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for down, up in self.links:
            down.transport.abort()
            up.transport.abort()
        self.links.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_dropped_connection_fires_the_retained_offline_will_then_reconnects(
    protocol: str, tmp_path: Path, mosquitto_factory, subscribers
) -> None:
    port = free_port()
    mosquitto_factory(f"listener {port} 127.0.0.1\nallow_anonymous true\n", [port])
    sub = subscribers(port)
    outbox = Outbox(tmp_path / "o.sqlite3")

    async def main() -> None:
        proxy = CuttableProxy(port)
        await proxy.start()
        cfg = config(tmp_path, f"mqtt://127.0.0.1:{proxy.port}", protocol=protocol)
        pub = MqttPublisher(cfg, outbox)
        task = asyncio.create_task(pub.run())
        try:
            assert await pub.wait_connected(10), pub.stats.last_error
            assert await asyncio.to_thread(
                sub.wait_for, lambda m: availability(m) == [(b"online", False)], 10
            )
            proxy.cut()
            # the broker publishes the will: a retained `offline`
            assert await asyncio.to_thread(
                sub.wait_for, lambda m: availability(m)[-1:] == [(b"offline", False)], 10
            ), availability(received(sub))
            late = await asyncio.to_thread(subscribers, port, "late-sub")
            assert await asyncio.to_thread(
                late.wait_for, lambda m: (AVAILABILITY, b"offline", True) in states_of(m), 10
            )
            # with nothing to publish the publisher still notices and comes back online
            assert await asyncio.to_thread(
                sub.wait_for, lambda m: availability(m)[-1:] == [(b"online", False)], 10
            ), (availability(received(sub)), pub.stats)
            assert await until(lambda: pub.stats.connects == 2 and pub.stats.connected)
            assert pub.stats.disconnects == 1
            outbox.put(STATE, {"i": 0})
            assert await until(lambda: outbox.depth() == 0)
        finally:
            pub.stop(2)
            await asyncio.wait_for(task, 10)
            await proxy.close()

    asyncio.run(main())
    assert sub.wait_for(lambda m: [s["seq"] for s in states(m)] == [1], 10)
