"""Coverage-guided fuzzing (atheris / libFuzzer) of everything that parses outside input.

    pip install -e ".[fuzz]"
    python -m agent.bench.fuzz gatt|eda|config|command|all [--seconds N] [--update-corpus]

Targets, and the only exception each may raise (anything else is a finding):

- `gatt`: Heart Rate Measurement notifications (`parse_heart_rate`) -> GattParseError;
- `eda`: the configurable EDA decoder: the first bytes choose a decoder configuration
  (header, sample format, byte order, counters, timestamps, quantity, ADC), the rest are a
  few notifications for it -> GattParseError (a configuration pydantic refuses is skipped);
- `config`: YAML text through `parse_config` -> ConfigError, each problem located as
  `file:line:column:`;
- `command`: MQTT command topics and payloads through `parse_command` -> CommandError
  with a known `reason`.

The corpus lives in the repository, `tests/fuzz/corpus/<target>/`, and seeds every run;
new inputs go to a scratch folder, and `--update-corpus` merges both back into the
repository folder with libFuzzer's `-merge=1` (the smallest set with the same coverage, so
the folder stays small). Each run prints its duration, executions, and the coverage
libFuzzer reports (`cov`: edges, `ft`: features); `--json` prints them as JSON.
Findings are written to `--artifacts` (default: a temporary folder) and make the exit
status 1.

The property tests (hypothesis) over the same parsers are in tests/test_fuzz.py and
tests/test_gatt.py, and run with the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
TARGETS = ("gatt", "eda", "config", "command")
MAX_LEN = 2048
COMMAND_REASONS = frozenset({"unknown", "too_long", "not_utf8", "bad_value"})
LOCATED = re.compile(r"^<fuzz>:\d+:\d+: ")


# ---------------------------------------------------------------- the targets (child side)


def _target_gatt() -> Any:
    from agent.sources.gatt import GattParseError, parse_heart_rate

    def one(data: bytes) -> None:
        try:
            m = parse_heart_rate(data)
        except GattParseError:
            return
        assert 0 <= m.hr_bpm <= 300 and all(r > 0 for r in m.rr_ms), m

    return one


def _eda_config(fdp: Any) -> Any:
    """A decoder configuration drawn from the input (None when pydantic refuses it)."""
    from pydantic import ValidationError

    from agent.sources.gatt_eda import EdaDecoderConfig

    header = fdp.ConsumeIntInRange(0, 12)
    fields: dict[str, Any] = {
        "service_uuid": "6e400001-b5a3-f393-e0a9-e50e24dcca9e",
        "characteristic_uuid": "6e400003-b5a3-f393-e0a9-e50e24dcca9e",
        "header_bytes": header,
        "byte_order": fdp.PickValueInList(["little", "big"]),
        "sample_format": fdp.PickValueInList(
            ["u8", "u16", "u24", "u32", "i16", "i24", "i32", "f32", "sfloat"]
        ),
        "sample_rate_hz": fdp.PickValueInList([0.5, 4.0, 8.0, 32.0, 1000.0]),
        "scale": fdp.PickValueInList([1.0, 0.01, -0.5, 1e-9, 1e9]),
        "offset": fdp.PickValueInList([0.0, 1.0, -100.0]),
        "quantity": fdp.PickValueInList(["microsiemens", "kiloohm", "raw_adc"]),
    }
    if fdp.ConsumeBool():
        fields["samples_per_packet"] = fdp.ConsumeIntInRange(1, 10)
    if fields["quantity"] == "raw_adc":
        fields["adc"] = {
            "bits": fdp.ConsumeIntInRange(1, 32),
            "vref_v": 3.3,
            "series_resistor_ohm": fdp.PickValueInList([1.0, 1e5, 1e12]),
            "measured_across": fdp.PickValueInList(["resistor", "skin"]),
        }
    if header and fdp.ConsumeBool():
        fields["sequence"] = {
            "offset": fdp.ConsumeIntInRange(0, header - 1),
            "format": fdp.PickValueInList(["u8", "u16", "u32"]),
        }
    if header and fdp.ConsumeBool():
        fields["timestamp"] = {
            "offset": fdp.ConsumeIntInRange(0, header - 1),
            "format": fdp.PickValueInList(["u16", "u24", "u32", "u64", "f32"]),
            "scale_s": fdp.PickValueInList([1e-3, 1.0, 1e300]),
        }
    try:
        return EdaDecoderConfig(**fields)
    except ValidationError:
        return None


def _target_eda() -> Any:
    import math

    import atheris

    from agent.sources.gatt import GattParseError
    from agent.sources.gatt_eda import EdaDecoder

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        cfg = _eda_config(fdp)
        if cfg is None:
            return
        decoder = EdaDecoder(cfg)
        lo, hi = cfg.valid_range_us
        arrival = fdp.ConsumeFloatInRange(0.0, 4e9)
        for i in range(fdp.ConsumeIntInRange(1, 4)):
            packet_bytes = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
            try:
                packet = decoder.decode(packet_bytes, arrival + i)
            except GattParseError:
                continue
            assert math.isfinite(packet.t), packet
            valid = [s for s in packet.samples_us if not math.isnan(s)]
            assert all(lo <= s <= hi for s in valid), packet
            assert sum(len(run) for _, run in packet.runs()) == len(valid)

    return one


def _target_config() -> Any:
    import atheris

    from agent.config_loader import ConfigError, parse_config

    def one(data: bytes) -> None:
        text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
        try:
            parse_config(text, "<fuzz>")
        except ConfigError as exc:
            for problem in exc.problems:
                assert LOCATED.match(problem), problem

    return one


def _target_command() -> Any:
    import atheris

    from agent.control import COMMANDS, CommandError, parse_command

    names = [*COMMANDS, "", "paused/x", "PAUSED", "baseline\x00"]

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        name = fdp.PickValueInList(names) if fdp.ConsumeBool() else fdp.ConsumeUnicode(24)
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        try:
            command = parse_command(name, payload)
        except CommandError as exc:
            assert exc.reason in COMMAND_REASONS, exc.reason
            return
        assert command.name == name, command

    return one


def _instrumented(target: str) -> Any:
    """The target's function with its modules (and PyYAML for `config`) instrumented."""
    import atheris

    with atheris.instrument_imports(include=["agent", "yaml"]):
        import agent.config_loader
        import agent.control
        import agent.sources.gatt
        import agent.sources.gatt_eda  # noqa: F401
    return {
        "gatt": _target_gatt,
        "eda": _target_eda,
        "config": _target_config,
        "command": _target_command,
    }[target]()


