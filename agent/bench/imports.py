"""Resident memory each import of the agent costs, in the order the agent imports them.

    python -m agent.bench.imports [--json]

Run in a fresh interpreter (this module imports nothing heavy itself), it imports the
agent's libraries one after the other and prints the growth of VmRSS (Linux /proc) after
each: what a Pi Zero 2 W's 512 MB pays before any frame or beat arrives. The TFLite runtime
is the one `models.runtime: auto` would load; the BLE stack (bleak, dbus_fast) only loads
when a wearable is configured, and is listed last for that reason. `emotion-agent bench`
gives the agent's peak at its nominal load, and which large libraries it had loaded.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def runtime_module() -> str:
    """The interpreter module `auto` picks: ai-edge-litert when it imports, else tflite."""
    from importlib.util import find_spec

    return (
        "ai_edge_litert.interpreter"
        if find_spec("ai_edge_litert")
        else "tflite_runtime.interpreter"
    )


CHAIN = (
    "numpy",
    "yaml",
    "pydantic",
    "paho.mqtt.client",
    "agent.config",
    "agent.physio.eda",
    "agent.runtime",
    "<runtime>",
    "PIL.Image",
    "agent.sources.ble",
)


def measure() -> list[tuple[str, float, float]]:
    """(module, MB added, MB total) for the interpreter and then each import of CHAIN."""
    rows = [("python interpreter", rss_mb(), rss_mb())]
    for name in CHAIN:
        module = runtime_module() if name == "<runtime>" else name
        before = rss_mb()
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"# {module}: not importable here ({exc})", file=sys.stderr)
            continue
        after = rss_mb()
        rows.append((module, after - before, after))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.bench.imports", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = measure()
    heavy = [m for m in ("scipy", "matplotlib") if m in sys.modules]
    if args.json:
        out = {"imports": [{"module": m, "added_mb": round(a, 1), "rss_mb": round(t, 1)}
                           for m, a, t in rows], "unexpected": heavy}  # fmt: skip
        print(json.dumps(out, indent=1))
    else:
        print(f"python {sys.version.split()[0]}")
        for module, added, total in rows:
            print(f"{module:<30} {added:+7.1f} MB  -> {total:6.1f} MB")
        if heavy:
            print("unexpected on the agent's path: " + ", ".join(heavy))
    return 1 if heavy else 0


if __name__ == "__main__":
    raise SystemExit(main())
