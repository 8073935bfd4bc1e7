"""End-to-end benchmark: the whole agent at nominal rates, what it costs, and its peers.

    emotion-agent bench [--seconds 60] [--json] [--no-peers] [--no-ramp] [--broker URL]
                        [--peer-python PATH]

The agent runs in a child process of its own (so its CPU time and memory are its own), as
the service runs it: the real `Agent` with its supervisor, windows, fusion, durable outbox
and MQTT session to a real broker (a private Mosquitto started for the run, or `--broker`).
Its inputs go through the real source code paths at the nominal rates:

- heart and EDA: a session replay at 1x (heart notifications at 1 Hz, EDA at 8 Hz in
  packets of 8, like a BLE sensor), built from the bundled synthetic demo session (looped,
  EDA resampled from 4 to 8 Hz);
- camera: the camera source's own capture thread, latest-frame mailbox and drop counting
  (`agent.sources.camera_capture._ThreadedCamera`) around a frame generator that stands in for
  picamera2's `capture_request()`: the bundled demo session's frames (a real actor's face
  in 128x96 Y planes, a Pi 4 lores stream; Pillow decodes them), cycled at 5 fps and
  analysed by the real face stage and TFLite models. Nothing beyond a plain install.

Measured in the child after a warm-up: CPU time / wall time (1.0 = one busy core), peak
resident memory (VmHWM), threads and descriptors; per-stage latency: exposure to face
result (the frame's capture time to the `FaceObservation` reaching the windows), and window
close to publish acknowledgement (the aggregator closing a state window to the broker's
PUBACK for that state). The latencies come from wrapping two methods of the running
agent's instances (`aggregator.close`/`put`, `outbox.ack`), not from edits to the runtime.
Then the camera rate is ramped (5, 10, 15 ... fps, a few seconds each) until the face
stage drops frames: the highest rate sustained without a drop.

Peers, in the same run, both optional (reported as skipped, with the command that installs
them, when absent): NeuroKit2 (the `bench` extra) computes the HRV and EDA features of the
same 60 s windows the agent analyses every 10 s (as `agent.bench.hrv_eval` and `eda_eval`
configure it); `agent.bench.faces_bench` times our face pipeline per runtime and `fer`'s
on its own frames (scikit-image's astronaut, the `bench` extra; fer in a child interpreter
that can import it: `--peer-python`). Ratios are peer / ours.

Goals on the development machine: at most 10 % of one core at nominal rates, at most
100 MB resident (one TFLite runtime, no scipy: see agent.physio.dsp), window close to
publish p95 under 100 ms. The report lists which large libraries the agent imported.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.bench.faces_bench import proc_status

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(__file__).resolve().parents[1] / "sessions" / "synthetic"
NOMINAL = {"camera_fps": 5.0, "heart_hz": 1.0, "eda_hz": 8.0}
RAMP_FPS = (10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0)
GOALS = {"cpu_share": 0.10, "peak_rss_mb": 100.0, "close_to_ack_p95_ms": 100.0}
# Libraries big enough to matter on a 512 MB Pi: the bench says which the agent loaded.
HEAVY_MODULES = (
    "ai_edge_litert",
    "tflite_runtime",
    "scipy",
    "bleak",
    "dbus_fast",
    "PIL",
    "matplotlib",
    "neurokit2",
)


# ---------------------------------------------------------------- inputs


def write_session(folder: Path, seconds: float, eda_hz: float = NOMINAL["eda_hz"]) -> Path:
    """The demo session looped to `seconds`, EDA linearly resampled to `eda_hz`."""
    folder.mkdir(parents=True, exist_ok=True)
    period = 600.0
    loops = int(seconds // period) + 1
    with open(DEMO / "heart.csv") as f:
        heart = list(csv.DictReader(f))
    with open(DEMO / "eda.csv") as f:
        eda = [(float(r["t"]), float(r["microsiemens"])) for r in csv.DictReader(f)]
    with open(folder / "heart.csv", "w") as out:
        out.write("t,hr,rr_ms,contact\n")
        for k in range(loops):
            for r in heart:
                t = float(r["t"]) + k * period
                if t < seconds:
                    out.write(f"{t:.3f},{r['hr']},{r['rr_ms']},{r['contact']}\n")
    with open(folder / "eda.csv", "w") as out:
        out.write("t,microsiemens\n")
        step = 1.0 / eda_hz
        n = int(seconds * eda_hz)
        j = 0
        for i in range(n):
            t = i * step
            tt = t % period
            while j + 1 < len(eda) and eda[j + 1][0] <= tt:
                j += 1
            if j + 1 >= len(eda) or tt < eda[j][0]:
                j = 0 if tt < eda[0][0] else j
                value = eda[j][1]
            else:
                (t0, v0), (t1, v1) = eda[j], eda[j + 1]
                value = v0 + (v1 - v0) * (tt - t0) / (t1 - t0)
            out.write(f"{t:.3f},{value:.4f}\n")
    (folder / "manifest.yaml").write_text(
        "format: emotion-agent-session\nversion: 1\nstart: 2024-05-01T09:00:00Z\n"
        f"duration_s: {seconds:g}\nsynthetic: true\n"
        "description: the bundled synthetic demo session looped, EDA resampled to "
        f"{eda_hz:g} Hz (agent.bench.e2e)\n"
        "license: CC0-1.0 (synthetic data generated by the emotion-agent project)\n"
        "modalities:\n  heart: {file: heart.csv}\n"
        f"  eda: {{file: eda.csv, rate_hz: {eda_hz:g}}}\n"
    )
    return folder


def write_frames(path: Path) -> Path:
    """The bundled demo session's camera frames (a real face in 128x96 Y planes, the size
    of a Pi 4 lores stream), each once in the order the session first shows it, as .npz
    under the key `lores` (N, H, W): decoded once here so the agent's process does not
    pay for the decoding."""
    import numpy as np

    from agent.sources.session import demo_session_path, load_session, read_image

    session = load_session(demo_session_path())
    files = list(dict.fromkeys(row.file for row in session.frame_rows()))
    np.savez(path, lores=np.stack([read_image(f) for f in files]))
    return path


# ---------------------------------------------------------------- the broker


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.3).close()
        return True
    except OSError:
        return False


@contextmanager
def mqtt_broker(url: str | None) -> Iterator[str]:
    """`url` if given; else a private Mosquitto on a free port for the run."""
    if url:
        yield url
        return
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(binary):
        raise SystemExit("no mosquitto binary (apt install mosquitto): pass --broker URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while not _listening("127.0.0.1", port):
                if time.monotonic() > deadline:
                    raise SystemExit("mosquitto did not start")
                time.sleep(0.05)
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


# ---------------------------------------------------------------- child: the agent


def _generated_camera(frames: Any, fps: float, clock: Any, ready: Callable[[], bool]) -> Any:
    """The camera source's threaded machinery around a paced frame generator."""
    from agent.sources.camera_capture import CapturedFrame, _ThreadedCamera
    from agent.sources.camera_config import CameraSourceConfig

    class GeneratedCamera(_ThreadedCamera):
        """`_grab` blocks until the next frame is due, as picamera2's capture_request does,
        and hands over a fresh copy of the next frame, cycling through `frames` (a real
        camera hands over a new buffer each time)."""

        def __init__(self) -> None:
            h, w = frames[0].shape[:2]
            cfg = CameraSourceConfig.model_construct(  # rates above the config's caps, ramped
                **{**CameraSourceConfig().model_dump(), "lores_size": (w, h)}
            )
            cfg.frame_rate = cfg.analysis_fps = fps
            super().__init__(cfg, clock=clock, ready=ready)
            self.fps = fps
            self.generated = 0
            self._next = 0.0

        def set_fps(self, fps: float) -> None:
            self.fps = fps
            self.cfg.frame_rate = self.cfg.analysis_fps = fps

        def _open(self) -> Any:
            self._next = time.monotonic()
            return object()

        def _grab(self, handle: Any) -> Any:
            self._next = max(self._next + 1.0 / self.fps, time.monotonic() - 1.0 / self.fps)
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.generated += 1
            self.status.extra["frames"] = self.generated
            return CapturedFrame(time.monotonic_ns(), frames[self.generated % len(frames)].copy())

        def _close(self, handle: Any) -> None:
            pass

    return GeneratedCamera()


