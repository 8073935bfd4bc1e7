"""Home Assistant MQTT discovery: one device with six entities, built from the state topic.

Published retained under `<discovery_prefix>/<component>/<node_id>/<object_id>/config` on
every connect and again whenever Home Assistant announces itself (`online` on
`<discovery_prefix>/status`, i.e. after it restarted). Removing = an empty retained config
on the same topics, which is what Home Assistant documents for deleting an entity.

| entity           | component | value                                         |
|------------------|-----------|-----------------------------------------------|
| Valence          | sensor    | `valence` (-1..1)                             |
| Arousal          | sensor    | `arousal` (-1..1)                             |
| Stress           | sensor    | `stress` x 100, %                             |
| Confidence       | sensor    | `confidence` x 100, %                         |
| Emotion          | sensor    | `emotion`, device_class enum with its options |
| Pause            | switch    | `<prefix>/paused`, commands on `<prefix>/set/paused` |

Sensors `expire_after` a few state windows, so a stopped agent reads `unavailable` even if
its `offline` will was lost; a null value (an `insufficient_data` window, or no face for
the Emotion) renders as `None`, which Home Assistant's MQTT sensor turns into `unknown`:
checked on Home Assistant 2025.4.4 (numeric and enum sensors alike, nothing logged). Older
releases did so for numeric sensors only: 2024.3 showed the Emotion enum as the text
`None` (the enum branch learnt `None` in the fix for home-assistant/core#126694, 2024).
Identifiers are built from the configured device name only (no MAC, no machine id).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from agent import __version__

SENSORS: tuple[tuple[str, str, str, str | None, str], ...] = (
    # object_id, name, value template, unit, icon
    ("valence", "Valence", "{{ value_json.valence }}", None, "mdi:emoticon-happy-outline"),
    ("arousal", "Arousal", "{{ value_json.arousal }}", None, "mdi:lightning-bolt-outline"),
    (
        "stress",
        "Stress",
        "{% if value_json.stress is none %}None{% else %}"
        "{{ (value_json.stress * 100) | round(0) }}{% endif %}",
        "%",
        "mdi:head-alert-outline",
    ),
    (
        "confidence",
        "Confidence",
        "{% if value_json.confidence is none %}None{% else %}"
        "{{ (value_json.confidence * 100) | round(0) }}{% endif %}",
        "%",
        "mdi:check-decagram-outline",
    ),
)
OBJECT_IDS: tuple[str, ...] = (*(s[0] for s in SENSORS), "emotion", "paused")


def node_id(device: str) -> str:
    """The discovery node id: `emotion_agent_<device>` in the characters HA allows."""
    return "emotion_agent_" + re.sub(r"[^a-zA-Z0-9_-]", "_", device)


def config_topics(discovery_prefix: str, device: str) -> list[str]:
    node = node_id(device)
    return [
        f"{discovery_prefix}/{'switch' if obj == 'paused' else 'sensor'}/{node}/{obj}/config"
        for obj in OBJECT_IDS
    ]


def discovery_messages(
    discovery_prefix: str,
    device: str,
    prefix: str,
    emotions: Sequence[str],
    expire_after_s: int,
) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for every entity."""
    node = node_id(device)
    availability = {
        "availability": [
            {
                "topic": f"{prefix}/availability",
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "device": {
            "identifiers": [node],
            "name": f"emotion-agent {device}",
            "manufacturer": "emotion-agent",
            "model": "emotion-agent",
            "sw_version": __version__,
        },
        "origin": {"name": "emotion-agent", "sw_version": __version__},
    }
    configs: list[dict[str, Any]] = []
    for obj, name, template, unit, icon in SENSORS:
        cfg: dict[str, Any] = {
            "name": name,
            "object_id": f"{node}_{obj}",
            "unique_id": f"{node}_{obj}",
            "state_topic": f"{prefix}/state",
            "value_template": template,
            "state_class": "measurement",
            "expire_after": expire_after_s,
            "icon": icon,
            **availability,
        }
        if unit is not None:
            cfg["unit_of_measurement"] = unit
        configs.append(cfg)
    configs.append(
        {
            "name": "Emotion",
            "object_id": f"{node}_emotion",
            "unique_id": f"{node}_emotion",
            "state_topic": f"{prefix}/state",
            "value_template": "{{ value_json.emotion }}",
            "device_class": "enum",
            "options": list(emotions),
            "expire_after": expire_after_s,
            "icon": "mdi:emoticon-outline",
            **availability,
        }
    )
    configs.append(
        {
            "name": "Pause",
            "object_id": f"{node}_paused",
            "unique_id": f"{node}_paused",
            "command_topic": f"{prefix}/set/paused",
            "state_topic": f"{prefix}/paused",
            "payload_on": "ON",
            "payload_off": "OFF",
            "icon": "mdi:pause-circle-outline",
            "qos": 1,
            **availability,
        }
    )
    topics = config_topics(discovery_prefix, device)
    return [
        (t, json.dumps(c, separators=(",", ":")).encode())
        for t, c in zip(topics, configs, strict=True)
    ]


def removal_messages(discovery_prefix: str, device: str) -> list[tuple[str, bytes]]:
    """Empty retained configs: Home Assistant deletes the entities."""
    return [(t, b"") for t in config_topics(discovery_prefix, device)]
