"""`emotion-agent`: the command line, its parser and its entry point (`main`).

This module builds the argparse parser, hands `bench` and `soak` (which parse options of
their own) to their modules, and dispatches every other subcommand to its function in
agent/commands.py. Exit statuses: 0 success, 1 runtime failure, 2 bad usage or
configuration (with a message that names the file, line and key; never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from agent import __version__, commands
from agent.commands import UsageError
from agent.config_mqtt import parse_broker_url


def _broker(url: str) -> str:
    try:
        parse_broker_url(url)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad broker URL {url!r}: {exc}") from None
    return url


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotion-agent",
        description="On-device emotion sensing; publishes only aggregated states over MQTT.",
    )
    p.add_argument("--version", action="version", version=f"emotion-agent {__version__}")
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: from config, else info",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the agent (what the systemd service does)")
    r.add_argument("-c", "--config", required=True, metavar="FILE")

    c = sub.add_parser("check-config", help="validate a configuration file and exit")
    c.add_argument("config", metavar="FILE")

    s = sub.add_parser("schema", help="print a JSON Schema: the config file or an MQTT payload")
    s.add_argument("what", choices=["config", "state", "summary", "stats", "availability"])

    rp = sub.add_parser("replay", help="replay a recorded session through the pipeline, then exit")
    rp.add_argument("session", metavar="SESSION")
    rp.add_argument(
        "-c", "--config", metavar="FILE", help="settings to use (its sources are replaced)"
    )
    rp.add_argument(
        "--speed", type=_positive, default=None, help="1 = real time (default: config's or 1)"
    )
    rp.add_argument(
        "--duration", type=_positive, metavar="S", help="replay only the first S seconds"
    )
    rp.add_argument("--broker", type=_broker, metavar="URL", help="override mqtt.broker")
    rp.add_argument(
        "--plot", metavar="FILE", help="draw the published states as a PNG timeline (extra: plot)"
    )

    an = sub.add_parser("analyze", help="print HRV and EDA features of a recording as JSON")
    an.add_argument("--rr", metavar="FILE", help="CSV, one RR interval in ms per row")
    an.add_argument("--eda", metavar="FILE", help="CSV, one skin conductance in µS per row")
    an.add_argument("--eda-rate", type=_positive, metavar="HZ", help="sample rate of --eda")
    an.add_argument("--window", type=_positive, metavar="S", help="consecutive windows of S s")
    an.add_argument("--spectral", choices=["welch", "lomb"], default="welch")
    an.add_argument(
        "--no-correction", action="store_true", help="features of the RR exactly as given"
    )

    fc = sub.add_parser("faces", help="detect faces and read expressions in photos (JSON)")
    fc.add_argument("images", nargs="+", metavar="IMAGE", help="PGM, PPM, PNG or JPEG")
    fc.add_argument("-c", "--config", metavar="FILE", help="for models.* (runtime, files)")

    ev = sub.add_parser(
        "evaluate-expressions", help="accuracy of the expression model on labelled 48x48 faces"
    )
    ev.add_argument("--npz", required=True, metavar="PATH")
    ev.add_argument("--x", required=True, metavar="KEY", help="array of faces (N, 48, 48)")
    ev.add_argument("--y", required=True, metavar="KEY", help="labels in FER2013 order")
    ev.add_argument(
        "--model",
        action="append",
        metavar="FILE",
        help="default: the shipped default int8 model; repeat it to compare models in one run",
    )
    ev.add_argument(
        "--runtime", choices=["auto", "tflite-runtime", "ai-edge-litert"], default="auto"
    )

    for verb, text in (
        ("pause", "pause analysis and publishing on this device (the local pause file)"),
        ("resume", "lift the local pause (an MQTT pause, if any, stays until resumed over MQTT)"),
    ):
        pz = sub.add_parser(verb, help=text)
        pz.add_argument("-c", "--config", required=True, metavar="FILE")

    sc = sub.add_parser("scan", help="list nearby heart-rate straps and configured EDA sensors")
    sc.add_argument("--seconds", type=_positive, default=10.0, help="how long to listen (10)")
    sc.add_argument("-c", "--config", metavar="FILE", help="for the EDA decoder and adapter")
    sc.add_argument("--adapter", metavar="hciN", help="Bluetooth adapter (default: BlueZ's)")
    sc.add_argument("--all", action="store_true", help="list every advertising device")
    sc.add_argument("--json", action="store_true", help="print JSON instead of a table")

    d = sub.add_parser(
        "demo",
        help="replay the bundled session (a real face, real physiology) to a broker and show "
        "what is published",
    )
    d.add_argument("--broker", type=_broker, default="mqtt://localhost:1883", metavar="URL")
    d.add_argument("--speed", type=_positive, default=20.0, help="default 20 (8 minutes in 24 s)")
    d.add_argument(
        "--duration", type=_positive, metavar="S", help="replay only the first S seconds"
    )
    d.add_argument(
        "--state-dir", metavar="DIR", help="outbox location (default: a temporary folder)"
    )
    d.add_argument(
        "--plot", metavar="FILE", help="draw the published states as a PNG timeline (extra: plot)"
    )
    d.add_argument(
        "--homeassistant",
        action="store_true",
        help="announce the demo device to Home Assistant (MQTT discovery)",
    )
    d.add_argument(
        "--homeassistant-remove",
        action="store_true",
        help="remove the demo device from Home Assistant, then exit (no replay)",
    )

    dr = sub.add_parser("doctor", help="check this machine can run the agent; exit 1 on a failure")
    dr.add_argument("-c", "--config", metavar="FILE", help="/etc/emotion-agent/config.yaml")
    dr.add_argument("--json", action="store_true", help="print JSON instead of a report")

    sub.add_parser("bench", help="end-to-end cost, latency and peers (see bench --help)")
    sub.add_parser("soak", help="an hour of replay: memory, fds, threads flat? (soak --help)")
    sub.add_parser(
        "evaluate-faces",
        help="labelled photos through the live face path, per group (evaluate-faces --help)",
    )
    sub.add_parser(
        "evaluate-stress",
        help="replay labelled recordings and score the published stress (evaluate-stress --help)",
    )
    return p


# measurement commands with options of their own: `emotion-agent bench --help`
PASS_THROUGH = {
    "bench": "agent.bench.e2e",
    "soak": "agent.bench.soak",
    "evaluate-faces": "agent.bench.faces_eval",
    "evaluate-stress": "agent.bench.stress_eval",
}

# every other command: its function in agent/commands.py
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "schema": commands.cmd_schema,
    "check-config": commands.cmd_check_config,
    "run": commands.cmd_run,
    "replay": commands.cmd_replay,
    "doctor": commands.cmd_doctor,
    "demo": commands.cmd_demo,
    "pause": commands.cmd_pause,
    "resume": commands.cmd_pause,
    "scan": commands.cmd_scan,
    "faces": commands.cmd_vision,
    "evaluate-expressions": commands.cmd_vision,
    "analyze": commands.cmd_analyze,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in PASS_THROUGH:
        import importlib

        return int(importlib.import_module(PASS_THROUGH[argv[0]]).main(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except UsageError as exc:
        print(f"emotion-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    command = COMMANDS.get(args.command)
    if command is None:
        raise UsageError(f"unknown command {args.command}")
    return command(args)


if __name__ == "__main__":
    raise SystemExit(main())
