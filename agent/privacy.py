"""Privacy gates: consent, personal or audience mode, and pausing.

- **Consent.** Until `privacy.consent: true` nothing but availability leaves the device:
  states and summaries are computed (so a log can say they would exist) and discarded.
- **Audience mode.** Camera only (the config refuses heart and skin sources and vitals).
  A window is published only when at least `min_faces` faces were seen together in one
  frame; payloads carry group-level aggregates only (mean expression, valence, arousal),
  never a per-face value. Without tracking or identities, the largest number of faces seen
  at once is the number of people known to have been present: a crowd of one seen in ten
  frames never passes for ten people.
- **Pause.** Two switches, either one pauses: the local file flag (`privacy.pause_file`,
  default `<state_dir>/paused`; MQTT cannot lift it) and the remote one
  (`<prefix>/set/paused`, kept in `<state_dir>/paused.remote` so a reboot stays paused).
  While paused, evidence is dropped before any analysis (no face inference, no baseline
  update) and nothing is published but availability and the retained pause echo.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from agent.events import Event, EvidenceSink

log = logging.getLogger("agent.privacy")


class PrivacyGate:
    def __init__(
        self,
        consent: bool,
        mode: str,
        min_faces: int,
        pause_file: Path,
        remote_file: Path,
    ) -> None:
        self.consent = consent
        self.mode = mode
        self.min_faces = min_faces
        self.pause_file = pause_file
        self.remote_file = remote_file
        self.withheld: Counter[str] = Counter()
        self.dropped_events = 0
        self._local = self._remote = False
        self.refresh()

    # -- pause ----------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Re-read both flags; True when the paused state changed."""
        before = self.paused
        self._local = self.pause_file.exists()
        self._remote = self.remote_file.exists()
        return self.paused != before

    @property
    def paused(self) -> bool:
        return self._local or self._remote

    def pause_source(self) -> str | None:
        """Who holds the pause: 'local', 'remote', 'local+remote', or None."""
        held = [n for n, on in (("local", self._local), ("remote", self._remote)) if on]
        return "+".join(held) or None

    def set_remote(self, paused: bool) -> bool:
        """The MQTT switch; True when the effective paused state changed."""
        before = self.paused
        if paused:
            self.remote_file.parent.mkdir(parents=True, exist_ok=True)
            self.remote_file.touch()
        else:
            self.remote_file.unlink(missing_ok=True)
        self._remote = paused
        if self._local and not paused:
            log.info("resume asked over MQTT, but the local pause file %s holds", self.pause_file)
        return self.paused != before

    # -- publishing decisions -----------------------------------------------------------
    def withhold_reason(self, evidence: dict[str, Any]) -> str | None:
        """Why a window must not be published, or None when it may be."""
        if not self.consent:
            return "no_consent"
        if self.paused:
            return "paused"
        if self.mode == "audience" and int(evidence.get("faces_max") or 0) < self.min_faces:
            return "too_few_faces"
        return None

    def why(self, reason: str) -> str:
        """A withholding reason in words (logs and the replay report)."""
        return {
            "no_consent": "privacy.consent is false",
            "paused": "paused",
            "too_few_faces": f"fewer than {self.min_faces} faces, audience mode",
        }.get(reason, reason)

    def withhold(self, reason: str) -> None:
        if not self.withheld[reason]:
            log.warning("states withheld: %s (logged once, counted in stats)", self.why(reason))
        self.withheld[reason] += 1


class PauseGate:
    """An `EvidenceSink` in front of the pipeline that drops everything while paused."""

    def __init__(self, inner: EvidenceSink, gate: PrivacyGate) -> None:
        self.inner = inner
        self.gate = gate

    def put(self, event: Event) -> None:
        if self.gate.paused:
            self.gate.dropped_events += 1
            return
        self.inner.put(event)
