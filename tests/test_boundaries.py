"""The privacy promise as structure: raw-data code and publishing code never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parent.parent / "agent"
RAW = ("agent.sources", "agent.physio", "agent.vision", "agent.events")
PUBLISH = ("agent.publish",)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    base = AGENT / package.split(".", 1)[1].replace(".", "/")
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def test_publishing_never_imports_raw_data_code() -> None:
    for path in (p for pkg in PUBLISH for p in modules(pkg)):
        bad = {m for m in imports(path) if m.startswith(RAW)}
        assert not bad, f"{path.name} imports {bad}"


def test_raw_data_code_never_imports_publishing() -> None:
    for path in (p for pkg in RAW for p in modules(pkg)):
        bad = {m for m in imports(path) if m.startswith(PUBLISH)}
        assert not bad, f"{path.name} imports {bad}"


def test_signal_maths_does_no_io() -> None:
    for path in modules("agent.physio"):
        bad = {
            m
            for m in imports(path)
            if m.split(".")[0] in {"socket", "asyncio", "aiomqtt", "paho", "bleak", "sqlite3"}
        }
        assert not bad, f"{path.name} imports {bad}"
