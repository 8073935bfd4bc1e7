"""Soak: an hour of session through the whole agent at high speed, memory sampled.

    emotion-agent soak [--minutes 60] [--speed 20] [--interval 2] [--broker URL] [--json]

The agent runs in a child process exactly as `emotion-agent bench` runs it (real runtime,
face stage and TFLite models, outbox, MQTT to a real broker: a private Mosquitto, or
`--broker`): heart and EDA replayed from the bundled demo session looped to `--minutes`
(EDA at 8 Hz) at `--speed` times real time, and the camera source's threaded machinery
delivering a photograph at 5 frames per wall-clock second throughout. A subscriber counts
the published states and checks their sequence numbers.

Every `--interval` seconds this process samples the child's resident memory (VmRSS),
open file descriptors and threads from /proc. After the warm-up (the first
`--warmup-fraction` of the run: models, allocator pools and the HRV/EDA windows filling
up), the verdict is:

- RSS grows by at most 5 %: the median of the last five samples against the median of
  the first five after warm-up;
- file descriptors and threads are flat: the same medians differ by at most one, and the
  maximum of the second half exceeds that of the first half by at most one;
- every state the agent made reached the broker, in order.

It prints the samples' summary and the verdict, and exits 1 on a failure. Not part of the
test suite (it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.bench.e2e import (
    command_parser,
    mqtt_broker,
    proc_status,
    spawn_child,
    write_frames,
    write_session,
)

RSS_GROWTH_LIMIT = 0.05


class StateCounter:
    """Subscribes to the agent's states and records their sequence numbers."""

    def __init__(self, url: str, topic: str) -> None:
        import paho.mqtt.client as paho

        from agent.config_mqtt import parse_broker_url

        addr = parse_broker_url(url)
        self.seqs: list[int] = []
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-counter")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(addr.host, addr.port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.seqs.append(int(json.loads(msg.payload)["seq"]))

    def close(self) -> list[int]:
        self.client.loop_stop()
        self.client.disconnect()
        with self._lock:
            return list(self.seqs)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def verdict(samples: list[dict[str, float]], warmup_fraction: float) -> dict[str, Any]:
    """The soak's figures and pass/fail from the samples (t, rss, fds, threads)."""
    t_end = samples[-1]["t"]
    settled = [s for s in samples if s["t"] >= warmup_fraction * t_end]
    if len(settled) < 10:
        return {"ok": False, "reason": f"only {len(settled)} samples after warm-up"}
    head, tail = settled[:5], settled[-5:]
    half = len(settled) // 2
    out: dict[str, Any] = {"judged": len(samples), "after_warmup": len(settled)}
    rss0, rss1 = _median([s["rss_mb"] for s in head]), _median([s["rss_mb"] for s in tail])
    growth = (rss1 - rss0) / rss0
    ts = [s["t"] for s in settled]
    slope = statistics.linear_regression(ts, [s["rss_mb"] for s in settled]).slope
    out["rss"] = {
        "first_mb": round(samples[0]["rss_mb"], 1),
        "after_warmup_mb": round(rss0, 1),
        "end_mb": round(rss1, 1),
        "max_mb": round(max(s["rss_mb"] for s in samples), 1),
        "growth": round(growth, 4),
        "slope_mb_per_min": round(slope * 60, 3),
        "ok": growth <= RSS_GROWTH_LIMIT,
    }
    for key in ("fds", "threads"):
        a, b = _median([s[key] for s in head]), _median([s[key] for s in tail])
        first_half = max(s[key] for s in settled[:half])
        second_half = max(s[key] for s in settled[half:])
        out[key] = {
            "after_warmup": a,
            "end": b,
            "min": min(s[key] for s in settled),
            "max": max(s[key] for s in settled),
            "ok": abs(b - a) <= 1 and second_half <= first_half + 1,
        }
    out["ok"] = all(out[k]["ok"] for k in ("rss", "fds", "threads"))
    return out


