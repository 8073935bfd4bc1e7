"""MQTT publishing: one broker session at a time, reconnecting with capped backoff.

aiomqtt drives paho-mqtt 2.x on the asyncio loop (socket readiness through the loop's
selector, no network thread) and lets a QoS 1 publish be awaited until its PUBACK, which
is exactly what the outbox needs: a message is deleted only after that await returns.

On every connect a retained availability message (`{"v":1,"state":"online",...}`, schema
agent/schemas/availability.json) goes to `<prefix>/availability`; the last will is a
retained `offline` one there, so a crash or power loss reads as offline; a clean shutdown
publishes `offline` itself (a clean DISCONNECT does not fire the will).

Hooks: `on_connect()` runs after `online` on every connect (the runtime re-sends
retained echoes and Home Assistant discovery there); `subscriptions` are (re)subscribed on
every connect and their messages go to `on_message(topic, payload)`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.enums import MQTTProtocolVersion

from agent import __version__
from agent.clock import iso
from agent.config import AgentConfig
from agent.config_mqtt import parse_broker_url, resolve_secret
from agent.publish.outbox import Outbox
from agent.supervisor import backoff_delays

log = logging.getLogger("agent.mqtt")

AVAILABILITY_VERSION = 1


def availability_payload(
    device: str, state: str, reason: str | None = None, ts: str | None = None
) -> bytes:
    """The JSON on `<prefix>/availability` (`value_json.state` is online/offline)."""
    body: dict[str, object] = {"v": AVAILABILITY_VERSION, "state": state, "device": device}
    if ts is not None:
        body["ts"] = ts
    if state == "online":
        body["version"] = __version__
    if reason is not None:
        body["reason"] = reason
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class MqttStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    last_error: str | None = None
    connected_since: float | None = None
    errors: dict[str, int] = field(default_factory=dict)


class MqttPublisher:
    """Drains the outbox to the broker; runs until `stop()`."""

    def __init__(
        self,
        cfg: AgentConfig,
        outbox: Outbox,
        on_message: Callable[[str, bytes], None] | None = None,
        subscriptions: list[str] | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.prefix = cfg.topic_prefix()
        self.availability_topic = f"{self.prefix}/availability"
        self.on_message = on_message
        self.subscriptions = list(subscriptions or [])
        self.on_connect = on_connect
        self.stats = MqttStats()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._flush_deadline = 0.0
        self._client: aiomqtt.Client | None = None
        outbox.on_put(self._wake.set)

    # -- public ---------------------------------------------------------------------------
    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def publish_now(self, subtopic: str, payload: bytes, retain: bool = False) -> bool:
        """Fire-and-forget QoS 0 (stats and other ephemeral topics): False when offline."""
        return await self.publish_direct(f"{self.prefix}/{subtopic}", payload, retain, qos=0)

    async def publish_direct(
        self, topic: str, payload: bytes, retain: bool = False, qos: int = 1
    ) -> bool:
        """Publish now, outside the outbox (retained echoes, discovery): False when offline.

        For messages that are re-sent on every connect anyway, so losing one to an outage
        loses nothing.
        """
        client = self._client
        if client is None or not self.stats.connected:
            return False
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=10)
        except aiomqtt.MqttError:
            return False
        return True

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Ask the session to flush for up to `flush_timeout` s, publish `offline`, disconnect."""
        self._flush_deadline = time.monotonic() + flush_timeout
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        delays = self._new_delays()
        while not self._stopping.is_set():
            connects = self.stats.connects
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self._note_error(exc)
                if self.stats.connected:
                    log.warning("MQTT connection lost: %s", exc)
                else:
                    log.warning("MQTT broker %s unreachable: %s", self.cfg.mqtt.broker, exc)
            finally:
                if self.stats.connected:
                    self.stats.disconnects += 1
                self.stats.connected = False
                self.stats.connected_since = None
                self._connected.clear()
            if self._stopping.is_set():
                break
            if self.stats.connects > connects:  # we did get in: start the backoff afresh
                delays = self._new_delays()
            delay = next(delays)
            log.info(
                "reconnecting to MQTT in %.1fs (%d message(s) waiting)", delay, self.outbox.depth()
            )
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass

    # -- internals ----------------------------------------------------------------------
    def _new_delays(self) -> Iterator[float]:
        r = self.cfg.mqtt.reconnect
        return backoff_delays(r.initial_s, r.max_s)

    def _note_error(self, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        self.stats.last_error = str(exc)

    def client(self) -> aiomqtt.Client:
        """An aiomqtt client built from the configuration (also used by `doctor`)."""
        m = self.cfg.mqtt
        addr = parse_broker_url(m.broker)
        username = m.username or addr.username
        password = resolve_secret(m.password) or addr.password
        tls_params = None
        if addr.tls or m.tls.enabled:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=m.tls.ca_file,
                certfile=m.tls.cert_file,
                keyfile=m.tls.key_file,
                keyfile_password=resolve_secret(m.tls.key_password),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        v5 = m.protocol == "5"
        return aiomqtt.Client(
            addr.host,
            addr.port,
            username=username,
            password=password,
            identifier=self.cfg.client_id(),
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
            will=aiomqtt.Will(
                self.availability_topic,
                availability_payload(self.cfg.device.name, "offline", "connection lost"),
                qos=1,
                retain=True,
            ),
            keepalive=m.keepalive_s,
            timeout=10,
            tls_params=tls_params,
            tls_insecure=m.tls.insecure if tls_params else None,
            max_inflight_messages=m.outbox.inflight,
            logger=logging.getLogger("agent.mqtt.paho"),
        )

    async def _session(self) -> None:
        async with self.client() as client:
            self.stats.connected = True
            self.stats.connects += 1
            self.stats.connected_since = time.monotonic()
            await client.publish(
                self.availability_topic,
                availability_payload(self.cfg.device.name, "online", ts=iso(time.time())),
                qos=1,
                retain=True,
            )
            log.info(
                "MQTT connected to %s as %s; publishing under %s/",
                self.cfg.mqtt.broker,
                self.cfg.client_id(),
                self.prefix,
            )
            for topic in self.subscriptions:
                await client.subscribe(topic, qos=1)
            self._connected.set()
            self._client = client
            if self.on_connect is not None:
                await self.on_connect()
            # The listener ends (with MqttError) when the connection drops, even while the
            # outbox is idle, so a silent disconnect is noticed without waiting for a publish.
            listener = asyncio.create_task(self._listen(client))
            drainer = asyncio.create_task(self._drain(client))
            try:
                await asyncio.wait({listener, drainer}, return_when=asyncio.FIRST_COMPLETED)
                if not drainer.done():
                    drainer.cancel()
                    await asyncio.gather(drainer, return_exceptions=True)
                    exc = listener.exception() if not listener.cancelled() else None
                    raise (
                        exc
                        if isinstance(exc, aiomqtt.MqttError)
                        else aiomqtt.MqttError(f"connection lost ({exc or 'message stream ended'})")
                    )
                drainer.result()  # raises what ended the drain
                # stopping: the backlog was flushed as far as the time allowed
                await client.publish(
                    self.availability_topic,
                    availability_payload(
                        self.cfg.device.name, "offline", "shutdown", iso(time.time())
                    ),
                    qos=1,
                    retain=True,
                    timeout=2,
                )
            finally:
                self._client = None
                for task in (listener, drainer):
                    task.cancel()
                await asyncio.gather(listener, drainer, return_exceptions=True)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if self.on_message is None:
                continue
            payload = message.payload
            data = (
                payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
            )
            try:
                self.on_message(str(message.topic), bytes(data))
            except Exception:  # a bad command must not end the session
                log.exception("MQTT message on %s failed", message.topic)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish the backlog in order, a window of `inflight` at a time, until stopped."""
        window = self.cfg.mqtt.outbox.inflight
        while True:
            self._wake.clear()
            stopping = self._stopping.is_set()
            if stopping and time.monotonic() > self._flush_deadline:
                return
            batch = self.outbox.pending(window)
            if batch:
                # tasks start in creation order, so paho sends them in seq order
                sends = [
                    asyncio.create_task(
                        client.publish(m.topic, m.payload, qos=1, retain=m.retain, timeout=30)
                    )
                    for m in batch
                ]
                results = await asyncio.gather(*sends, return_exceptions=True)
                acked = [m.seq for m, r in zip(batch, results, strict=True) if r is None]
                self.outbox.ack(acked)
                self.stats.published += len(acked)
                failure = next((r for r in results if isinstance(r, BaseException)), None)
                if failure is not None:
                    raise (
                        failure
                        if isinstance(failure, aiomqtt.MqttError)
                        else aiomqtt.MqttError(str(failure))
                    )
                continue
            if stopping:
                return
            await self._wake.wait()
