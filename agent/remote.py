"""What the agent does for the people and programs talking to it over MQTT, not its data.

`RemoteControl` acts on the commands parsed by agent.control (`<prefix>/set/paused`,
`<prefix>/set/baseline`), keeps the retained `<prefix>/paused` switch state in step with
the pause file and the remote pause, and announces (or withdraws) Home Assistant
discovery. It publishes only through the agent's MqttPublisher, directly (not through the
outbox): these messages describe the present and are worthless when replayed later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from agent.affect.baseline import PersonalBaseline
from agent.config import AgentConfig
from agent.control import Command, CommandError, command_subtopic, parse_command
from agent.events import EXPRESSIONS
from agent.privacy import PrivacyGate
from agent.publish import homeassistant as ha
from agent.publish.mqtt import MqttPublisher

log = logging.getLogger("agent.runtime")


class RemoteControl:
    """Commands, the pause switch and Home Assistant discovery of one agent."""

    def __init__(
        self,
        cfg: AgentConfig,
        prefix: str,
        privacy: PrivacyGate,
        baseline: PersonalBaseline,
        state_dir: Path,
    ) -> None:
        self.cfg = cfg
        self.prefix = prefix
        self.privacy = privacy
        self.baseline = baseline
        self.publisher: MqttPublisher | None = None  # set once the agent has one
        self.commands: dict[str, int] = {"accepted": 0, "rejected": 0}
        self._ha_marker = state_dir / "homeassistant.announced"
        self._background: set[asyncio.Task[None]] = set()

    def subscriptions(self) -> list[str]:
        """The topics whose messages `on_message` handles."""
        topics = [f"{self.prefix}/set/#"]
        if self.cfg.homeassistant.enabled:
            topics.append(f"{self.cfg.homeassistant.discovery_prefix}/status")
        return topics

    def on_message(self, topic: str, payload: bytes) -> None:
        ha_cfg = self.cfg.homeassistant
        if ha_cfg.enabled and topic == f"{ha_cfg.discovery_prefix}/status":
            if payload.strip().lower() == b"online":  # Home Assistant (re)started
                self._spawn(self.announce())
            return
        name = command_subtopic(topic, self.prefix)
        if name is None:
            return
        try:
            command = parse_command(name, payload)
        except CommandError as exc:
            self.commands["rejected"] += 1
            key = f"rejected_{exc.reason}"
            self.commands[key] = self.commands.get(key, 0) + 1
            log.warning("MQTT command on %s rejected: %s", topic, exc)
            return
        self.commands["accepted"] += 1
        self._apply(command)

    def _apply(self, command: Command) -> None:
        if command.name == "paused":
            changed = self.privacy.set_remote(bool(command.value))
            log.info(
                "MQTT: %s%s",
                "pause" if command.value else "resume",
                "" if changed else " (no change)",
            )
            self._spawn(self.echo_paused())
        elif command.name == "baseline":
            self.baseline.reset()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a one-off publish from a sync callback; the task is kept until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def echo_paused(self) -> None:
        """The retained `<prefix>/paused` (ON/OFF), the Home Assistant switch's state."""
        if self.publisher is None or not self.privacy.consent:
            return  # without consent, nothing but availability
        await self.publisher.publish_direct(
            f"{self.prefix}/paused", b"ON" if self.privacy.paused else b"OFF", retain=True
        )

    async def watch_pause_file(self) -> None:
        while True:
            if self.privacy.refresh():
                log.info(
                    "pause file %s %s",
                    self.privacy.pause_file,
                    "appeared: paused" if self.privacy.paused else "removed: resumed",
                )
                await self.echo_paused()
            await asyncio.sleep(1.0)

    async def on_connect(self) -> None:
        await self.echo_paused()
        await self.announce()

    async def announce(self) -> None:
        """Home Assistant discovery when enabled (and consented); removal of what we announced."""
        assert self.publisher is not None
        h = self.cfg.homeassistant
        device = self.cfg.device.name
        if h.enabled and self.privacy.consent:
            expire = h.expire_after_s or int(max(30, 3 * self.cfg.windows.state_s))
            messages = ha.discovery_messages(
                h.discovery_prefix, device, self.prefix, EXPRESSIONS, expire
            )
            sent = [await self.publisher.publish_direct(t, m, retain=True) for t, m in messages]
            if all(sent):
                self._ha_marker.write_text(h.discovery_prefix)
        elif self._ha_marker.exists():
            discovery_prefix = self._ha_marker.read_text().strip() or h.discovery_prefix
            removals = ha.removal_messages(discovery_prefix, device)
            sent = [await self.publisher.publish_direct(t, m, retain=True) for t, m in removals]
            if all(sent):
                self._ha_marker.unlink(missing_ok=True)
                log.info("Home Assistant discovery removed")