class _AgentClock:
    """The agent's clock once `run()` has built it (a replay's scaled clock)."""

    def __init__(self, holder: dict[str, Any]) -> None:
        self.holder = holder

    @property
    def speed(self) -> float:
        return float(self.holder["agent"].clock.speed)

    def now(self) -> float:
        return float(self.holder["agent"].clock.now())

    async def sleep_until(self, t: float) -> None:
        await self.holder["agent"].clock.sleep_until(t)


class Probe:
    """Latency hooks on a running agent's instances: nothing in the runtime changes."""

    def __init__(self, agent: Any, topic_suffix: str = "/state") -> None:
        from agent.events import FaceObservation

        self.agent = agent
        self.face_ms: list[tuple[float, float]] = []  # (wall time, exposure -> face result)
        self.close_ms: list[tuple[float, float]] = []  # (wall time, aggregator.close)
        self.ack_ms: list[tuple[float, float]] = []  # (wall time of the close, close -> PUBACK)
        self._closing: tuple[float, float] | None = None  # (perf_counter, wall) of the close
        self._pending: dict[int, tuple[float, float]] = {}
        self._suffix = topic_suffix
        agg = agent.aggregator
        real_put, real_close = agg.put, agg.close

        def put(event: Any) -> None:
            if isinstance(event, FaceObservation):
                age = (agent.clock.now() - event.t) / agent.clock.speed
                self.face_ms.append((time.time(), age * 1000))
            real_put(event)

        def close(*args: Any, **kwargs: Any) -> Any:
            self._closing = (time.perf_counter(), time.time())
            state = real_close(*args, **kwargs)
            self.close_ms.append((time.time(), (time.perf_counter() - self._closing[0]) * 1000))
            return state

        agg.put, agg.close = put, close

    def on_publish(self, topic: str, payload: dict[str, Any]) -> None:
        outbox = self.agent.outbox
        if not topic.endswith(self._suffix) or self._closing is None or outbox is None:
            return
        if not getattr(outbox, "_probed", False):
            real_ack = outbox.ack

            def ack(seqs: Any) -> None:
                seqs = list(seqs)
                real_ack(seqs)
                now = time.perf_counter()
                for s in seqs:
                    closed = self._pending.pop(s, None)
                    if closed is not None:
                        self.ack_ms.append((closed[1], (now - closed[0]) * 1000))

            outbox.ack = ack
            outbox._probed = True
        self._pending[outbox.last_seq] = self._closing  # the row just put


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the agent per `spec` in this process; its figures (see `bench`)."""
    import logging

    import numpy as np

    from agent.config import AgentConfig
    from agent.runtime import Agent
    from agent.sdnotify import Notifier

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    with np.load(spec["frames"]) as data:
        frames = [np.ascontiguousarray(f) for f in data["lores"]]
    cfg = AgentConfig.model_validate(
        {
            "device": {"name": "bench", "state_dir": spec["state_dir"]},
            "mqtt": {"broker": spec["broker"], "reconnect": {"initial_s": 0.2, "max_s": 2}},
            "sources": {"replay": {"session": spec["session"], "speed": spec["speed"]}},
            "privacy": {"consent": True},
            "runtime": {"shutdown_timeout_s": 5},
            "publish": {"stats_interval_s": 10},
        }
    )
    holder: dict[str, Any] = {}

    def faces_idle() -> bool:  # the runtime's own rule for its camera: a busy stage drops
        stage = holder["agent"].face_stage
        return stage is None or stage.idle()

    camera = None
    if spec.get("camera", True):
        camera = _generated_camera(frames, spec["schedule"][0][0], _AgentClock(holder), faces_idle)
    agent = holder["agent"] = Agent(
        cfg,
        notifier=Notifier(None, env={}),
        on_publish=lambda t, p: holder["probe"].on_publish(t, p),
        stop_at_end=spec.get("stop_at_end", False),
        duration_s=spec.get("duration_s"),
        extra_sources=[camera] if camera is not None else [],
    )
    probe = holder["probe"] = Probe(agent)
    result: dict[str, Any] = {"phases": []}

    def drops() -> int:
        stage = agent.face_stage
        cam = int(camera.status.extra.get("dropped", 0)) if camera else 0
        return cam + (stage.stats.dropped if stage else 0)

    async def drive() -> None:
        run = asyncio.create_task(agent.run())
        # measure from the first analysed frame (models loaded, MQTT up)
        deadline = time.monotonic() + 60
        while agent.face_stage is None or (camera and agent.face_stage.stats.analysed == 0):
            if run.done() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(spec.get("warmup_s", 0))
        result["ready_t"] = time.time()
        if agent.until is not None:  # a replay that ends: when, on the wall clock
            left = (agent.until - agent.clock.now()) / agent.clock.speed
            result["session_end_t"] = time.time() + left
        for fps, seconds in spec["schedule"]:
            if camera is not None:
                camera.set_fps(fps)
            stage = agent.face_stage
            before = {
                "cpu": time.process_time(),
                "wall": time.monotonic(),
                "t": time.time(),
                "drops": drops(),
                "generated": camera.generated if camera else 0,
                "analysed": stage.stats.analysed if stage else 0,
            }
            await asyncio.wait({run}, timeout=seconds)  # a replay to its end may stop it
            wall = time.monotonic() - before["wall"]
            phase = {
                "camera_fps": fps,
                "seconds": round(wall, 2),
                "cpu_share": (time.process_time() - before["cpu"]) / wall,
                "frames": (camera.generated if camera else 0) - before["generated"],
                "analysed": (stage.stats.analysed if stage else 0) - before["analysed"],
                "dropped": drops() - before["drops"],
                "t0": before["t"],
                "t1": time.time(),
                **proc_status(),
            }
            result["phases"].append(phase)
            if run.done():
                break
            if spec.get("stop_on_drop") and len(result["phases"]) > 1 and phase["dropped"]:
                break
        if not spec.get("stop_at_end"):
            agent.request_stop()
        result["exit"] = await run

    asyncio.run(drive())
    stats = agent.final_stats or {}
    result.update(
        runtime=agent.face_stage.stats.runtime if agent.face_stage else None,
        inference_ms=agent.face_stage.stats.inference_ms if agent.face_stage else None,
        face_ms=probe.face_ms,
        close_ms=probe.close_ms,
        ack_ms=probe.ack_ms,
        states_made=agent.states_made,
        mqtt=stats.get("mqtt"),
        outbox=stats.get("outbox"),
        tasks={n: s.failures for n, s in agent.supervisor.states.items()},
        end=proc_status(),
        modules=[m for m in HEAVY_MODULES if m in sys.modules],
    )
    return result


def spawn_child(spec: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `child_run(spec)` in a fresh interpreter; (process, where its result goes)."""
    out = Path(spec["state_dir"]) / "result.json"
    spec_file = Path(spec["state_dir"]) / "spec.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.bench.e2e", "--child", str(spec_file), str(out)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return proc, out