def child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    one = _instrumented(target)
    # libFuzzer's -merge re-runs argv[0] as a program: the parent's wrapper script
    argv0 = os.environ.get("EMOTION_AGENT_FUZZ_ARGV0", sys.argv[0])
    atheris.Setup([argv0, *libfuzzer_args], one)
    atheris.Fuzz()


# ---------------------------------------------------------------- seeds


def seeds() -> dict[str, list[bytes]]:
    """A few valid and near-valid inputs per target, so every run starts deep."""
    example = (ROOT / "config" / "example.yaml").read_bytes()
    demo = (ROOT / "config" / "demo.yaml").read_bytes()
    return {
        "gatt": [
            bytes.fromhex("163c1104"),
            bytes.fromhex("164e1b031203"),
            bytes([0x19, 0x2C, 0x01, 0x10, 0x00]) + struct.pack("<3H", 800, 810, 790),
            bytes([0x04, 0]),
        ],
        "eda": [bytes(range(64)), b"\x01\x02\x00\x10" + bytes(40), b"\xff" * 48],
        "config": [example[:MAX_LEN], demo[:MAX_LEN], b"mqtt:\n  broker: mqtt://x:1\n"],
        "command": [b"\x01\x00ON", b"\x01\x01calibrate", b"\x00paused\x00off"],
    }


def write_seeds(corpus: Path = CORPUS) -> None:
    import hashlib

    for target, inputs in seeds().items():
        folder = corpus / target
        folder.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (folder / f"seed-{hashlib.sha1(data).hexdigest()[:12]}").write_bytes(data)


# ---------------------------------------------------------------- the campaign (parent side)

_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)")
_PULSE = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)")
_STAT = re.compile(r"stat::(\w+):\s+(\d+)")


