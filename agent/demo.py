"""`emotion-agent demo`: the bundled session through the whole agent, and what it showed.

The demo session (agent/sessions/demo, built by agent/sessions/build_demo.py) is a
composite of a real actor's face and a real person's wrist physiology; its manifest lists
the parts of its timeline under `x-parts` (what the face acted, which phase the body was
in). After the replay the demo prints a summary in words: states made, emotions read,
the stress range, and for each part what was acted against what the agent read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.clock import from_iso
from agent.config import AgentConfig

DEMO_SESSION = Path(__file__).parent / "sessions" / "demo"
DEMO_DEVICE = "demo"
# the rest part of the demo session is 180 s: the baseline forms in its first 120 s
CALIBRATION_S = 120


@dataclass(frozen=True)
class Part:
    name: str
    start_s: float
    end_s: float
    face: tuple[str, ...]  # the expressions the actor performed
    body: str  # where in the physiology recording this part comes from


def demo_config(
    broker: str, speed: float, state_dir: str, homeassistant: bool = False
) -> AgentConfig:
    """The demo's settings: the bundled session, consent given (recorded data), no
    persisted baseline, Home Assistant discovery when asked."""
    return AgentConfig.model_validate(
        {
            "device": {"name": DEMO_DEVICE, "state_dir": state_dir},
            "mqtt": {"broker": broker, "reconnect": {"initial_s": 1, "max_s": 5}},
            "sources": {"replay": {"session": str(DEMO_SESSION), "speed": speed}},
            # recorded, published data of consenting participants: nobody here to ask
            "privacy": {"consent": True},
            "baseline": {"calibration_s": CALIBRATION_S, "persist": False},
            "homeassistant": {"enabled": homeassistant},
            "runtime": {"shutdown_timeout_s": 5},
        }
    )


def session_parts(session: Path = DEMO_SESSION) -> list[Part]:
    """The `x-parts` of a session's manifest (empty when it has none)."""
    manifest = yaml.safe_load((session / "manifest.yaml").read_text(encoding="utf-8"))
    return [
        Part(
            name=str(p["name"]),
            start_s=float(p["from_s"]),
            end_s=float(p["to_s"]),
            face=tuple(str(f) for f in p.get("face", ())),
            body=str(p.get("body", "")),
        )
        for p in (manifest or {}).get("x-parts", []) or []
    ]


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.2f} to {max(values):.2f}" if values else "none"


def window_middle(state: Mapping[str, Any]) -> float:
    """The middle of a state's window, UNIX seconds."""
    w = state["window"]
    return (from_iso(w["start"]).timestamp() + from_iso(w["end"]).timestamp()) / 2


def states_by_part(
    states: Sequence[Mapping[str, Any]], parts: Sequence[Part]
) -> list[list[Mapping[str, Any]]]:
    """The `ok` states of each part: those whose window's middle falls in it, session time
    measured from the first window's start."""
    if not states:
        return [[] for _ in parts]
    origin = from_iso(states[0]["window"]["start"]).timestamp()
    ok = [s for s in states if s.get("status") == "ok"]
    return [
        [s for s in ok if part.start_s <= window_middle(s) - origin < part.end_s] for part in parts
    ]


def summary_lines(states: Sequence[Mapping[str, Any]], parts: Sequence[Part]) -> list[str]:
    """The demo's closing summary in words, from the published state payloads."""
    if not states:
        return ["no state was published"]
    ok = [s for s in states if s.get("status") == "ok"]
    with_face = [s for s in ok if s.get("emotion") is not None and s.get("valence") is not None]
    emotions = Counter(str(s["emotion"]) for s in with_face)
    stress = [float(s["stress"]) for s in ok if s.get("stress") is not None]
    statuses = Counter(str(s.get("status")) for s in states)
    lines = [
        f"{len(states)} states: "
        + ", ".join(f"{n} {status}" for status, n in statuses.most_common()),
        f"{len(with_face)} of {len(ok)} ok states carry an emotion and a valence; emotions "
        "read: " + (", ".join(f"{e} {n}" for e, n in emotions.most_common()) or "none"),
        f"stress ranged {_range(stress)}",
    ]
    if not parts:
        return lines
    rows = [("part", "acted (face)", "read as (most often)", "stress mean", "states")]
    for part, mine in zip(parts, states_by_part(states, parts), strict=True):
        read = Counter(str(s["emotion"]) for s in mine if s.get("emotion") is not None)
        values = [float(s["stress"]) for s in mine if s.get("stress") is not None]
        rows.append(
            (
                f"{part.name} ({part.start_s:.0f}-{part.end_s:.0f} s)",
                ", ".join(part.face) or "-",
                ", ".join(e for e, _ in read.most_common(2)) or "-",
                f"{sum(values) / len(values):.2f}" if values else "-",
                str(len(mine)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return lines


def remove_homeassistant(broker: str, timeout_s: float = 15.0) -> int:
    """Publish the empty retained configs that make Home Assistant delete the demo device,
    through the agent's own MQTT client (credentials, TLS and protocol as the demo would
    use them) under a client id of its own, so a running demo is not knocked off.

    Returns how many topics were cleared, each acknowledged (QoS 1); raises OSError when
    the broker cannot be reached or does not acknowledge in time.
    """
    import asyncio

    import aiomqtt

    from agent.publish.homeassistant import removal_messages
    from agent.publish.mqtt import MqttPublisher
    from agent.publish.outbox import Outbox

    cfg = demo_config(broker, 1.0, "")
    cfg = cfg.model_copy(
        update={"mqtt": cfg.mqtt.model_copy(update={"client_id": f"{cfg.client_id()}-remove"})}
    )
    messages = removal_messages(cfg.homeassistant.discovery_prefix, cfg.device.name)

    async def publish() -> None:
        outbox = Outbox(":memory:")
        try:
            async with asyncio.timeout(timeout_s), MqttPublisher(cfg, outbox).client() as client:
                for topic, payload in messages:
                    await client.publish(topic, payload, qos=1, retain=True)
        finally:
            outbox.close()

    try:
        asyncio.run(publish())
    except (aiomqtt.MqttError, TimeoutError) as exc:
        raise OSError(str(exc) or type(exc).__name__) from exc
    return len(messages)
