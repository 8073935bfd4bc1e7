"""The wearer's personal baseline: what "usual" is for each physiological signal.

People differ far more from each other than one person differs between calm and stress
(a resting heart rate of 55 or 85 bpm are both normal), so physiology is judged against the
wearer's own values, never population norms.

Calibration: every window's value of a signal is collected until `calibration_s` seconds
of that signal have been seen (and at least 3 windows); the baseline is then their mean and
standard deviation. Spreads are floored (5 bpm, 10 ms RMSSD, 0.5 µS, 2 responses/min) so a
very steady calibration does not turn noise into alarm.

Adaptation: afterwards the mean and variance follow the wearer slowly, as exponentially
weighted moments with a half-life of `adapt_half_life_h` hours of signal, and only from
windows within 2 spreads of the baseline, so a stressful afternoon is not learnt as normal.

Persistence: the baseline is a small JSON file in the state directory (owner-only, written
atomically), reloaded at start, so a restart does not recalibrate. `reset()` forgets it and
calibration starts again (the `<prefix>/set/baseline` command, or deleting the file).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("agent.baseline")

FORMAT = "emotion-agent-baseline"
VERSION = 1
FLOORS: dict[str, float] = {"hr_bpm": 5.0, "rmssd_ms": 10.0, "scl_us": 0.5, "scr_per_min": 2.0}
SIGNS: dict[str, float] = {"hr_bpm": 1.0, "rmssd_ms": -1.0, "scl_us": 1.0, "scr_per_min": 1.0}
# Signals whose change is also given as a log ratio to the baseline mean (`<key>_log`):
# skin conductance differs tenfold between people and devices and responds in
# proportion to its level, so a relative change means the same on everyone, and it does
# not depend on the calibration's spread (which a drifting electrode inflates).
LOG_RATIO = ("scl_us",)
MIN_WINDOWS = 3
ADAPT_MAX_Z = 2.0


@dataclass
class SignalBaseline:
    """One signal: its calibration samples, then its (adapting) mean and variance."""

    seconds: float = 0.0
    samples: list[float] = field(default_factory=list)
    mean: float | None = None
    var: float | None = None

    @property
    def ready(self) -> bool:
        return self.mean is not None

    def spread(self, floor: float) -> float:
        return max(math.sqrt(self.var or 0.0), floor)


class PersonalBaseline:
    """Per-signal baselines with calibration, slow adaptation, persistence and reset."""

    def __init__(
        self,
        calibration_s: float = 180.0,
        adapt_half_life_h: float | None = 24.0,
        path: str | os.PathLike[str] | None = None,
        save_every_s: float = 300.0,
    ) -> None:
        self.calibration_s = calibration_s
        self.adapt_half_life_s = None if adapt_half_life_h is None else adapt_half_life_h * 3600
        self.path = None if path is None else Path(path)
        self.save_every_s = save_every_s
        self.signals: dict[str, SignalBaseline] = {}
        self.updated: float | None = None  # UNIX time of the last window folded in
        self.resets = 0
        self._dirty = False
        self._saved_at = 0.0
        if self.path is not None:
            self._load()

    # -- state ----------------------------------------------------------------------------
    def status(self, keys: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
        """{"state": none|calibrating|ready, "progress": 0..1} over `keys` (default: all seen)."""
        keys = list(self.signals) if keys is None else [k for k in keys if k in self.signals]
        if not keys:
            return {"state": "none", "progress": 0.0}
        if all(self.signals[k].ready for k in keys):
            return {"state": "ready", "progress": 1.0}
        progress = min(
            1.0 if self.signals[k].ready else self._progress(self.signals[k]) for k in keys
        )
        return {"state": "calibrating", "progress": round(progress, 3)}

    def _progress(self, s: SignalBaseline) -> float:
        return min(
            1.0, s.seconds / self.calibration_s if self.calibration_s else 1.0, len(s.samples) / 3
        )

    # -- the one operation ------------------------------------------------------------------
    def observe(self, values: dict[str, float], seconds: float, t: float) -> dict[str, float]:
        """Fold one window's values in; the signed z-scores of the signals that are ready
        (and, for LOG_RATIO signals, `<key>_log`: the signed log ratio to the baseline mean).

        A signal still calibrating gives no z-score (its window is part of the baseline).
        """
        z: dict[str, float] = {}
        for key, value in values.items():
            if key not in SIGNS or value is None or not math.isfinite(value):
                continue
            s = self.signals.setdefault(key, SignalBaseline())
            if not s.ready:
                s.samples.append(float(value))
                s.seconds += seconds
                if s.seconds >= self.calibration_s and len(s.samples) >= MIN_WINDOWS:
                    n = len(s.samples)
                    s.mean = sum(s.samples) / n
                    s.var = sum((x - s.mean) ** 2 for x in s.samples) / (n - 1)
                    s.samples = []
                    log.info(
                        "baseline for %s ready after %.0f s: %.2f +- %.2f",
                        key,
                        s.seconds,
                        s.mean,
                        math.sqrt(s.var),
                    )
                self._dirty = True
                continue
            assert s.mean is not None
            zk = (value - s.mean) / s.spread(FLOORS[key])
            z[key] = SIGNS[key] * zk
            if key in LOG_RATIO and value > 0 and s.mean > 0:
                z[f"{key}_log"] = SIGNS[key] * math.log(value / s.mean)
            if self.adapt_half_life_s and abs(zk) < ADAPT_MAX_Z:
                alpha = 1.0 - 0.5 ** (seconds / self.adapt_half_life_s)
                delta = value - s.mean
                s.mean += alpha * delta
                s.var = (1.0 - alpha) * ((s.var or 0.0) + alpha * delta * delta)
                s.seconds += seconds
                self._dirty = True
        self.updated = t
        self.maybe_save()
        return z

    def reset(self) -> None:
        """Forget everything; calibration starts again with the next window."""
        self.signals.clear()
        self.resets += 1
        self._dirty = True
        log.info("baseline reset: calibrating again")
        self.save()

    # -- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "calibration_s": self.calibration_s,
            "updated": self.updated,
            "signals": {k: asdict(s) for k, s in self.signals.items()},
        }

    def maybe_save(self) -> None:
        if self._dirty and time.monotonic() - self._saved_at >= self.save_every_s:
            self.save()

    def save(self) -> None:
        """Write the file atomically (a power cut leaves the old or the new one, never half)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".baseline-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False
        self._saved_at = time.monotonic()

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("baseline %s unreadable (%s): calibrating afresh", self.path, exc)
            return
        try:
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} v{VERSION} file")
            signals = {
                k: SignalBaseline(
                    seconds=float(v["seconds"]),
                    samples=[float(x) for x in v["samples"]],
                    mean=None if v["mean"] is None else float(v["mean"]),
                    var=None if v["var"] is None else float(v["var"]),
                )
                for k, v in data["signals"].items()
                if k in SIGNS
            }
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("baseline %s malformed (%s): calibrating afresh", self.path, exc)
            return
        self.signals = signals
        self.updated = data.get("updated")
        ready = [k for k, s in signals.items() if s.ready]
        log.info("baseline loaded from %s (ready: %s)", self.path, ", ".join(ready) or "none")