def _libfuzzer(target: str, args: list[str], timeout: float) -> tuple[int, str]:
    with tempfile.TemporaryDirectory(prefix="fuzz-argv0-") as tmp:
        # an executable that is this target: libFuzzer's merge runs argv[0] itself
        wrapper = Path(tmp) / f"fuzz-{target}"
        wrapper.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -m agent.bench.fuzz --child {target} -- "$@"\n'
        )
        wrapper.chmod(0o755)
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "EMOTION_AGENT_FUZZ_ARGV0": str(wrapper)}
        proc = subprocess.run(
            [str(wrapper), *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=env,
            cwd=ROOT,
        )
    return proc.returncode, proc.stdout + proc.stderr


def campaign(
    target: str,
    seconds: float,
    runs: int | None = None,
    artifacts: Path | None = None,
    update_corpus: bool = False,
) -> dict[str, Any]:
    """Fuzz `target` for `seconds` (or `runs` executions); its figures and any finding."""
    repo_corpus = CORPUS / target
    repo_corpus.mkdir(parents=True, exist_ok=True)
    before = len(list(repo_corpus.iterdir()))
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as tmp:
        work = Path(tmp) / "new"
        work.mkdir()
        art = (artifacts or Path(tmp) / "artifacts") / target
        art.mkdir(parents=True, exist_ok=True)
        args = [
            f"-max_len={MAX_LEN}",
            f"-artifact_prefix={art}/",
            "-print_final_stats=1",
            "-timeout=10",
            "-rss_limit_mb=2048",
        ]
        args.append(f"-runs={runs}" if runs is not None else f"-max_total_time={int(seconds)}")
        started = time.monotonic()
        code, out = _libfuzzer(target, [*args, str(work), str(repo_corpus)], seconds + 300)
        wall = time.monotonic() - started
        done = _DONE.search(out) or (_PULSE.findall(out) or [None])[-1]
        stats = {k: int(v) for k, v in _STAT.findall(out)}
        if isinstance(done, tuple):
            execs, cov, ft, corp = (int(x) for x in done[:4])
        elif done is not None:
            execs, cov, ft, corp = (int(done.group(i)) for i in range(1, 5))
        else:
            execs = cov = ft = corp = 0
        execs = stats.get("number_of_executed_units", execs)
        findings = sorted(str(p) for p in art.iterdir()) if art.exists() else []
        finding_text = ""
        if code != 0:
            lines = out.splitlines()
            start = next(
                (i for i, line in enumerate(lines) if "Uncaught Python exception" in line), None
            )
            finding_text = "\n".join(
                lines[start : start + 30] if start is not None else lines[-30:]
            )
            if artifacts is None and findings:  # keep them: the temporary folder goes away
                keep = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-findings-"))
                for f in findings:
                    shutil.copy(f, keep)
                findings = sorted(str(p) for p in keep.iterdir())
        after = before
        if update_corpus and code == 0:
            merged = Path(tmp) / "merged"
            merged.mkdir()
            _libfuzzer(
                target,
                [f"-max_len={MAX_LEN}", "-merge=1", str(merged), str(repo_corpus), str(work)],
                600,
            )
            if any(merged.iterdir()):
                shutil.rmtree(repo_corpus)
                shutil.copytree(merged, repo_corpus)
            after = len(list(repo_corpus.iterdir()))
    return {
        "target": target,
        "ok": code == 0,
        "exit": code,
        "seconds": round(wall, 1),
        "executions": execs,
        "execs_per_s": round(execs / wall) if wall else None,
        "cov": cov,
        "ft": ft,
        "corpus_in_run": corp,
        "corpus_files": {"before": before, "after": after},
        "new_units": stats.get("new_units_added"),
        "peak_rss_mb": stats.get("peak_rss_mb"),
        "findings": findings,
        "finding": finding_text or None,
    }


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'target':<8} {'seconds':>8} {'executions':>11} {'exec/s':>7} {'cov':>6} {'ft':>6} "
        f"{'corpus':>11}  result"
    ]
    for r in results:
        corpus = f"{r['corpus_files']['before']}->{r['corpus_files']['after']}"
        verdict = "ok" if r["ok"] else f"FINDING (exit {r['exit']}): {', '.join(r['findings'])}"
        lines.append(
            f"{r['target']:<8} {r['seconds']:>8.1f} {r['executions']:>11} "
            f"{r['execs_per_s'] or 0:>7} {r['cov']:>6} {r['ft']:>6} {corpus:>11}  {verdict}"
        )
        if r["finding"]:
            lines.append("  " + r["finding"].replace("\n", "\n  "))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        target, rest = argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:]
        child(target, rest)
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("target", choices=[*TARGETS, "all"])
    p.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    p.add_argument("--runs", type=int, help="stop after this many executions instead")
    p.add_argument("--artifacts", type=Path, help="where findings go (default: a temp folder)")
    merge = "merge what the run found into tests/fuzz/corpus/<target> (minimised)"
    p.add_argument("--update-corpus", action="store_true", help=merge)
    p.add_argument("--write-seeds", action="store_true", help="(re)write the seed inputs first")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print(
            "atheris is not installed: pip install -e '.[fuzz]' (wheels for CPython 3.11 on "
            "x86_64 Linux)",
            file=sys.stderr,
        )
        return 2
    if args.write_seeds or not CORPUS.exists():
        write_seeds()
    targets = list(TARGETS) if args.target == "all" else [args.target]
    results = []
    for target in targets:
        if not args.json:
            amount = f"{args.runs} runs" if args.runs else f"{args.seconds:g} s"
            print(f"# fuzzing {target} for {amount}", file=sys.stderr)
        results.append(
            campaign(target, args.seconds, args.runs, args.artifacts, args.update_corpus)
        )
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
