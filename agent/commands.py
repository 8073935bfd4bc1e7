"""What each `emotion-agent` subcommand does, once agent/cli.py has parsed its arguments.

One `cmd_*` function per subcommand (pause and resume share one, as do faces and
evaluate-expressions), each taking the parsed arguments and returning the exit status,
with what they share: reading the configuration, running the agent (live, replayed or the
demo) and reporting what it published, the optional PNG timeline, and the logging setup
(journald priorities under systemd). A problem the user must fix is raised as
`UsageError`, which agent/cli.py prints without a traceback and turns into exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from agent.config import AgentConfig, ReplayConfig, config_schema
from agent.config_loader import ConfigError, load_config


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message` for journald (it adds time and unit itself)."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", "\n  ")
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{text}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho's own chatter is debug-level noise unless asked for
    logging.getLogger("agent.mqtt.paho").setLevel(max(logging.WARNING, root.level))


class UsageError(Exception):
    """A problem the user must fix: printed without a traceback, exit status 2."""


def _load(path: str) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UsageError(
            f"configuration error{'s' if len(exc.problems) > 1 else ''}:\n" + str(exc)
        ) from None


def cmd_schema(args: argparse.Namespace) -> int:
    from agent.contract import schema

    print(json.dumps(config_schema() if args.what == "config" else schema(args.what), indent=2))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    print(
        f"{args.config}: OK (device {cfg.device.name}, broker {cfg.mqtt.broker}, "
        f"topics {cfg.topic_prefix()}/..., "
        f"consent {'given' if cfg.privacy.consent else 'NOT given'})"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    setup_logging(args.log_level or cfg.log_level)
    return _run(cfg)


def cmd_replay(args: argparse.Namespace) -> int:
    if args.plot:
        _plot_check(args.plot)  # now, not after a replay the user waited for
    cfg = _load(args.config) if args.config else AgentConfig()
    speed = args.speed or (cfg.sources.replay.speed if cfg.sources.replay else 1.0)
    overrides: dict[str, Any] = {
        "sources": cfg.sources.model_copy(
            update={"replay": ReplayConfig(session=args.session, speed=speed)}
        )
    }
    if args.broker:
        overrides["mqtt"] = cfg.mqtt.model_copy(update={"broker": args.broker})
    cfg = cfg.model_copy(update=overrides)
    if args.plot and not cfg.privacy.consent:
        raise UsageError(
            "--plot draws the published states, and with privacy.consent false none is "
            "published: set it to true in the file given with -c"
        )
    setup_logging(args.log_level or cfg.log_level)
    states: list[dict[str, Any]] = []
    code = _run(cfg, stop_at_end=True, duration=args.duration, echo=True, states=states)
    return _plot(args.plot, states, args.session, code) if args.plot else code


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent.doctor import main as doctor

    return doctor(args.config, args.json)


def cmd_pause(args: argparse.Namespace) -> int:
    """`pause` and `resume`: create or remove the local pause file."""
    flag = _load(args.config).pause_file()
    try:
        if args.command == "pause":
            flag.parent.mkdir(parents=True, exist_ok=True)
            flag.touch()
        else:
            flag.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(
            f"{flag}: {exc.strerror or exc} (run as the service user or root)"
        ) from None
    print(f"{args.command}d: {flag} {'exists' if flag.exists() else 'removed'}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from agent.analyze import InputError, analyze

    if not args.rr and not args.eda:
        raise UsageError("analyze needs --rr FILE and/or --eda FILE --eda-rate HZ")
    try:
        result = analyze(
            args.rr, args.eda, args.eda_rate, args.window, args.spectral, not args.no_correction
        )
    except InputError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(result, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import (
        DEMO_SESSION,
        demo_config,
        remove_homeassistant,
        session_parts,
        summary_lines,
    )

    setup_logging(args.log_level or "info")
    if args.homeassistant_remove:
        try:
            n = remove_homeassistant(args.broker)
        except OSError as exc:
            print(f"emotion-agent: cannot reach {args.broker}: {exc}", file=sys.stderr)
            return 1
        print(f"removed the demo device from Home Assistant ({n} retained configs cleared)")
        return 0
    if args.plot:
        _plot_check(args.plot)
    state_dir = args.state_dir or tempfile.mkdtemp(prefix="emotion-agent-demo-")
    cfg = demo_config(args.broker, args.speed, state_dir, homeassistant=args.homeassistant)
    print(
        f"emotion-agent demo: replaying {DEMO_SESSION} (a real actor's face and a real "
        f"person's wrist physiology, see its manifest.yaml) at {args.speed:g}x; publishing to "
        f"{args.broker} under {cfg.topic_prefix()}/ (subscribe: "
        f"mosquitto_sub -t '{cfg.topic_prefix()}/#' -v)",
        file=sys.stderr,
    )
    states: list[dict[str, Any]] = []
    code = _run(cfg, stop_at_end=True, duration=args.duration, echo=True, states=states)
    print("\ndemo summary", file=sys.stderr)
    for line in summary_lines(states, session_parts()):
        print(f"  {line}", file=sys.stderr)
    if args.homeassistant:
        print(
            "Home Assistant keeps the device 'emotion-agent demo' (unavailable now that the "
            "demo has stopped); remove it with: emotion-agent demo --homeassistant-remove "
            f"--broker {args.broker}",
            file=sys.stderr,
        )
    title = "emotion-agent demo: a real face (CREMA-D) and a real body (Stress-Predict)"
    return _plot(args.plot, states, "demo", code, title) if args.plot else code


def cmd_scan(args: argparse.Namespace) -> int:
    import asyncio

    from agent.sources.ble_scan import scan

    setup_logging(args.log_level or "warning")
    cfg = _load(args.config) if args.config else AgentConfig()
    adapter = args.adapter or (cfg.sources.heart.adapter if cfg.sources.heart else None)
    eda = [cfg.sources.eda] if cfg.sources.eda else []
    try:
        rows = asyncio.run(scan(args.seconds, adapter, eda, args.all))
    except Exception as exc:  # no adapter, BlueZ not running, no permission: say which
        print(
            f"emotion-agent: Bluetooth scan failed: {type(exc).__name__}: {exc}\n"
            "Is bluetoothd running (systemctl status bluetooth) and the adapter powered "
            "(bluetoothctl power on)?",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no heart-rate strap or configured EDA sensor heard in {args.seconds:g} s")
        return 0
    print(f"{'address':<18} {'rssi':>5}  {'kinds':<10} name")
    for row in rows:
        kinds = ",".join(row["kinds"]) or "-"
        print(f"{row['address']:<18} {row['rssi']:>5}  {kinds:<10} {row['name'] or ''}")
    return 0


def cmd_vision(args: argparse.Namespace) -> int:
    from agent.sources.session import SessionError
    from agent.vision.interpreter import ModelError

    setup_logging(args.log_level or "warning")
    try:
        if args.command == "faces":
            from agent.vision.align import faces_json
            from agent.vision.expressions import ExpressionClassifier
            from agent.vision.faces import load_detector
            from agent.vision.interpreter import load_model
            from agent.vision.stage import expression_model_path, face_detector_path

            m = (_load(args.config) if args.config else AgentConfig()).models
            detector = load_detector(face_detector_path(m), runtime=m.runtime)
            classifier = ExpressionClassifier(
                load_model(expression_model_path(m), runtime=m.runtime),
                flip_average=m.flip_average,
            )
            result: Any = faces_json(args.images, detector, classifier=classifier)
        else:
            from agent.vision.expressions import evaluate_npz, evaluate_npz_models

            if args.model and len(args.model) > 1:
                result = evaluate_npz_models(
                    args.npz, args.x, args.y, args.model, runtime=args.runtime
                )
            else:
                model = args.model[0] if args.model else None
                result = evaluate_npz(args.npz, args.x, args.y, model, runtime=args.runtime)
    except (SessionError, KeyError, ValueError) as exc:
        raise UsageError(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc)) from None
    except ModelError as exc:
        print(f"emotion-agent: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        raise UsageError(f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}") from None
    print(json.dumps(result, indent=2))
    return 0


def _run(
    cfg: AgentConfig,
    stop_at_end: bool = False,
    duration: float | None = None,
    echo: bool = False,
    states: list[dict[str, Any]] | None = None,
) -> int:
    """`states`, with `echo`: collects the published state payloads."""
    from agent.runtime import Agent, run_agent
    from agent.sources.session import SessionError
    from agent.vision.interpreter import ModelError

    def show(topic: str, payload: dict[str, Any]) -> None:
        if states is not None and topic.endswith("/state"):
            states.append(payload)
        try:
            print(f"{topic} {json.dumps(payload, separators=(',', ':'))}", flush=True)
        except BrokenPipeError:  # `... | head`: the reader is gone, so stop as a pipe would
            sys.stdout = open(os.devnull, "w")
            agent.request_stop()

    agent = Agent(
        cfg, on_publish=show if echo else None, stop_at_end=stop_at_end, duration_s=duration
    )
    try:
        code = run_agent(agent)
    except SessionError as exc:
        raise UsageError(str(exc)) from None
    except ModelError as exc:  # raised before READY=1 and before MQTT: nothing half-started
        print(f"emotion-agent: cannot start: {exc}", file=sys.stderr)
        return 1
    if echo:
        _report(agent)
    return code


def _report(agent: Any) -> None:
    s = agent.final_stats or agent.stats()
    broker = agent.cfg.mqtt.broker
    delivered = s["mqtt"]["published"]
    waiting = s["outbox"]["depth"]
    line = f"{agent.states_made} state(s) made, {delivered} delivered to {broker}"
    if waiting:
        line += f", {waiting} waiting in the outbox ({agent.cfg.device.state_dir}) for the broker"
    for reason, n in agent.privacy.withheld.items():
        line += f", {n} withheld ({agent.privacy.why(reason)})"
    skipped = {
        src.name: int(src.status.extra.get("skipped", 0))
        for src in agent.sources
        if src.status.extra.get("skipped")
    }
    if skipped:  # only a restarted replay source skips rows: say so, never silently
        rows = ", ".join(f"{n} {name}" for name, n in skipped.items())
        line += f"; SKIPPED replay rows after a source restart: {rows} (see the log)"
    print(line, file=sys.stderr)
    if not s["mqtt"]["connects"]:
        print(
            f"note: no broker answered at {broker}; the lines above are exactly what would be "
            f"published. Start one (e.g. `mosquitto -p 1883`) or pass --broker mqtt://HOST:PORT.",
            file=sys.stderr,
        )


def _plot_check(path: str) -> None:
    """Before a replay: matplotlib is installed and the PNG's folder exists, or say so."""
    from agent.plot import PlotUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotUnavailable as exc:
        raise UsageError(str(exc)) from None
    folder = Path(path).expanduser().absolute().parent
    if not folder.is_dir():
        raise UsageError(f"--plot {path}: no such folder {folder}")


def _plot(
    path: str, states: list[dict[str, Any]], session: str, code: int, title: str | None = None
) -> int:
    from agent.plot import plot_timeline

    if not states:
        print(f"emotion-agent: no state was published: no plot written to {path}", file=sys.stderr)
        return code or 1
    try:
        written = plot_timeline(
            states, Path(path).expanduser(), title or f"replay of {Path(session).name}"
        )
    except (OSError, ValueError) as exc:
        print(f"emotion-agent: cannot plot to {path}: {exc}", file=sys.stderr)
        return code or 1
    print(f"timeline of {len(states)} state(s) written to {written}", file=sys.stderr)
    return code
