"""Generate the SYNTHETIC session shipped in agent/sessions/synthetic.

    python -m agent.sessions.generate_synthetic [OUT_DIR]

Deterministic: the same seed gives the same bytes, and a test regenerates the session and
compares it with the shipped files. Only the standard library is used (`random.Random`,
`math`) because their output is fixed across Python versions and platforms, whereas
numpy's `Generator` distributions may change between releases.

The data is a model, not a recording: it exists so the agent runs anywhere, and so tests
have known properties to check (a stress segment with higher HR, lower HRV and higher skin
conductance). It says nothing about any real person.
"""

from __future__ import annotations

import math
import random
import sys
import textwrap
from pathlib import Path

SEED = 20240501
START = "2024-05-01T09:00:00Z"
DURATION_S = 600
STRESS_ON_S, STRESS_OFF_S = 240.0, 420.0
RAMP_S = 30.0  # stress rises over this long (half-cosine)
RECOVERY_TAU_S = 45.0  # then decays exponentially after STRESS_OFF_S

# Heart: parameters at rest -> under full stress (interpolated by the stress level).
HR_BPM = (64.0, 88.0)
RSA_AMP_MS = (28.0, 7.0)  # respiratory sinus arrhythmia, RR amplitude
RESP_HZ = (0.25, 0.30)  # breathing rate
MAYER_AMP_MS = (20.0, 8.0)  # ~0.1 Hz baroreflex (Mayer wave) oscillation
MAYER_HZ = 0.1
NOISE_SD_MS = (20.0, 9.0)  # beat-to-beat white noise
NOTIFY_PERIOD_S, NOTIFY_JITTER_S, NOTIFY_FIRST_S = 1.0, 0.015, 0.6
CONTACT_LOSS_S = (180.0, 188.0)
DROPPED_NOTIFICATIONS = (100, 350)  # indices of notifications that never arrive

# EDA (skin conductance), 4 Hz.
EDA_RATE_HZ = 4
TONIC_US = (2.0, 4.0)
TONIC_TAU_S = (20.0, 60.0)  # tonic level follows stress with a lag: rise, fall
SCR_PER_MIN = (3.0, 10.0)
SCR_AMP_US = (0.1, 0.6)
SCR_RISE_TAU_S, SCR_DECAY_TAU_S = 0.75, 5.0  # peak ~1.7 s after onset, decays over ~5 s
EDA_NOISE_SD_US = 0.004


def stress_level(t: float) -> float:
    """0 at rest, 1 under full stress."""
    if t < STRESS_ON_S:
        return 0.0
    if t < STRESS_ON_S + RAMP_S:
        return 0.5 - 0.5 * math.cos(math.pi * (t - STRESS_ON_S) / RAMP_S)
    if t < STRESS_OFF_S:
        return 1.0
    return math.exp(-(t - STRESS_OFF_S) / RECOVERY_TAU_S)


def _mix(pair: tuple[float, float], s: float) -> float:
    return pair[0] + (pair[1] - pair[0]) * s


def beat_ticks(rng: random.Random) -> list[int]:
    """Beat times in 1/1024 s ticks: a strap times beats on that grid, so RR = tick diff."""
    t = rng.uniform(0.0, 0.8)
    resp_phase = rng.uniform(0.0, 2 * math.pi)
    mayer_phase = rng.uniform(0.0, 2 * math.pi)
    ticks = [round(t * 1024)]
    while t < DURATION_S:
        s = stress_level(t)
        rr_ms = (
            60000.0 / _mix(HR_BPM, s)
            + _mix(RSA_AMP_MS, s) * math.sin(resp_phase)
            + _mix(MAYER_AMP_MS, s) * math.sin(2 * math.pi * MAYER_HZ * t + mayer_phase)
            + rng.gauss(0.0, _mix(NOISE_SD_MS, s))
        )
        rr_ms = min(2000.0, max(300.0, rr_ms))
        # Integrate the breathing phase so a change of breathing rate has no jump.
        resp_phase += 2 * math.pi * _mix(RESP_HZ, s) * rr_ms / 1000.0
        t += rr_ms / 1000.0
        ticks.append(round(t * 1024))
    return ticks


