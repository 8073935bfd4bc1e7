"""Summaries: the state windows of a longer period (default 60 s) reduced to one message.

A summary is made only of states that were themselves publishable (a paused or withheld
window is not summarised), so it never reveals more than the states did. Its JSON Schema
is agent/schemas/summary.json (`emotion-agent schema summary`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agent.affect.windows import PAYLOAD_VERSION, STATUSES, WindowState, window_json
from agent.clock import iso
from agent.events import EXPRESSIONS

MEASURES = ("valence", "arousal", "stress", "confidence")
EVIDENCE = ("frames", "faces", "beats", "heart_notifications", "eda_seconds")


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": round(sum(values) / len(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


@dataclass
class SummaryAccumulator:
    """Collects the states of one summary period; `close()` makes the payload and resets."""

    start: float | None = None
    states: list[WindowState] = field(default_factory=list)

    def add(self, state: WindowState) -> None:
        if self.start is None:
            self.start = state.start
        self.states.append(state)

    def __len__(self) -> int:
        return len(self.states)

    def close(
        self, device: str, mode: str, start: float | None = None, end: float | None = None
    ) -> dict[str, Any] | None:
        """The summary of the period (None when it holds no state); starts a new one.

        `start`/`end` are the period's bounds (default: those of its first and last state).
        """
        states, first = self.states, self.start
        self.states, self.start = [], None
        if not states or first is None:
            return None
        start = first if start is None else start
        end = states[-1].end if end is None else end
        ok = [s.fused for s in states if s.status == "ok" and s.fused is not None]
        emotions = Counter(f.emotion for f in ok if f.emotion is not None)
        labelled = sum(emotions.values())
        evidence: dict[str, float] = {}
        for key in EVIDENCE:
            vals = [s.evidence[key] for s in states if s.evidence.get(key) is not None]
            if vals:
                total = sum(vals)
                evidence[key] = round(float(total), 2) if key == "eda_seconds" else int(total)
        evidence["faces_max"] = max(int(s.evidence.get("faces_max") or 0) for s in states)
        return {
            "v": PAYLOAD_VERSION,
            "device": device,
            "ts": iso(end),
            "window": window_json(start, end),
            "mode": mode,
            "states": {
                "total": len(states),
                **{k: sum(1 for s in states if s.status == k) for k in STATUSES},
            },
            **{m: _stats([v for f in ok if (v := getattr(f, m)) is not None]) for m in MEASURES},
            "emotions": {e: round(emotions[e] / labelled, 3) for e in EXPRESSIONS if emotions[e]},
            "dominant_emotion": emotions.most_common(1)[0][0] if emotions else None,
            "modalities": {
                m: sum(1 for s in states if s.status == "ok" and m in s.modalities)
                for m in ("face", "heart", "eda")
            },
            "evidence": evidence,
        }
