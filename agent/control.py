"""Commands that arrive over MQTT on `<prefix>/set/<name>`: parsed here, acted on by the runtime.

A command is small, plain text and idempotent. Anything else is rejected with a reason and
counted; it never raises past `parse_command`'s `CommandError` and never changes state.

- `<prefix>/set/paused`: `ON`/`OFF` (also `true`/`false`, `1`/`0`, `pause`/`resume`),
  case-insensitive: pause or resume analysis and publishing.
- `<prefix>/set/baseline`: `calibrate` or `reset`: forget the personal baseline and
  calibrate it again.

`ON`/`OFF` is what a Home Assistant MQTT switch sends, so the discovery switch needs no
template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_PAYLOAD = 64  # bytes: every valid command is a single short word

_TRUE = frozenset({"on", "true", "1", "pause", "paused", "yes"})
_FALSE = frozenset({"off", "false", "0", "resume", "resumed", "no"})
_BASELINE = frozenset({"calibrate", "reset"})

CommandName = Literal["paused", "baseline"]
COMMANDS: tuple[CommandName, ...] = ("paused", "baseline")


class CommandError(ValueError):
    """A rejected command; `reason` is a short, stable word for the stats counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Command:
    name: CommandName
    value: bool | str  # paused: bool; baseline: "calibrate" | "reset"


def command_subtopic(topic: str, prefix: str) -> str | None:
    """`<prefix>/set/<name>` -> `<name>`; None for a topic that is not one of ours."""
    head = f"{prefix}/set/"
    return topic[len(head) :] if topic.startswith(head) else None


def parse_command(name: str, payload: bytes) -> Command:
    """Parse one command; raises CommandError (with a counted reason) on anything invalid."""
    if name not in COMMANDS:
        raise CommandError("unknown", f"no command {name[:40]!r} (known: {', '.join(COMMANDS)})")
    if len(payload) > MAX_PAYLOAD:
        raise CommandError("too_long", f"{len(payload)} bytes (at most {MAX_PAYLOAD})")
    try:
        word = payload.decode("utf-8").strip().lower()
    except UnicodeDecodeError as exc:
        raise CommandError("not_utf8", str(exc)) from None
    if name == "paused":
        if word in _TRUE:
            return Command("paused", True)
        if word in _FALSE:
            return Command("paused", False)
        raise CommandError("bad_value", f"paused takes ON or OFF, got {word[:20]!r}")
    if word in _BASELINE:
        return Command("baseline", word)
    raise CommandError("bad_value", f"baseline takes calibrate or reset, got {word[:20]!r}")
