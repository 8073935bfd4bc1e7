"""The agent's `<prefix>/stats` snapshot: counters and rates of every stage, no personal data.

Built from the running Agent's parts (sources, supervisor, face stage, outbox, MQTT
session, privacy gate, baseline); the schema is agent/schemas/stats.json. Source counters
are copied only when they are numbers, so a device's name or address can never leak.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.clock import iso
from agent.pi import cpu_temperature_c, throttling

if TYPE_CHECKING:
    from agent.runtime import Agent


class Telemetry:
    """Snapshots of one agent; event rates are over the time since the previous one."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, int]] | None = None

    def snapshot(self, agent: Agent) -> dict[str, Any]:
        """A snapshot published on `<prefix>/stats` (schema agent/schemas/stats.json)."""
        pub, ob = agent.publisher, agent.outbox
        now = time.monotonic()
        counts = {s.name: s.status.events for s in agent.sources}
        if self._last is not None:
            then, before = self._last
            dt = max(1e-6, now - then)
            fps = {n: (c - before.get(n, 0)) / dt for n, c in counts.items()}
        else:
            dt = max(1e-6, now - agent.started)
            fps = {n: c / dt for n, c in counts.items()}
        self._last = (now, counts)
        sources = {}
        for s in agent.sources:
            task = agent.supervisor.states.get(s.name)
            extra = {
                k: v
                for k, v in s.status.extra.items()
                if isinstance(v, bool | int | float)  # never names or addresses
            }
            sources[s.name] = {
                "fps": round(fps.get(s.name, 0.0), 2),
                "events": s.status.events,
                "rejected": s.status.rejected,
                "dropped": int(extra.get("dropped", 0)),
                "reconnects": int(extra.get("reconnects", 0)),
                "restarts": task.restarts if task else 0,
                "age_s": _r(s.status.age()),
                "state": "finished" if s.status.finished else (task.state if task else "idle"),
                "counters": extra,
            }
        fs = agent.face_stage.stats if agent.face_stage is not None else None
        withheld = dict(agent.privacy.withheld)
        return {
            "v": 1,
            "device": agent.cfg.device.name,
            "ts": iso(time.time()),
            "version": __version__,
            "uptime_s": round(now - agent.started, 1),
            "service": {
                "healthy": agent.health.healthy(),
                "loop_lag_ms": round(agent.lag.max_lag * 1000, 1),
                "mode": agent.mode,
                "consent": agent.privacy.consent,
                "paused": agent.privacy.paused,
            },
            "states": {
                "made": agent.states_made,
                "summaries": agent.summaries_made,
                "withheld": {
                    k: int(withheld.get(k, 0)) for k in ("no_consent", "paused", "too_few_faces")
                },
            },
            "sources": sources,
            "detectors": {
                "faces": None
                if fs is None
                else {
                    "runtime": fs.runtime,
                    "inference_ms": _r(fs.inference_ms),
                    "analysed": fs.analysed,
                    "dropped": fs.dropped,
                    "faces": fs.faces,
                    "errors": fs.errors,
                }
            },
            "outbox": {
                "depth": ob.depth() if ob else 0,
                "dropped": ob.dropped if ob else 0,
                "last_seq": ob.last_seq if ob else 0,
            },
            "mqtt": {
                "connected": pub.stats.connected if pub else False,
                "connects": pub.stats.connects if pub else 0,
                "published": pub.stats.published if pub else 0,
                "commands": dict(agent.commands),
            },
            "baseline": agent.baseline.status(),
            "cpu": {
                "temperature_c": cpu_temperature_c(),
                "throttled": throttling(),
            },
            "tasks": {
                n: {"state": s.state, "failures": s.failures, "restarts": s.restarts}
                for n, s in agent.supervisor.states.items()
            },
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