def _ms(ticks: int) -> str:
    """RR in ms exactly as a strap's 1/1024 s count decodes (at most 7 decimals)."""
    return f"{ticks * 1000 / 1024:.7f}".rstrip("0").rstrip(".")


def heart_csv(rng: random.Random) -> str:
    ticks = beat_ticks(rng)
    lines = ["t,hr,rr_ms,contact"]
    hr = round(HR_BPM[0])
    beat = 1  # next beat whose RR (ticks[beat] - ticks[beat - 1]) is still to be sent
    k, prev_t = 0, 0.0
    while True:
        t = NOTIFY_FIRST_S + k * NOTIFY_PERIOD_S + rng.gauss(0.0, NOTIFY_JITTER_S)
        if t > DURATION_S - 0.1:
            break
        rr: list[int] = []
        while beat < len(ticks) and ticks[beat] / 1024 <= t:
            start = ticks[beat - 1] / 1024
            # No RR without contact, nor for the first beat after it: its start was missed.
            if not (CONTACT_LOSS_S[0] <= ticks[beat] / 1024 and start < CONTACT_LOSS_S[1]):
                rr.append(ticks[beat] - ticks[beat - 1])
            beat += 1
        contact = not CONTACT_LOSS_S[0] <= t < CONTACT_LOSS_S[1]
        if rr:
            hr = round(60000 / (sum(rr) * 1000 / 1024 / len(rr)))
        # 0 is what a strap may send without skin contact; otherwise it repeats its last HR
        sent_hr = hr if contact else 0
        if k not in DROPPED_NOTIFICATIONS:  # lost in the air: its RR are gone too
            rr_field = " ".join(_ms(v) for v in rr)
            lines.append(f"{t:.3f},{sent_hr},{rr_field},{int(contact)}")
        prev_t, k = t, k + 1
    assert prev_t < DURATION_S
    return "\n".join(lines) + "\n"


def eda_csv(rng: random.Random) -> str:
    dt = 1.0 / EDA_RATE_HZ
    peak_at = (
        math.log(SCR_DECAY_TAU_S / SCR_RISE_TAU_S)
        * SCR_RISE_TAU_S
        * SCR_DECAY_TAU_S
        / (SCR_DECAY_TAU_S - SCR_RISE_TAU_S)
    )
    norm = math.exp(-peak_at / SCR_DECAY_TAU_S) - math.exp(-peak_at / SCR_RISE_TAU_S)
    drift_phase = rng.uniform(0.0, 2 * math.pi)
    level = 0.0  # lagged stress level that drives the tonic component
    scrs: list[tuple[float, float]] = []  # (onset, amplitude)
    lines = ["t,microsiemens"]
    for i in range(DURATION_S * EDA_RATE_HZ):
        t = i * dt
        s = stress_level(t)
        tau = TONIC_TAU_S[0] if s > level else TONIC_TAU_S[1]
        level += (s - level) * (1 - math.exp(-dt / tau))
        tonic = _mix(TONIC_US, level) + 0.05 * math.sin(2 * math.pi * t / 300 + drift_phase)
        if rng.random() < _mix(SCR_PER_MIN, s) / 60.0 * dt:
            scrs.append((t, rng.uniform(*SCR_AMP_US)))
        scrs = [(on, a) for on, a in scrs if t - on < 12 * SCR_DECAY_TAU_S]
        phasic = sum(
            a
            * (math.exp(-(t - on) / SCR_DECAY_TAU_S) - math.exp(-(t - on) / SCR_RISE_TAU_S))
            / norm
            for on, a in scrs
        )
        value = max(0.0, tonic + phasic + rng.gauss(0.0, EDA_NOISE_SD_US))
        lines.append(f"{t:.2f},{value:.3f}")
    return "\n".join(lines) + "\n"