def run_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    proc, out = spawn_child(spec)
    try:
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    if code != 0 or not out.exists():
        raise RuntimeError(f"the agent child failed (exit {code})")
    return json.loads(out.read_text())


# ---------------------------------------------------------------- statistics


def percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    v = sorted(values)

    def q(p: float) -> float:  # nearest-rank: an observed value, never an interpolation
        return v[min(len(v) - 1, max(0, round(p / 100 * len(v) + 0.5) - 1))]

    return {
        "n": len(v),
        "p50": round(q(50), 2),
        "p95": round(q(95), 2),
        "p99": round(q(99), 2),
        "max": round(v[-1], 2),
    }


def _within(samples: list[list[float]], t0: float, t1: float) -> list[float]:
    return [ms for t, ms in samples if t0 <= t <= t1]


# ---------------------------------------------------------------- peers


def physio_peers(session: Path, windows: int, repeats: int = 3) -> dict[str, Any]:
    """Ours and NeuroKit2 on the same 60 s HRV and EDA windows the agent analysed."""
    import numpy as np

    from agent.bench.eda_eval import nk_features
    from agent.physio.eda import eda_features
    from agent.physio.hrv import hrv_features
    from agent.physio.rr import clean_rr

    try:
        import neurokit2 as nk
    except ImportError:
        return {"skipped": "neurokit2 is not installed: pip install 'emotion-agent[bench]'"}
    rr_rows: list[tuple[float, float]] = []
    with open(session / "heart.csv") as f:
        for r in csv.DictReader(f):
            rr_rows += [(float(r["t"]), float(x)) for x in r["rr_ms"].split()]
    with open(session / "eda.csv") as f:
        eda = np.array([float(r["microsiemens"]) for r in csv.DictReader(f)])
    rate = NOMINAL["eda_hz"]
    rr_t = np.array([t for t, _ in rr_rows])
    rr_v = np.array([v for _, v in rr_rows])
    ends = [60.0 + 10.0 * i for i in range(max(1, windows))]

    def timed(fn: Callable[[], object]) -> float:
        best = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best.append((time.perf_counter() - t0) * 1000)
        return statistics.median(best)

    def ours_hrv(rr: Any) -> object:  # what a window does: clean, then the features
        cleaned = clean_rr(rr)
        return hrv_features(cleaned.rr_ms, segments=cleaned.segments)

    rows: dict[str, list[float]] = {"hrv_ours": [], "hrv_nk": [], "eda_ours": [], "eda_nk": []}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for end in ends:
            rr = rr_v[(rr_t > end - 60.0) & (rr_t <= end)]
            x = eda[int((end - 60.0) * rate) : int(end * rate)]
            d = {"RRI": rr, "RRI_Time": np.cumsum(rr) / 1000.0}
            rows["hrv_ours"].append(timed(lambda rr=rr: ours_hrv(rr)))
            rows["hrv_nk"].append(timed(lambda d=d: nk.hrv(d)))
            rows["eda_ours"].append(timed(lambda x=x: eda_features(x, rate)))
            rows["eda_nk"].append(timed(lambda x=x: nk_features(nk, x, rate)))
    out: dict[str, Any] = {"windows": len(ends), "window_s": 60.0, "every_s": 10.0}
    for kind in ("hrv", "eda"):
        ours, peer = statistics.median(rows[f"{kind}_ours"]), statistics.median(rows[f"{kind}_nk"])
        out[kind] = {
            "ours_ms": round(ours, 3),
            "neurokit2_ms": round(peer, 1),
            "ratio": round(peer / ours, 1),
            # the same analysis every 10 s, as a share of one core
            "ours_cpu_share": ours / 10000.0,
            "neurokit2_cpu_share": peer / 10000.0,
        }
    out["neurokit2"] = nk.__version__
    return out


