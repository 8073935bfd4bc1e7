"""The MQTT contract: which topics carry what, and the JSON Schemas of the payloads.

| topic                                 | payload                 | QoS | retained |
|---------------------------------------|-------------------------|-----|----------|
| `<prefix>/availability`               | availability JSON       | 1   | yes      |
| `<prefix>/state`                      | state JSON, each window | 1   | no       |
| `<prefix>/summary`                    | summary JSON            | 1   | no       |
| `<prefix>/stats`                      | stats JSON              | 0   | no       |
| `<prefix>/paused`                     | `ON` / `OFF`            | 1   | yes      |
| `<prefix>/set/paused`, `/set/baseline`| commands (subscribed)   | 1   | -        |

`<prefix>` is `emotion-agent/<device>` unless `mqtt.topic_prefix` says otherwise, so
`emotion-agent/+/state` follows every device of a fleet through one broker, a bridge or a
cluster (no topic depends on the broker). The schemas ship in `agent/schemas/` and print
with `emotion-agent schema NAME`.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

SCHEMAS: tuple[str, ...] = ("state", "summary", "stats", "availability")


@cache
def _text(name: str) -> str:
    if name not in SCHEMAS:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMAS)}")
    return files("agent").joinpath("schemas", f"{name}.json").read_text(encoding="utf-8")


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one payload kind."""
    return json.loads(_text(name))


def validation_errors(name: str, payload: Any) -> list[str]:
    """Every way `payload` breaks its schema (needs the `jsonschema` package)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        schema(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(payload)
    ]
