"""`emotion-agent doctor`: can this machine run the agent, and if not, what to do about it.

This module runs the checks (agent/doctor_checks.py, built on agent/doctor_probes.py) and
prints the report, as text or as JSON (--json), followed by the configuration in use. The
exit status is 1 when any check failed, so an install script or a fleet tool can gate on
it. Secrets are never printed: the configuration dump masks them, and a broker URL loses
its password.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Any

from agent import __version__
from agent.config import AgentConfig
from agent.config_mqtt import parse_broker_url
from agent.doctor_checks import Doctor, Result

MASK = "********"


def masked_config(cfg: AgentConfig) -> dict[str, Any]:
    """The configuration as a dict, every secret value replaced by a mask."""
    data = cfg.model_dump(mode="json")
    mqtt = data["mqtt"]
    if isinstance(cfg.mqtt.password, str):
        mqtt["password"] = MASK
    if isinstance(cfg.mqtt.tls.key_password, str):
        mqtt["tls"]["key_password"] = MASK
    addr = parse_broker_url(cfg.mqtt.broker)
    if addr.password:
        mqtt["broker"] = re.sub(r"(://[^:@/]*:)[^@]*@", rf"\1{MASK}@", cfg.mqtt.broker)
    return data  # {credential|env|file: NAME} stays: it names a place, not the secret


def render_text(results: list[Result], config_path: str | None, cfg: AgentConfig) -> str:
    lines = [f"emotion-agent {__version__} doctor (config: {config_path or 'defaults'})"]
    width = max(len(r.name) for r in results)
    for r in results:
        tag = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}[r.status]
        lines.append(f"  {tag:<4}  {r.name:<{width}}  {r.detail}")
        if r.fix and r.status in ("fail", "warn"):
            lines.append(f"  {'':<4}  {'':<{width}}  fix: {r.fix}")
    fails = sum(r.status == "fail" for r in results)
    warns = sum(r.status == "warn" for r in results)
    lines.append(f"{fails} failure(s), {warns} warning(s)")
    lines.append("configuration (secrets masked):")
    dump = json.dumps(masked_config(cfg), indent=2)
    lines.extend("  " + line for line in dump.splitlines())
    return "\n".join(lines)


def main(config_path: str | None = None, as_json: bool = False) -> int:
    """Run every check, print the report; 1 if any check failed, else 0."""
    doctor = Doctor(config_path)
    results = doctor.run()
    failed = any(r.status == "fail" for r in results)
    if as_json:
        print(
            json.dumps(
                {
                    "version": __version__,
                    "config_file": doctor.config_path,
                    "ok": not failed,
                    "checks": [asdict(r) for r in results],
                    "config": masked_config(doctor.cfg),
                },
                indent=2,
            )
        )
    else:
        print(render_text(results, doctor.config_path, doctor.cfg))
    return 1 if failed else 0