def face_peers(peer_python: str | None, frames: int) -> dict[str, Any]:
    """faces_bench (its own frames: scikit-image's astronaut, framed as a camera would):
    ours per runtime and fer, in child processes; skipped, saying how to install it,
    without scikit-image."""
    import importlib.util

    from agent.bench import faces_bench

    if importlib.util.find_spec("skimage") is None:
        return {
            "skipped": "scikit-image is not installed (faces_bench frames its astronaut "
            "photograph): pip install 'emotion-agent[bench]'"
        }

    peer = peer_python or os.environ.get("EMOTION_AGENT_FER_PYTHON")
    if peer is None and importlib.util.find_spec("fer") is not None:
        peer = sys.executable
    ns = argparse.Namespace(
        frames=frames,
        warmup=8,
        threads=1,
        runtime=None,
        peer=peer is not None,
        peer_python=peer,
        peer_mode=["fer"],
        child_timeout=600.0,
    )
    report = faces_bench.run_bench(ns, log=lambda *_: None)
    # the camera's frame: the 128x96 lores Y plane; fer also with min_face_size=24, since
    # its default (50 px) misses this ~30 px face and then never classifies anything
    formats = {"lores": "", faces_bench.LORES_MIN24: " (min_face_size=24)"}
    out: dict[str, Any] = {"frames": frames, "pipelines": {}}
    for name, p in report["pipelines"].items():
        for fmt, note in formats.items():
            f = p["formats"].get(fmt)
            if f:
                out["pipelines"][name + note] = {
                    "ms_median": round(f["ms_median"], 2),
                    "ms_p95": round(f["ms_p95"], 2),
                    "peak_rss_mb": round(p.get("vmhwm_mb") or 0, 1),
                    "found_faces": all(d["faces"] > 0 for d in f["detections"].values()),
                }
    out["ratios"] = {
        f"{c['peer']}{formats[c['format']]} / {c['ours']}": {
            "ms_median": round(c["ratio_median"], 1),
            "memory": None if c["memory_ratio"] is None else round(c["memory_ratio"], 1),
            "peer_found_faces": c["peer_found_faces"],
        }
        for c in report["comparison"].values()
        if c["format"] in formats
    }
    if peer is None:
        out["fer"] = (
            "skipped: no interpreter that imports fer (pass --peer-python PATH; fer needs "
            "TensorFlow and opencv<5, see agent/bench/faces_bench.py)"
        )
    return out


