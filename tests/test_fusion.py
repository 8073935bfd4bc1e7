"""Fusion, personal baseline, summaries, privacy gate and commands: the pure parts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from agent.affect.baseline import PersonalBaseline
from agent.affect.fusion import (
    STRESS_MODELS,
    StressModel,
    face_estimate,
    face_stress,
    fuse,
    physio_estimate,
)
from agent.affect.summary import SummaryAccumulator
from agent.affect.windows import WindowAggregator
from agent.control import Command, CommandError, command_subtopic, parse_command
from agent.events import EXPRESSIONS, EdaEvent, FaceObservation, HeartEvent
from agent.pi import decode_throttled, throttled_word
from agent.privacy import PauseGate, PrivacyGate

HAPPY, SAD, ANGRY, NEUTRAL = (EXPRESSIONS.index(e) for e in ("happy", "sad", "angry", "neutral"))


def onehot(i: int, p: float = 0.9) -> tuple[float, ...]:
    rest = (1 - p) / 6
    return tuple(p if k == i else rest for k in range(7))


# -- face ---------------------------------------------------------------------------------
def test_face_valence_orders_happy_neutral_sad() -> None:
    v = {
        i: face_estimate([onehot(i)], [1.0], frames=1, face_frames=1).valence
        for i in (HAPPY, NEUTRAL, SAD, ANGRY)
    }
    assert v[HAPPY] > v[NEUTRAL] > v[SAD]
    assert v[NEUTRAL] > v[ANGRY]


def test_face_confidence_falls_with_quality_ambiguity_and_coverage() -> None:
    sure = face_estimate([onehot(HAPPY, 0.95)], [1.0], 1, 1).confidence
    vague = face_estimate([onehot(HAPPY, 0.3)], [1.0], 1, 1).confidence
    blurry = face_estimate([onehot(HAPPY, 0.95)], [0.3], 1, 1).confidence
    rare = face_estimate([onehot(HAPPY, 0.95)], [1.0], 10, 1).confidence
    assert sure > vague and sure > blurry and sure > rare
    assert face_estimate([], [], 5, 0) is None


# -- physiology ---------------------------------------------------------------------------
def test_physio_uses_the_first_model_whose_signals_it_has() -> None:
    skin = StressModel("skin", -1.0, {"scl_us_log": 2.0}, 0.9, heart=False)
    heart = StressModel("heart", 0.0, {"hr_bpm": 0.5, "rmssd_ms": 0.5}, 0.4, heart=True)
    models = (skin, heart)
    calm = physio_estimate({"scl_us_log": 0.0, "hr_bpm": 3.0, "rmssd_ms": 3.0}, 1.0, models)
    assert calm is not None and calm.signals == ("scl_us_log",)  # skin first: heart unused
    assert calm.arousal == pytest.approx(0.0)
    assert calm.stress == pytest.approx(1 / (1 + math.e))  # logistic(-1) at the baseline
    assert calm.confidence == pytest.approx(0.9)
    up = physio_estimate({"scl_us_log": 1.0}, 0.1, models)  # heart quality: not skin's
    assert up.stress == pytest.approx(1 / (1 + math.exp(-1.0))) and up.confidence == 0.9
    assert up.arousal == pytest.approx(math.tanh(1.0))
    strap = physio_estimate({"hr_bpm": 2.0, "rmssd_ms": 0.0, "scl_us": 1.0}, 0.5, models)
    assert strap.signals == ("hr_bpm", "rmssd_ms") and strap.stress == pytest.approx(
        1 / (1 + math.exp(-1.0))
    )
    assert strap.confidence == pytest.approx(0.2)  # 0.4 x heart quality 0.5
    assert physio_estimate({"hr_bpm": 1.0}, 1.0, models) is None  # no model has all it needs
    assert physio_estimate({}, 1.0, models) is None


def test_shipped_stress_model_reads_rest_as_calm_and_a_rising_level_as_stress() -> None:
    names = [m.name for m in STRESS_MODELS]
    assert names == ["skin", "heart"]
    rest = physio_estimate({"scl_us_log": 0.0, "scl_us": 0.0, "scr_per_min": 0.0})
    doubled = physio_estimate({"scl_us_log": math.log(2.0), "scl_us": 2.0, "scr_per_min": 2.0})
    assert rest.stress < 0.5 < doubled.stress and doubled.arousal > rest.arousal
    strap_rest = physio_estimate({"hr_bpm": 0.0, "rmssd_ms": 0.0})
    strap_up = physio_estimate({"hr_bpm": 2.0, "rmssd_ms": 2.0})  # HR up, HRV down
    assert strap_rest.stress < 0.5 < strap_up.stress
    assert strap_up.confidence < doubled.confidence  # heart alone discriminates less


def test_fuse_any_subset_and_agreement() -> None:
    face = face_estimate([onehot(HAPPY)], [1.0], 1, 1)
    calm_body = physio_estimate({"scl_us_log": -1.0})
    aroused_body = physio_estimate({"scl_us_log": 3.0})
    assert fuse(None, None) is None
    only_face = fuse(face, None)
    only_body = fuse(None, aroused_body)
    both_agree = fuse(face, aroused_body)
    both_disagree = fuse(face, calm_body)
    assert only_face.emotion == "happy" and only_face.valence > 0.5
    assert only_body.valence is None and only_body.emotion is None and only_body.stress > 0.9
    assert both_agree.agreement > both_disagree.agreement
    assert both_agree.confidence > both_disagree.confidence
    assert sum(only_face.emotions.values()) == pytest.approx(1.0)


def test_face_stress_is_high_for_angry_low_for_happy() -> None:
    assert face_stress(-0.51, 0.59) > 0.8 > 0.1 > face_stress(0.81, 0.51)


# -- baseline -----------------------------------------------------------------------------
def test_baseline_calibrates_then_scores_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    b = PersonalBaseline(calibration_s=30, adapt_half_life_h=None, path=path, save_every_s=0)
    for i, hr in enumerate([60.0, 62.0, 64.0]):
        assert b.observe({"hr_bpm": hr}, 10, float(i)) == {}  # calibrating
    assert b.status() == {"state": "ready", "progress": 1.0}
    z = b.observe({"hr_bpm": 72.0, "rmssd_ms": 30.0}, 10, 4.0)
    assert z["hr_bpm"] == pytest.approx((72 - 62) / 5.0)  # spread floored at 5 bpm
    assert "rmssd_ms" not in z  # a new signal calibrates on its own
    assert b.status()["state"] == "calibrating"
    again = PersonalBaseline(calibration_s=30, path=path)
    assert again.signals["hr_bpm"].mean == pytest.approx(62.0)
    assert json.loads(path.read_text())["format"] == "emotion-agent-baseline"
    again.reset()
    assert again.status()["state"] == "none"
    assert json.loads(path.read_text())["signals"] == {}


def test_baseline_adapts_slowly_and_not_to_outliers() -> None:
    b = PersonalBaseline(calibration_s=20, adapt_half_life_h=1.0)
    for i in range(3):
        b.observe({"hr_bpm": 60.0 + i}, 10, i)
    mean0 = b.signals["hr_bpm"].mean
    b.observe({"hr_bpm": 120.0}, 10, 5)  # z = 12: not learnt
    assert b.signals["hr_bpm"].mean == mean0
    for i in range(360):  # one hour of slightly higher resting rate: half the way there
        b.observe({"hr_bpm": mean0 + 4.0}, 10, 10 + i)
    assert b.signals["hr_bpm"].mean == pytest.approx(mean0 + 2.0, abs=0.3)


def test_corrupt_baseline_file_recalibrates(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text("{not json")
    assert PersonalBaseline(path=path).status()["state"] == "none"
    path.write_text(json.dumps({"format": "emotion-agent-baseline", "version": 1, "signals": 3}))
    assert PersonalBaseline(path=path).status()["state"] == "none"


# -- windows and summaries -------------------------------------------------------------------
def test_audience_aggregator_ignores_bodies_and_counts_max_faces() -> None:
    agg = WindowAggregator(physiology=False)
    agg.put(HeartEvent(0.5, 70, (850.0,)))
    agg.put(EdaEvent(0.5, (2.0, 2.1), 4.0))
    agg.put(FaceObservation(1.0, (onehot(HAPPY), onehot(SAD)), (0.9, 0.8)))
    agg.put(FaceObservation(2.0, (onehot(HAPPY),), (0.9,)))
    state = agg.close(0.0, 10.0)
    assert agg.counts["ignored"] == 2
    assert state.evidence["faces_max"] == 2 and state.evidence["faces"] == 3
    assert "beats" not in state.evidence and state.modalities == ("face",)
    payload = state.payload("dev", with_vitals=True, mode="audience")
    assert "vitals" not in payload and payload["contributions"]["body"] is None


def test_summary_reduces_states() -> None:
    agg = WindowAggregator()
    acc = SummaryAccumulator()
    for k, cls in enumerate((HAPPY, HAPPY, SAD)):
        agg.put(FaceObservation(k * 10 + 1.0, (onehot(cls),), (1.0,)))
        acc.add(agg.close(k * 10.0, k * 10 + 10.0))
    acc.add(agg.close(30.0, 40.0))  # no evidence: insufficient_data
    s = acc.close("dev", "personal", 0.0, 40.0)
    assert s["states"] == {"total": 4, "ok": 3, "calibrating": 0, "insufficient_data": 1}
    assert s["dominant_emotion"] == "happy"
    assert s["emotions"] == {
        "happy": pytest.approx(0.667, abs=1e-3),
        "sad": pytest.approx(0.333, abs=1e-3),
    }
    assert s["valence"]["min"] < 0 < s["valence"]["max"]
    assert s["window"]["seconds"] == 40.0 and s["evidence"]["faces"] == 3
    assert acc.close("dev", "personal") is None


# -- privacy gate ------------------------------------------------------------------------------
def test_privacy_gate_consent_audience_and_two_pause_switches(tmp_path: Path) -> None:
    local, remote = tmp_path / "paused", tmp_path / "paused.remote"
    gate = PrivacyGate(True, "audience", 3, local, remote)
    assert gate.withhold_reason({"faces_max": 2}) == "too_few_faces"
    assert gate.withhold_reason({"faces_max": 3}) is None
    assert PrivacyGate(False, "personal", 3, local, remote).withhold_reason({}) == "no_consent"
    assert gate.set_remote(True) and remote.exists() and gate.paused
    local.touch()
    gate.refresh()
    assert gate.pause_source() == "local+remote"
    assert not gate.set_remote(False)  # the local flag holds: MQTT cannot lift it
    assert gate.paused and gate.withhold_reason({"faces_max": 9}) == "paused"
    local.unlink()
    assert gate.refresh() and not gate.paused
    # remote pause survives a restart
    gate.set_remote(True)
    assert PrivacyGate(True, "personal", 1, local, remote).paused

    seen: list[object] = []

    class Sink:
        def put(self, e: object) -> None:
            seen.append(e)

    pg = PauseGate(Sink(), gate)
    pg.put(HeartEvent(0.0, 60))
    assert seen == [] and gate.dropped_events == 1


# -- commands -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("paused", b"ON", Command("paused", True)),
        ("paused", b" off\n", Command("paused", False)),
        ("paused", b"true", Command("paused", True)),
        ("paused", b"resume", Command("paused", False)),
        ("baseline", b"reset", Command("baseline", "reset")),
        ("baseline", b"Calibrate", Command("baseline", "calibrate")),
    ],
)
def test_commands_parse(name: str, payload: bytes, expected: Command) -> None:
    assert parse_command(name, payload) == expected


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("reboot", b"ON", "unknown"),
        ("paused", b"maybe", "bad_value"),
        ("paused", b"\xff\xfe", "not_utf8"),
        ("paused", b"x" * 65, "too_long"),
        ("baseline", b"", "bad_value"),
    ],
)
def test_bad_commands_are_rejected_with_a_reason(name: str, payload: bytes, reason: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_command(name, payload)
    assert err.value.reason == reason


def test_command_subtopic() -> None:
    assert command_subtopic("emotion-agent/a/set/paused", "emotion-agent/a") == "paused"
    assert command_subtopic("emotion-agent/b/set/paused", "emotion-agent/a") is None


# -- Pi -------------------------------------------------------------------------------------
def test_throttled_word_decoding(tmp_path: Path) -> None:
    node = tmp_path / "get_throttled"
    node.write_text("50005\n")
    word = throttled_word(node, vcgencmd=False)
    assert word == 0x50005
    flags = decode_throttled(word)
    assert flags["under_voltage"] and flags["throttled"] and not flags["freq_capped"]
    assert flags["under_voltage_occurred"] and flags["throttled_occurred"]
    assert throttled_word(tmp_path / "absent", vcgencmd=False) is None


def test_expression_distribution_is_in_fer_order() -> None:
    assert np.argmax(onehot(HAPPY)) == EXPRESSIONS.index("happy")


def test_calm_body_breaks_ties_but_never_overrules_a_clear_face() -> None:
    calm = physio_estimate({"scl_us_log": 0.0})
    smile = [0.0] * 7
    smile[HAPPY], smile[NEUTRAL] = 0.6, 0.4
    assert fuse(face_estimate([smile], [1.0], 1, 1), calm).emotion == "happy"
    tie = [0.0] * 7
    tie[HAPPY], tie[NEUTRAL] = 0.5, 0.5
    assert fuse(face_estimate([tie], [1.0], 1, 1), calm).emotion == "neutral"
