"""`emotion-agent bench` and `soak`: the commands run and report sane figures.

No timing thresholds here: the machine is shared and noisy. The goals are checked by the
commands themselves and reported with their figures (docs/evaluations.md, "Proof under stress").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from agent.bench.soak import verdict
from tests.conftest import ROOT, agent_cmd

pytestmark = pytest.mark.timeout(180)


def test_bench_json_structure_and_sane_values() -> None:
    if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
        pytest.skip("the bench starts its own broker: apt install mosquitto")
    proc = subprocess.run(
        agent_cmd("bench", "--seconds", "5", "--warmup", "1", "--no-peers", "--no-ramp", "--json"),
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout)
    assert set(r) >= {"environment", "nominal", "latency_ms", "camera_ramp", "goals", "peers"}
    n = r["nominal"]
    assert (n["camera_fps"], n["heart_hz"], n["eda_hz"]) == (5.0, 1.0, 8.0)
    assert 0 < n["cpu_share"] < 2.0  # a share of one core; two cores at most here
    assert 20 < n["peak_rss_mb"] < 2000 and n["threads"] >= 2 and n["fds"] >= 3
    assert n["analysed"] > 0 and n["analysed"] + n["dropped"] <= n["frames"]
    face = r["latency_ms"]["capture_to_face"]
    assert face["n"] > 0 and 0 < face["p50"] <= face["p95"] <= face["p99"] <= face["max"]
    assert r["environment"]["tflite_runtime"] in ("tflite-runtime", "ai-edge-litert")
    # one TFLite runtime in memory, and nothing the bench's sources do not need: no scipy
    # (agent.physio.dsp), no bleak or D-Bus (no BLE source configured)
    loaded = set(r["environment"]["large_libraries_loaded"])
    assert len(loaded & {"tflite_runtime", "ai_edge_litert"}) == 1, loaded
    assert not loaded & {"scipy", "bleak", "dbus_fast", "matplotlib", "neurokit2"}, loaded
    assert [g["goal"] for g in r["goals"]] == ["<= 10 %", "<= 100 MB", "< 100 ms"]
    assert all(isinstance(g["met"], bool) for g in r["goals"])
    assert r["camera_ramp"]["steps"] == [] and r["peers"] == {}
    assert r["task_failures"] and not any(r["task_failures"].values())


def test_bench_help_through_the_cli() -> None:
    for command in ("bench", "soak"):
        proc = subprocess.run(
            agent_cmd(command, "--help"), capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert f"emotion-agent {command}" in proc.stdout


def _samples(rss: list[float], fds: list[int], threads: list[int]) -> list[dict[str, float]]:
    return [
        {"t": float(i), "rss_mb": r, "fds": f, "threads": t}
        for i, (r, f, t) in enumerate(zip(rss, fds, threads, strict=True))
    ]


def test_soak_verdict_rules() -> None:
    n = 50
    flat = verdict(_samples([100.0 + 0.01 * i for i in range(n)], [12] * n, [7] * n), 0.2)
    assert flat["ok"] and flat["rss"]["growth"] < 0.01
    leak = verdict(_samples([100.0 + 0.5 * i for i in range(n)], [12] * n, [7] * n), 0.2)
    assert not leak["ok"] and not leak["rss"]["ok"] and leak["fds"]["ok"]
    fd_leak = verdict(_samples([100.0] * n, [12 + i // 10 for i in range(n)], [7] * n), 0.2)
    assert not fd_leak["ok"] and not fd_leak["fds"]["ok"] and fd_leak["threads"]["ok"]
    # warm-up growth (models, windows filling) is not judged
    warm = verdict(_samples([50.0] * 10 + [100.0] * (n - 10), [3] * 10 + [12] * 40, [7] * n), 0.2)
    assert warm["ok"]
    assert verdict(_samples([1.0] * 5, [1] * 5, [1] * 5), 0.2)["ok"] is False  # too few


def test_import_costs_and_no_scipy_on_the_agents_path() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.bench.imports", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    r = json.loads(proc.stdout)
    modules = [row["module"] for row in r["imports"]]
    assert "agent.runtime" in modules and r["unexpected"] == []
    assert all(row["rss_mb"] > 0 for row in r["imports"])