def manifest_yaml() -> str:
    paragraphs = [
        "SYNTHETIC data, not a recording of any person. Generated by"
        " agent/sessions/generate_synthetic.py (python -m agent.sessions.generate_synthetic) with"
        f" Python's random.Random(seed={SEED}) for heart and seed {SEED + 1} for EDA;"
        " regenerating gives identical bytes.",
        f"Protocol: rest 0-{STRESS_ON_S:g} s; 'stress' {STRESS_ON_S:g}-{STRESS_OFF_S:g} s"
        f" (half-cosine ramp over {RAMP_S:g} s); recovery after {STRESS_OFF_S:g} s"
        f" (exponential, tau {RECOVERY_TAU_S:g} s). Values below are rest -> stress.",
        f"Heart: each RR = 60000/HR (HR {HR_BPM[0]:g} -> {HR_BPM[1]:g} bpm) + respiratory"
        f" sinus arrhythmia (sine at the breathing rate {RESP_HZ[0]:g} -> {RESP_HZ[1]:g} Hz,"
        f" amplitude {RSA_AMP_MS[0]:g} -> {RSA_AMP_MS[1]:g} ms) + a {MAYER_HZ:g} Hz Mayer"
        f" wave ({MAYER_AMP_MS[0]:g} -> {MAYER_AMP_MS[1]:g} ms) + Gaussian noise (SD"
        f" {NOISE_SD_MS[0]:g} -> {NOISE_SD_MS[1]:g} ms): RMSSD about 40 ms at rest and"
        " 15 ms under stress. Beat times are quantized to 1/1024 s like a BLE strap."
        f" A notification every ~{NOTIFY_PERIOD_S:g} s (jitter SD"
        f" {NOTIFY_JITTER_S * 1000:g} ms) carries the RR of the beats since the previous one;"
        " hr = round(60000 / mean RR of the notification), or the last hr when it has none."
        f" Skin contact is lost {CONTACT_LOSS_S[0]:g}-{CONTACT_LOSS_S[1]:g} s (contact 0,"
        " hr 0, no RR, nor for the first beat after); notifications"
        f" {DROPPED_NOTIFICATIONS[0]} and {DROPPED_NOTIFICATIONS[1]} (near"
        f" {NOTIFY_FIRST_S + DROPPED_NOTIFICATIONS[0]:g} s and"
        f" {NOTIFY_FIRST_S + DROPPED_NOTIFICATIONS[1]:g} s) are dropped (missing rows).",
        f"EDA at {EDA_RATE_HZ} Hz: tonic {TONIC_US[0]:g} -> {TONIC_US[1]:g} uS following"
        f" the stress level with a first-order lag (tau {TONIC_TAU_S[0]:g} s rising,"
        f" {TONIC_TAU_S[1]:g} s falling) plus a 0.05 uS drift with a 300 s period; phasic"
        " skin-conductance responses arrive as a Poisson process at"
        f" {SCR_PER_MIN[0]:g} -> {SCR_PER_MIN[1]:g} per minute with amplitude uniform in"
        f" {SCR_AMP_US[0]:g}-{SCR_AMP_US[1]:g} uS and shape exp(-t/{SCR_DECAY_TAU_S:g}) -"
        f" exp(-t/{SCR_RISE_TAU_S:g}) (peak ~1.7 s after onset); Gaussian noise SD"
        f" {EDA_NOISE_SD_US:g} uS; values rounded to 0.001 uS.",
    ]
    body = "\n\n".join(
        textwrap.fill(
            p, width=86, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False
        )
        for p in paragraphs
    )
    return (
        "format: emotion-agent-session\n"
        "version: 1\n"
        f"start: {START}\n"
        f"duration_s: {DURATION_S}\n"
        "synthetic: true\n"
        f"description: |\n{body}\n"
        "license: CC0-1.0 (synthetic data generated by the emotion-agent project)\n"
        "modalities:\n"
        "  heart: {file: heart.csv}\n"
        f"  eda: {{file: eda.csv, rate_hz: {EDA_RATE_HZ}}}\n"
    )


def generate(out_dir: str | Path) -> list[Path]:
    """Write manifest.yaml, heart.csv and eda.csv into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # One stream per modality, so changing one never changes the other's bytes.
    files = {
        "manifest.yaml": manifest_yaml(),
        "heart.csv": heart_csv(random.Random(SEED)),
        "eda.csv": eda_csv(random.Random(SEED + 1)),
    }
    paths = []
    for name, text in files.items():
        path = out / name
        path.write_bytes(text.encode("utf-8"))  # bytes: no platform newline translation
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m agent.sessions.generate_synthetic [OUT_DIR]", file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    out = Path(args[0]) if args else Path(__file__).resolve().parent / "synthetic"
    for path in generate(out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
