"""evaluate-stress: labelled recordings through the live path, scored; and it IS the live path.

The subjects here are made from the bundled synthetic session (rest, a stress segment,
recovery) written in the Stress-Predict layout, so the tests need nothing from ../shared.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from agent.bench.stress_eval import auroc, simulate_states
from agent.config import AgentConfig
from agent.sessions.stress_predict import read_recording, strap_notifications, subject_session
from agent.sources.session import load_session, synthetic_session_path
from tests.conftest import Broker, agent_cmd
from tests.test_contract import PREFIX, write_config

KEYS = {
    "subjects",
    "median_auroc",
    "auroc_iqr",
    "pooled_auroc",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "phases",
}


def write_subject(folder: Path, shift_s: float = 0.0, with_hr: bool = True) -> Path:
    """The synthetic session as a Stress-Predict subject: rest 0-240 s, stress 250-420 s,
    recovery 430-600 s; beats at their own times in ibi.csv, EDA at 4 Hz. `shift_s` moves
    every sample, so subjects differ a little."""
    session = load_session(synthetic_session_path())
    folder.mkdir(parents=True)
    with open(folder / "segments.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phase", "label_binary", "start_t_s", "end_t_s"])
        w.writerows([["rest", 0, 0, 240], ["stress", 1, 250, 420], ["recovery", 0, 430, 600]])
    with open(folder / "ibi.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "rr_ms"])
        for row in session.heart_rows():
            back = 0.0
            beats = []
            for rr in reversed(row.rr_ms):  # the last beat just before the notification
                beats.append((row.t - 0.05 - back, rr))
                back += rr / 1000.0
            w.writerows([[f"{t + shift_s:.4f}", rr] for t, rr in reversed(beats) if t > 0])
    if with_hr:
        with open(folder / "hr_e4_1hz.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "hr_bpm_e4"])
            w.writerows([[f"{r.t + shift_s:.3f}", r.hr] for r in session.heart_rows() if r.hr])
    with open(folder / "eda_4hz.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "eda_uS"])
        w.writerows([[f"{r.t + shift_s:.3f}", r.microsiemens] for r in session.eda_rows()])
    return folder


def evaluate_cli(root: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agent_cmd(
            "evaluate-stress", str(root), "--negative", "rest", "--positive", "stress", *more
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_auroc_counts_ties_half() -> None:
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    assert auroc([], [0.5]) is None


def test_evaluate_stress_json_scores_subjects_and_skips_bad_ones(tmp_path: Path) -> None:
    root = tmp_path / "subjects"
    write_subject(root / "A")
    write_subject(root / "B", shift_s=0.37, with_hr=False)  # a strap's rate from RR instead
    write_subject(root / "C")
    (root / "C" / "eda_4hz.csv").unlink()
    write_subject(root / "D")
    (root / "D" / "ibi.csv").write_text("t_s,rr_ms\n1.0,eight hundred\n")
    write_subject(root / "E")
    (root / "E" / "segments.csv").write_text("phase,start_t_s,end_t_s\nstress,0,600\n")
    proc = evaluate_cli(root, "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert set(r) == KEYS
    by = {s["subject"]: s for s in r["subjects"]}
    assert by["C"]["skipped"] == "no eda_4hz.csv"
    assert "ibi.csv line 2: rr_ms 'eight hundred' is not a number" in by["D"]["skipped"]
    assert "no rest phase" in by["E"]["skipped"]
    for name in ("A", "B"):
        s = by[name]
        assert s["windows"]["negative"] > 0 and s["windows"]["positive"] > 0
        assert s["share_ok"] > 0.9
        # the synthetic stress segment raises skin conductance ~1.6x: clearly separated
        assert s["auroc"] > 0.9 and s["auroc_arousal"] > 0.9
        assert s["mean_stress"]["stress"] > s["mean_stress"]["rest"]
    assert r["median_auroc"] > 0.9 and r["pooled_auroc"] > 0.8
    assert 0.0 <= r["specificity"] <= 1.0 and 0.0 <= r["sensitivity"] <= 1.0
    assert set(r["phases"]) == {"stress", "recovery"}
    assert r["phases"]["stress"]["subjects"] == 2

    table = evaluate_cli(root)
    assert table.returncode == 0, table.stderr
    assert "median AUROC" in table.stdout and "C         skipped: no eda_4hz.csv" in table.stdout


def test_evaluate_stress_with_a_config_and_wrong_phases(tmp_path: Path) -> None:
    root = tmp_path / "subjects"
    write_subject(root / "A")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("baseline: {calibration_s: 60}\n")
    proc = evaluate_cli(root, "-c", str(cfg), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["subjects"][0]["windows"]["negative"] > 0
    typo = subprocess.run(
        agent_cmd("evaluate-stress", str(root), "--negative", "rest", "--positive", "stres"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert typo.returncode == 2
    assert "no subject has a phase stres (phases: recovery, rest, stress)" in typo.stderr
    # the only negative phase comes after the stress and is shorter than the calibration
    backwards = subprocess.run(
        agent_cmd("evaluate-stress", str(root), "--negative", "recovery", "--positive", "stress"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert backwards.returncode == 1, backwards.stderr
    assert "no scored negative window (the replay starts at 430 s" in backwards.stdout
    assert "no subject could be evaluated" in backwards.stderr


def test_evaluate_stress_refuses_a_phase_on_both_sides(tmp_path: Path) -> None:
    proc = subprocess.run(
        agent_cmd("evaluate-stress", str(tmp_path), "--negative", "x", "--positive", "x"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "both negative and positive" in proc.stderr


def test_notifications_carry_the_beats_of_the_second_before(tmp_path: Path) -> None:
    rec = read_recording(write_subject(tmp_path / "A"))
    notes = strap_notifications(rec, 100.0, 110.0)
    assert all(100.0 <= t < 110.0 for t, _, _ in notes)
    beats = [v for _, v in rec.ibi if 99.0 < _ <= notes[-1][0]]
    assert [v for _, _, rr in notes for v in rr] == beats[-sum(len(rr) for _, _, rr in notes) :]


def _session_folder(session, folder: Path) -> Path:
    """An in-memory session written in the session folder format, floats exactly."""
    folder.mkdir()
    heart = ["t,hr,rr_ms,contact"] + [
        f"{r.t!r},{r.hr},{' '.join(repr(v) for v in r.rr_ms)}," for r in session.heart_rows()
    ]
    (folder / "heart.csv").write_text("\n".join(heart) + "\n")
    eda = ["t,microsiemens"] + [f"{r.t!r},{r.microsiemens!r}" for r in session.eda_rows()]
    (folder / "eda.csv").write_text("\n".join(eda) + "\n")
    (folder / "manifest.yaml").write_text(
        "format: emotion-agent-session\nversion: 1\nstart: 2024-05-01T09:00:00Z\n"
        f"duration_s: {session.duration_s}\nsynthetic: true\n"
        "description: a Stress-Predict-layout subject made from the synthetic session\n"
        "license: CC0-1.0\nmodalities:\n  heart: {file: heart.csv}\n"
        f"  eda: {{file: eda.csv, rate_hz: {session.eda_rate_hz}}}\n"
    )
    return folder


@pytest.mark.timeout(240)
def test_live_replay_and_evaluate_stress_make_the_same_states(
    broker: Broker, tmp_path: Path
) -> None:
    rec = read_recording(write_subject(tmp_path / "A", shift_s=0.37))
    session = subject_session(rec, 0.0, 600.0)
    simulated = simulate_states(AgentConfig(), session)
    folder = _session_folder(session, tmp_path / "session")
    cfg = write_config(tmp_path, broker, "privacy: {consent: true}\npublish: {vitals: true}\n")
    proc = subprocess.run(
        agent_cmd("replay", str(folder), "-c", str(cfg), "--speed", "40"),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    live = [
        json.loads(line.split(" ", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith(f"{PREFIX}/state ")
    ]
    assert len(live) == len(simulated) == 60
    # what a window says; not the counters of events that arrived during it (a late event
    # on a busy machine lands in the next window's count, never in its analysis)
    same = ("status", "valence", "arousal", "stress", "emotion", "confidence", "modalities",
            "contributions", "baseline", "vitals")  # fmt: skip
    for i, (mine, theirs) in enumerate(zip(simulated, live, strict=True)):
        payload = mine.payload("contract", True)
        for key in same:
            assert payload[key] == theirs[key], (i, key, payload[key], theirs[key])
        assert payload["evidence"]["beats"] == theirs["evidence"]["beats"], i
    assert sum(s["status"] == "ok" for s in live) > 30
