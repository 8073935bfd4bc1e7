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

from agent.config import AgentConfig, parse_broker_url

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


def summary_lines(states: Sequence[Mapping[str, Any]], parts: Sequence[Part]) -> list[str]:
    """The demo's closing summary in words, from the published state payloads.

    A state belongs to the part that holds the middle of its window (session time is
    measured from the first window's start).
    """
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
    origin = _seconds(states[0]["window"]["start"])
    rows = [("part", "acted (face)", "read as (most often)", "stress mean", "states")]
    for part in parts:
        mine = [
            s
            for s in ok
            if part.start_s
            <= (_seconds(s["window"]["start"]) + _seconds(s["window"]["end"])) / 2 - origin
            < part.end_s
        ]
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


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def remove_homeassistant(
    broker: str, discovery_prefix: str = "homeassistant", timeout_s: float = 10.0
) -> int:
    """Publish the empty retained configs that make Home Assistant delete the demo device.

    Returns how many topics were cleared once the broker acknowledged each (QoS 1); raises
    OSError when the broker cannot be reached or does not acknowledge in time.
    """
    import paho.mqtt.client as paho

    from agent.publish.homeassistant import removal_messages

    address = parse_broker_url(broker)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="")
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.scheme == "mqtts":
        client.tls_set()
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        infos = [
            client.publish(topic, payload, qos=1, retain=True)
            for topic, payload in removal_messages(discovery_prefix, DEMO_DEVICE)
        ]
        for info in infos:
            info.wait_for_publish(timeout_s)
            if not info.is_published():
                raise OSError(f"the broker did not acknowledge {len(infos)} removals in time")
    finally:
        client.disconnect()
        client.loop_stop()
    return len(infos)