def soak(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    session_s = args.minutes * 60.0
    wall_s = session_s / args.speed
    with tempfile.TemporaryDirectory(prefix="emotion-agent-soak-") as tmp:
        tmpd = Path(tmp)
        session = write_session(tmpd / "session", session_s)
        frames = write_frames(tmpd / "frames.npz")
        with mqtt_broker(args.broker) as url:
            counter = StateCounter(url, "emotion-agent/bench/state")
            spec = {
                "session": str(session),
                "frames": str(frames),
                "broker": url,
                "state_dir": str(tmpd / "state"),
                "speed": args.speed,
                "warmup_s": 0,
                "stop_at_end": True,
                "duration_s": session_s,
                "schedule": [(5.0, wall_s + 120)],
                "camera": not args.no_camera,
            }
            log(
                f"# soak: {args.minutes:g} min of session at {args.speed:g}x "
                f"(~{wall_s / 60:.1f} min), sampling every {args.interval:g} s"
            )
            proc, out = spawn_child(spec)
            samples: list[dict[str, float]] = []
            started = time.monotonic()
            try:
                while proc.poll() is None:
                    try:
                        s = proc_status(proc.pid)
                    except (FileNotFoundError, ProcessLookupError):
                        break
                    samples.append(
                        {
                            "t": round(time.monotonic() - started, 2),
                            "wall": time.time(),
                            "rss_mb": s["vmrss_mb"],
                            "hwm_mb": s["vmhwm_mb"],
                            "fds": s["fds"],
                            "threads": s["threads"],
                        }
                    )
                    time.sleep(args.interval)
                code = proc.wait(wall_s + 300)
            finally:
                if proc.poll() is None:
                    proc.kill()
            time.sleep(1.0)  # the last acknowledgements reach the subscriber
            seqs = counter.close()
        if code != 0 or not out.exists():
            raise SystemExit(f"the agent child failed (exit {code})")
        child = json.loads(out.read_text())
    # judged: from the first analysed frame to the end of the session (not the shutdown);
    # the first `warmup_fraction` of that is warm-up (windows filling, allocator pools)
    lo, hi = child.get("ready_t", 0.0), child.get("session_end_t", float("inf"))
    running = [s for s in samples if lo <= s["wall"] <= hi]
    for s in running:
        s["t"] = round(s["wall"] - lo, 2)
    result = verdict(running, args.warmup_fraction) if running else {"ok": False}
    result["samples"] = len(samples)
    made = child["states_made"]
    delivered = sorted(set(seqs))
    states_ok = delivered == list(range(1, made + 1))
    result["states"] = {
        "made": made,
        "delivered": len(delivered),
        "duplicates": len(seqs) - len(delivered),
        "in_order": seqs == sorted(seqs),
        "ok": states_ok,
    }
    last = child["phases"][-1] if child["phases"] else {}
    result["run"] = {
        "session_minutes": args.minutes,
        "speed": args.speed,
        "wall_s": round(samples[-1]["t"], 1) if samples else None,
        "interval_s": args.interval,
        "frames_analysed": last.get("analysed"),
        "frames_dropped": last.get("dropped"),
        "cpu_share": round(last["cpu_share"], 3) if last else None,
        "task_failures": {k: v for k, v in child["tasks"].items() if v},
    }
    result["ok"] = bool(result.get("ok")) and states_ok and child.get("exit") == 0
    result["series"] = [
        {k: s[k] for k in ("t", "rss_mb", "fds", "threads")}
        for s in samples[:: max(1, len(samples) // 40)]
    ]
    return result


def format_report(r: dict[str, Any]) -> str:
    run = r["run"]
    head = (
        f"emotion-agent soak: {run['session_minutes']:g} min of session at {run['speed']:g}x in "
        f"{run['wall_s']} s, {r.get('samples')} samples every {run['interval_s']:g} s, "
        f"{r.get('judged')} while the session ran, {r.get('after_warmup')} after warm-up"
    )
    lines = [head]
    if "rss" in r:
        m = r["rss"]
        lines.append(
            f"RSS      first {m['first_mb']:.1f} MB, after warm-up {m['after_warmup_mb']:.1f} "
            f"MB, end {m['end_mb']:.1f} MB, max {m['max_mb']:.1f} MB: growth "
            f"{m['growth'] * 100:+.2f} % (limit +5 %), slope {m['slope_mb_per_min']:+.3f} MB/min  "
            f"{'ok' if m['ok'] else 'FAIL'}"
        )
        for key in ("fds", "threads"):
            f = r[key]
            lines.append(
                f"{key:<8} after warm-up {f['after_warmup']:g}, end {f['end']:g}, range "
                f"{f['min']:g}-{f['max']:g}: {'flat' if f['ok'] else 'NOT flat'}"
            )
    else:
        lines.append(f"no verdict: {r.get('reason')}")
    st = r["states"]
    lines.append(
        f"states   {st['made']} made, {st['delivered']} delivered by seq, {st['duplicates']} "
        f"duplicate(s), {'in order' if st['in_order'] else 'OUT OF ORDER'}  "
        f"{'ok' if st['ok'] else 'FAIL'}"
    )
    lines.append(
        f"agent    {run['frames_analysed']} frames analysed, {run['frames_dropped']} dropped, "
        f"CPU {run['cpu_share'] * 100 if run['cpu_share'] is not None else 0:.1f} % of a core, "
        f"task failures: {run['task_failures'] or 'none'}"
    )
    lines.append(f"verdict: {'PASS' if r['ok'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = command_parser("emotion-agent soak", __doc__)
    p.add_argument("--minutes", type=float, default=60.0, help="session minutes (default 60)")
    p.add_argument("--speed", type=float, default=20.0, help="replay speed (default 20)")
    p.add_argument("--interval", type=float, default=2.0, help="sampling interval, s (2)")
    p.add_argument("--warmup-fraction", type=float, default=0.2, help="of the run not judged (0.2)")
    p.add_argument("--no-camera", action="store_true", help="heart and EDA only")
    args = p.parse_args(argv)
    report = soak(args, lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