# ---------------------------------------------------------------- the benchmark


def bench(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    ramp = [] if args.no_ramp else [(fps, args.ramp_seconds) for fps in RAMP_FPS]
    total = args.warmup + args.seconds + sum(s for _, s in ramp) + 30
    with tempfile.TemporaryDirectory(prefix="emotion-agent-bench-") as tmp:
        tmpd = Path(tmp)
        session = write_session(tmpd / "session", total)
        frames = write_frames(tmpd / "frames.npz")
        with mqtt_broker(args.broker) as url:
            log(f"# agent at nominal rates for {args.seconds:g} s (+{args.warmup:g} s warm-up)")
            spec = {
                "session": str(session),
                "frames": str(frames),
                "broker": url,
                "state_dir": str(tmpd / "state"),
                "speed": 1.0,
                "warmup_s": args.warmup,
                "schedule": [(NOMINAL["camera_fps"], args.seconds), *ramp],
                "stop_on_drop": True,
            }
            child = run_child(spec, timeout=total + 120)
        nominal = child["phases"][0]
        t0, t1 = nominal["t0"], nominal["t1"]
        report: dict[str, Any] = {
            "environment": {
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_avg": os.getloadavg(),
                "tflite_runtime": child["runtime"],
                "large_libraries_loaded": child["modules"],
                "broker": "private mosquitto" if not args.broker else args.broker,
            },
            "nominal": {
                **NOMINAL,
                "seconds": nominal["seconds"],
                "cpu_share": round(nominal["cpu_share"], 4),
                "peak_rss_mb": round(nominal["vmhwm_mb"], 1),
                "rss_mb": round(nominal["vmrss_mb"], 1),
                "threads": nominal["threads"],
                "fds": nominal["fds"],
                "frames": nominal["frames"],
                "analysed": nominal["analysed"],
                "dropped": nominal["dropped"],
                "states_made": child["states_made"],
                "published": (child.get("mqtt") or {}).get("published"),
            },
            "latency_ms": {
                "capture_to_face": percentiles(_within(child["face_ms"], t0, t1)),
                "window_close_to_publish_ack": percentiles(_within(child["ack_ms"], t0, t1)),
                "window_analysis": percentiles(_within(child["close_ms"], t0, t1)),
                "inference_ema_ms": None
                if child["inference_ms"] is None
                else round(child["inference_ms"], 2),
            },
            "task_failures": child["tasks"],
        }
        ramp_rows = [
            {
                "fps": p["camera_fps"],
                "achieved_fps": round(p["analysed"] / p["seconds"], 1),
                "dropped": p["dropped"],
                "cpu_share": round(p["cpu_share"], 3),
                "capture_to_face_p95_ms": percentiles(_within(child["face_ms"], p["t0"], p["t1"]))[
                    "p95"
                ],
            }
            for p in child["phases"][1:]
        ]
        clean = [
            r["fps"] for r in ramp_rows if r["dropped"] == 0 and r["achieved_fps"] >= 0.9 * r["fps"]
        ]
        nominal_clean = nominal["dropped"] == 0
        report["camera_ramp"] = {
            "steps": ramp_rows,
            "max_fps_without_drops": max(clean)
            if clean
            else (NOMINAL["camera_fps"] if nominal_clean else None),
            "ramp_seconds_per_step": args.ramp_seconds,
            "note": "rates above 60 fps exceed camera.analysis_fps's cap: capacity, not config",
        }
        peers: dict[str, Any] = {}
        if not args.no_peers:
            log("# peers: NeuroKit2 on the same HRV/EDA windows")
            peers["physio"] = physio_peers(session, windows=int(args.seconds // 10) or 1)
            log("# peers: faces_bench (ours and fer) on the same frames")
            try:
                peers["faces"] = face_peers(args.peer_python, args.peer_frames)
            except (RuntimeError, SystemExit) as exc:
                peers["faces"] = {"skipped": str(exc)[-500:]}
        report["peers"] = peers
        n = report["nominal"]
        ack = report["latency_ms"]["window_close_to_publish_ack"]
        report["goals"] = [
            {
                "name": "agent CPU, share of one core",
                "goal": "<= 10 %",
                "value": n["cpu_share"],
                "shown": f"{n['cpu_share'] * 100:.1f} %",
                "met": n["cpu_share"] <= GOALS["cpu_share"],
            },
            {
                "name": "agent peak RSS (VmHWM)",
                "goal": "<= 100 MB",
                "value": n["peak_rss_mb"],
                "shown": f"{n['peak_rss_mb']:.1f} MB",
                "met": n["peak_rss_mb"] <= GOALS["peak_rss_mb"],
            },
            {
                "name": "window close -> publish ack, p95",
                "goal": "< 100 ms",
                "value": ack["p95"],
                "shown": f"{_f(ack['p95'], '.1f')} ms (n={ack['n']})",
                "met": ack["p95"] is not None and ack["p95"] < GOALS["close_to_ack_p95_ms"],
            },
        ]
        return report


def _f(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def format_report(r: dict[str, Any]) -> str:
    env, n, lat = r["environment"], r["nominal"], r["latency_ms"]
    lines = [
        f"emotion-agent bench: {n['seconds']:.0f} s at nominal rates (camera "
        f"{n['camera_fps']:g} fps, heart {n['heart_hz']:g} Hz, EDA {n['eda_hz']:g} Hz); "
        f"{env['machine']}, {env['cpus']} CPUs, load {env['load_avg'][0]:.1f}, "
        f"TFLite {env['tflite_runtime']}, {env['broker']}",
        "large libraries in the agent: " + (", ".join(env["large_libraries_loaded"]) or "none"),
        "",
        f"{'':<40} {'measured':>16}  {'goal':<14} verdict",
    ]
    for g in r["goals"]:
        lines.append(
            f"{g['name']:<40} {g['shown']:>16}  {g['goal']:<14} {'ok' if g['met'] else 'MISSED'}"
        )
    lines.append(
        f"{'threads / fds / RSS at end of nominal':<40} "
        f"{n['threads']:>5} / {n['fds']} / {n['rss_mb']:.0f} MB"
    )
    lines.append(
        f"{'frames: generated / analysed / dropped':<40} "
        f"{n['frames']} / {n['analysed']} / {n['dropped']}; states {n['states_made']}, "
        f"published {n['published']}"
    )
    lines += ["", f"{'latency (ms)':<40} {'p50':>8} {'p95':>8} {'p99':>8} {'n':>5}"]
    for key, label in (
        ("capture_to_face", "camera exposure -> face result"),
        ("window_close_to_publish_ack", "window close -> publish PUBACK"),
        ("window_analysis", "window analysis (aggregator.close)"),
    ):
        p = lat[key]
        lines.append(
            f"{label:<40} {_f(p['p50'], '.2f'):>8} {_f(p['p95'], '.2f'):>8} "
            f"{_f(p['p99'], '.2f'):>8} {p['n']:>5}"
        )
    ramp = r["camera_ramp"]
    if ramp["steps"]:
        lines += ["", "camera ramp (fps: achieved, dropped, CPU, exposure->face p95 ms)"]
        for s in ramp["steps"]:
            lines.append(
                f"  {s['fps']:>5g}: {s['achieved_fps']:>6.1f} fps, {s['dropped']:>4} dropped, "
                f"{s['cpu_share'] * 100:5.1f} % CPU, {_f(s['capture_to_face_p95_ms'], '.2f')} ms"
            )
    lines.append(f"highest camera rate without drops: {_f(ramp['max_fps_without_drops'], 'g')} fps")
    peers = r.get("peers") or {}
    if peers:
        lines += ["", "peers, same inputs, same run (ratio = peer / ours)"]
        ph = peers.get("physio", {})
        if "skipped" in ph:
            lines.append(f"  NeuroKit2: {ph['skipped']}")
        elif ph:
            for kind, label in (("hrv", "HRV"), ("eda", "EDA at 8 Hz")):
                k = ph[kind]
                lines.append(
                    f"  {label} of a 60 s window: ours {k['ours_ms']:.2f} ms, NeuroKit2 "
                    f"{ph['neurokit2']} {k['neurokit2_ms']:.0f} ms: {k['ratio']:g}x; every 10 s "
                    f"that is {k['ours_cpu_share'] * 100:.3f} % vs "
                    f"{k['neurokit2_cpu_share'] * 100:.1f} % of a core"
                )
        fc = peers.get("faces", {})
        if "skipped" in fc:
            lines.append(f"  faces: {fc['skipped']}")
        elif fc:
            for name, p in fc["pipelines"].items():
                lines.append(
                    f"  faces {name}, 128x96 lores frame: {p['ms_median']:.2f} ms median, "
                    f"{p['ms_p95']:.2f} ms p95, peak RSS {p['peak_rss_mb']:.0f} MB"
                    + ("" if p["found_faces"] else ", found no face")
                )
            for name, ratio in fc["ratios"].items():
                found = "" if ratio["peer_found_faces"] else " (fer found no face)"
                lines.append(
                    f"  {name}: {ratio['ms_median']:g}x time, {_f(ratio['memory'], 'g')}x "
                    f"memory{found}"
                )
            if "fer" in fc:
                lines.append(f"  fer: {fc['fer']}")
    return "\n".join(lines)


def command_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options `bench` and `soak` share: where the broker is, JSON or a table."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--broker", help="use this broker (default: a private mosquitto)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        spec = json.loads(Path(argv[1]).read_text())
        result = child_run(spec)
        Path(argv[2]).write_text(json.dumps(result))
        return 0
    p = command_parser("emotion-agent bench", __doc__)
    p.add_argument("--seconds", type=float, default=60.0, help="at nominal rates (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds not measured (default 5)")
    p.add_argument("--ramp-seconds", type=float, default=4.0, help="per camera rate step (4)")
    p.add_argument("--no-ramp", action="store_true", help="skip the camera rate ramp")
    p.add_argument("--no-peers", action="store_true", help="skip NeuroKit2 and fer")
    p.add_argument("--peer-python", help="an interpreter that can import fer")
    p.add_argument("--peer-frames", type=int, default=100, help="frames per face pipeline")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = bench(args, log)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
