"""The agent: one asyncio loop wiring sources -> windows -> outbox -> MQTT.

Start-up order: state directory and outbox, sources, MQTT session (waited for a bounded
time: a broker that is down at boot must not keep the service from starting, the outbox
holds the states), then READY=1. SIGTERM/SIGINT stop the sources, close the open window,
flush the outbox for what remains of `runtime.shutdown_timeout_s`, publish `offline`
and return 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import __version__
from agent.affect.baseline import PersonalBaseline
from agent.affect.summary import SummaryAccumulator
from agent.affect.windows import WindowAggregator
from agent.clock import Clock, ScaledClock, WallClock, iso
from agent.config import AgentConfig
from agent.events import EvidenceSink
from agent.health import Health, LoopLagMonitor, watchdog_loop
from agent.privacy import PauseGate, PrivacyGate
from agent.publish.mqtt import MqttPublisher
from agent.publish.outbox import Outbox
from agent.remote import RemoteControl
from agent.sdnotify import Notifier
from agent.sources.base import Source
from agent.sources.replay import replay_sources, window_closing
from agent.supervisor import Supervisor
from agent.telemetry import Telemetry
from agent.vision.stage import FaceStage, expression_model_path, face_detector_path

log = logging.getLogger("agent.runtime")

CONNECT_WAIT_S = 10.0  # how long start-up waits for the broker before READY=1 regardless


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        notifier: Notifier | None = None,
        on_publish: Callable[[str, dict[str, Any]], None] | None = None,
        stop_at_end: bool = False,
        duration_s: float | None = None,
        extra_sources: list[Source] | None = None,
    ) -> None:
        """`stop_at_end`: a replay ends the run when the session (or `duration_s`) ends.

        `extra_sources` run beside the configured ones (embedding, plugins, fault tests).
        """
        self.cfg = cfg
        self.notifier = notifier or Notifier.from_env()
        self.on_publish = on_publish
        self.stop_at_end = stop_at_end
        self.duration_s = duration_s
        self.prefix = cfg.topic_prefix()
        self.supervisor = Supervisor(cfg.sources.restart.initial_s, cfg.sources.restart.max_s)
        state_dir = Path(cfg.device.state_dir)
        self.mode = cfg.privacy.mode
        self.aggregator = window_aggregator(
            cfg, state_dir / "baseline.json" if cfg.baseline.persist else None
        )
        self.baseline = self.aggregator.baseline
        self.privacy = PrivacyGate(
            cfg.privacy.consent,
            self.mode,
            cfg.privacy.min_faces,
            cfg.pause_file(),
            state_dir / "paused.remote",
        )
        self.summary = SummaryAccumulator()
        self.remote = RemoteControl(cfg, self.prefix, self.privacy, self.baseline, state_dir)
        self.commands = self.remote.commands  # counted there, reported in stats
        self.telemetry = Telemetry()
        self.summaries_made = 0
        self.face_stage: FaceStage | None = None
        self.health = Health()
        self.lag = LoopLagMonitor()
        self.clock: Clock = WallClock()
        self.sources: list[Source] = []
        self._extra_sources = list(extra_sources or [])
        self.until: float | None = None
        self.states_made = 0
        self.started = time.monotonic()
        self._stop = asyncio.Event()
        self.outbox: Outbox | None = None
        self.publisher: MqttPublisher | None = None
        self.final_stats: dict[str, Any] | None = None  # taken at shutdown

    # -- assembly -------------------------------------------------------------------------
    def _build_sources(self) -> None:
        replay = self.cfg.sources.replay
        if replay is None:
            self._build_live_sources()
            if not self.sources and not self._extra_sources:
                log.warning("no sources configured: states will say insufficient_data")
            return
        live = [n for n in ("heart", "eda", "camera") if getattr(self.cfg.sources, n) is not None]
        if live:
            log.warning(
                "sources.replay is set: the live %s source(s) are not used", ", ".join(live)
            )
        from agent.sources.session import load_session

        session = load_session(replay.session)
        origin = time.time() if replay.rebase_time else session.origin
        self.clock = ScaledClock(origin, replay.speed)
        self.sources = replay_sources(session, self.clock)
        length = (
            session.duration_s
            if self.duration_s is None
            else min(self.duration_s, session.duration_s)
        )
        if self.stop_at_end:
            self.until = origin + length
        log.info(
            "replaying %s (%s, %.0f s, %s) at %gx",
            replay.session,
            ", ".join(s.name for s in self.sources) or "no modalities",
            length,
            "synthetic" if session.synthetic else "recorded",
            replay.speed,
        )

    def _build_live_sources(self) -> None:
        src = self.cfg.sources
        if src.heart is not None or src.eda is not None:
            from agent.sources.ble import BleEdaSource, BleHeartSource
            from agent.sources.ble_scan import BleScanner

            scanner = BleScanner()  # one scanner for the agent: BlueZ copes badly with more
            if src.heart is not None:
                self.sources.append(BleHeartSource(src.heart, scanner))
            if src.eda is not None:
                self.sources.append(BleEdaSource(src.eda, scanner))
        if src.camera is not None:
            from agent.sources.camera import camera_source

            self.sources.append(camera_source(src.camera, clock=self.clock, ready=self._faces_idle))

    def _faces_idle(self) -> bool:
        return self.face_stage is None or self.face_stage.idle()

    def _build_face_stage(self) -> FaceStage:
        m = self.cfg.models
        stage = FaceStage(
            self.aggregator,
            face_detector_path(m),
            expression_model_path(m),
            runtime=m.runtime,
            num_threads=m.num_threads,
            min_face_px=m.min_face_px,
            flip_average=m.flip_average,
        )
        log.info("face analysis on %s (%s)", stage.stats.runtime, ", ".join(stage.model_names))
        return stage

    def request_stop(self) -> None:
        self._stop.set()

    # -- main -----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        ob = self.cfg.mqtt.outbox
        self.outbox = Outbox(
            Path(self.cfg.device.state_dir) / "outbox.sqlite3", ob.max_messages, ob.max_age_s
        )
        if self.outbox.depth():
            log.info("outbox holds %d message(s) from before; they go first", self.outbox.depth())
        self._build_sources()
        self.sources += self._extra_sources
        sink: EvidenceSink = self.aggregator
        if any(s.name == "camera" for s in self.sources):
            self.face_stage = self._build_face_stage()  # a bad model fails here, before READY
            sink = self.face_stage
        sink = PauseGate(sink, self.privacy)  # paused: dropped before any analysis
        self.publisher = MqttPublisher(
            self.cfg,
            self.outbox,
            on_message=self.remote.on_message,
            subscriptions=self.remote.subscriptions(),
            on_connect=self.remote.on_connect,
        )
        self.remote.publisher = self.publisher
        if isinstance(self.clock, ScaledClock):
            self.clock.restart()  # a replay starts now, not when the models began loading
        sup = self.supervisor
        try:
            sup.start("mqtt", self.publisher.run)
            sup.start("loop-lag", self.lag.run)
            sup.start("pause-flag", self.remote.watch_pause_file)
            for source in self.sources:
                sup.start(source.name, lambda s=source: s.run(sink))
                self.health.add_source(
                    source.name,
                    source.status,
                    self.cfg.sources.stale_after_s,
                    lambda n=source.name: sup.states[n].in_backoff,
                )
            self.health.add_loop(self.lag, self.cfg.runtime.max_loop_lag_s)
            sup.start("windows", self._windows)
            sup.start("stats", self._stats)

            connected = await self._wait_connected()
            self.notifier.ready(self._status_line(connected))
            log.info("emotion-agent %s ready: %s", __version__, self._status_line(connected))
            sup.start("watchdog", lambda: watchdog_loop(self.notifier, self.health))
            await self._stop.wait()
        finally:
            await self._shutdown()
            for sig in handled:
                loop.remove_signal_handler(sig)
        return 0

    async def _wait_connected(self) -> bool:
        assert self.publisher is not None
        wait = asyncio.create_task(self.publisher.wait_connected())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait(
            {wait, stop}, timeout=CONNECT_WAIT_S, return_when=asyncio.FIRST_COMPLETED
        )
        for t in (wait, stop):
            t.cancel()
        connected = self.publisher.stats.connected
        if not connected:
            log.warning(
                "MQTT broker %s not reachable yet; states are kept in the outbox until it is",
                self.cfg.mqtt.broker,
            )
        return connected

    def _status_line(self, connected: bool) -> str:
        mods = ", ".join(s.name for s in self.sources) or "no sources"
        broker = "MQTT connected" if connected else "MQTT offline, buffering"
        consent = "" if self.cfg.privacy.consent else "; no consent: publishing availability only"
        return f"running: {mods}; {broker}{consent}"

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received: shutting down", sig.name)
        self._stop.set()

    async def _shutdown(self) -> None:
        timeout = self.cfg.runtime.shutdown_timeout_s
        deadline = time.monotonic() + timeout
        self.notifier.stopping("stopping: flushing outbox")
        source_names = [s.name for s in self.sources] + [
            "windows",
            "watchdog",
            "stats",
            "pause-flag",
        ]
        await self.supervisor.stop(source_names, timeout=min(2.0, timeout / 4))
        if self.publisher is not None:
            self.publisher.stop(flush_timeout=max(0.0, deadline - time.monotonic() - 1.0))
            task = self.supervisor.tasks.get("mqtt")
            if task is not None:
                await asyncio.wait({task}, timeout=max(0.1, deadline - time.monotonic()))
        await self.supervisor.stop(None, timeout=1.0)
        if self.face_stage is not None:
            await self.face_stage.close()
        self.baseline.save()
        self.final_stats = self.stats()
        if self.outbox is not None:
            left = self.outbox.depth()
            if left:
                log.warning(
                    "%d message(s) not yet acknowledged stay in %s for the next start",
                    left,
                    self.outbox.path,
                )
            self.outbox.close()
        log.info("stopped")

    # -- stages ---------------------------------------------------------------------------
    async def _windows(self) -> None:
        step = self.cfg.windows.state_s
        per_summary = round(self.cfg.windows.summary_s / step)
        if isinstance(self.clock, ScaledClock):
            start = self.clock.origin  # a replay's windows start with the session
        else:
            start = self.clock.now()
            # align to the wall clock: states at :00, :10, ..., summaries on the minute
            start -= start % self.cfg.windows.summary_s
        period_start, n = start, 0
        while True:
            end = start + step
            if self.until is not None and end > self.until + 1e-6:
                end = self.until
            await self.clock.sleep_until(end)
            states = self.supervisor.states
            running = [
                s for s in self.sources if getattr(states.get(s.name), "state", "") == "running"
            ]
            async with window_closing(running, end) as complete:
                if not complete:
                    log.warning("a replay source is behind the window ending at %s", iso(end))
                last = self.until is not None and end >= self.until - 1e-6
                if end > start:
                    self._close_window(start, end)
                    n += 1
            if n >= per_summary or (last and n):
                self._emit_summary(period_start, end)
                period_start, n = end, 0
            if last:
                log.info("session replayed to its end")
                self._stop.set()
                return
            start = end

    def _close_window(self, start: float, end: float) -> None:
        if self.privacy.paused:
            self.aggregator.discard()  # never analysed: no state, no baseline update
            self.privacy.withhold("paused")
            return
        state = self.aggregator.close(start, end)
        self.states_made += 1
        reason = self.privacy.withhold_reason(state.evidence)
        if reason is not None:
            self.privacy.withhold(reason)
            return
        self.summary.add(state)
        self._publish(
            "state", state.payload(self.cfg.device.name, self.cfg.publish.vitals, self.mode)
        )

    def _emit_summary(self, start: float, end: float) -> None:
        payload = self.summary.close(self.cfg.device.name, self.mode, start, end)
        if payload is not None:
            self.summaries_made += 1
            self._publish("summary", payload)

    def _publish(self, subtopic: str, payload: dict[str, Any]) -> None:
        assert self.outbox is not None
        topic = f"{self.prefix}/{subtopic}"
        seq = self.outbox.put(topic, payload)
        if self.on_publish is not None:
            self.on_publish(topic, {**payload, "seq": seq})

    # -- stats ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A snapshot published on `<prefix>/stats` (schema agent/schemas/stats.json)."""
        return self.telemetry.snapshot(self)

    async def _stats(self) -> None:
        last_status = ""
        while True:
            await asyncio.sleep(self.cfg.publish.stats_interval_s)
            assert self.publisher is not None and self.outbox is not None
            self.outbox.enforce_bounds()
            if self.privacy.consent:  # without consent, nothing but availability
                await self.publisher.publish_now("stats", json.dumps(self.stats()).encode())
            status = self._status_line(self.publisher.stats.connected)
            # with a watchdog, its loop owns STATUS= (the health summary); two writers flap
            if status != last_status and self.notifier.watchdog_interval() is None:
                self.notifier.status(status)
                last_status = status


def window_aggregator(cfg: AgentConfig, baseline_path: Path | None) -> WindowAggregator:
    """The windows, personal baseline and fusion the configuration asks for: the one
    construction the agent and the offline evaluations (agent.bench.stress_eval) share."""
    b = cfg.baseline
    return WindowAggregator(
        **cfg.windows.aggregator_options(),
        baseline=PersonalBaseline(b.calibration_s, b.adapt_half_life_h, baseline_path),
        physiology=cfg.privacy.mode == "personal",
    )


def run_agent(agent: Agent) -> int:
    """Run an agent on a fresh event loop; the process's exit status."""
    os.umask(0o077)  # the outbox and baseline are personal data: owner-only files
    return asyncio.run(agent.run())
