"""Reading a configuration file: YAML with locations, and errors that say where.

`load_config` and `parse_config` compose the YAML while recording the line and column of
every key and value (rejecting duplicate keys), validate it into `AgentConfig`, and turn
every problem into one line naming the file, line and column, the key path, the offending
value and what was expected. All problems are collected and raised at once
(`ConfigError.problems`; the CLI turns them into exit status 2); relative paths are made
relative to the file, and secrets are checked to be readable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agent.config import AgentConfig
from agent.config_mqtt import resolve_secret


class ConfigError(Exception):
    """One or more problems with a configuration file; `str()` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


Mark = tuple[int, int]  # 1-based line, column


class _LocatingLoader(yaml.SafeLoader):
    """Safe loader that records where every key and value sits, and rejects duplicate keys."""


def _compose_locations(
    text: str, path: str
) -> tuple[Any, dict[tuple, tuple[Mark, Mark]], list[str]]:
    loader = _LocatingLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    locations: dict[tuple, tuple[Mark, Mark]] = {}
    duplicates: list[str] = []

    def mark(n: yaml.Node) -> Mark:
        return n.start_mark.line + 1, n.start_mark.column + 1

    def walk(n: yaml.Node, at: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
                if key in seen:
                    line, col = mark(k)
                    duplicates.append(
                        f"{path}:{line}:{col}: {_dotted((*at, key))}: duplicate key "
                        "(the later value would silently win)"
                    )
                seen.add(key)
                locations[(*at, key)] = (mark(k), mark(v))
                walk(v, (*at, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                locations[(*at, i)] = (mark(v), mark(v))
                walk(v, (*at, i))

    if node is not None:
        locations[()] = (mark(node), mark(node))
        walk(node, ())
    return data, locations, duplicates


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _locate(loc: tuple, locations: dict[tuple, tuple[Mark, Mark]], is_key: bool) -> Mark:
    """The most precise known position for a pydantic error location."""
    for n in range(len(loc), -1, -1):
        hit = locations.get(tuple(loc[:n]))
        if hit is not None:
            return hit[0] if (is_key and n == len(loc)) else hit[1]
    return (1, 1)


def _clean_loc(loc: tuple) -> tuple:
    # pydantic adds union-branch tags (e.g. 'str', 'SecretRef') to locations; drop them.
    return tuple(
        p for p in loc if not (isinstance(p, str) and (p in ("str", "SecretRef") or "[" in p))
    )


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read, validate and resolve a config file. Raises ConfigError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{p}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: cannot read: {exc}"]) from None
    cfg = parse_config(text, str(p))
    return _relative_to(cfg, p.parent)


def _relative_to(cfg: AgentConfig, base: Path) -> AgentConfig:
    """Relative paths in a file mean relative to that file, not to the working directory."""

    def fix(value: str | None) -> str | None:
        return value if value is None or os.path.isabs(value) else str(base / value)

    if cfg.sources.replay is not None:
        cfg.sources.replay.session = fix(cfg.sources.replay.session)
    cfg.device.state_dir = fix(cfg.device.state_dir)
    tls = cfg.mqtt.tls
    tls.ca_file, tls.cert_file, tls.key_file = (
        fix(tls.ca_file),
        fix(tls.cert_file),
        fix(tls.key_file),
    )
    cfg.models.face_detector = fix(cfg.models.face_detector)
    cfg.models.expression = fix(cfg.models.expression)
    cfg.privacy.pause_file = fix(cfg.privacy.pause_file)
    return cfg


def parse_config(text: str, path: str = "<config>") -> AgentConfig:
    try:
        data, locations, problems = _compose_locations(text, path)
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        where = f"{path}:{m.line + 1}:{m.column + 1}" if m else path
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigError([f"{where}: YAML syntax error: {what}"]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids: locate it too
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - text.rfind("\n", 0, exc.position)
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError([f"{path}:{line}:{col}: YAML error: {exc.reason} ({char})"]) from None
    except RecursionError:  # PyYAML composes recursively: hundreds of nested [ or { (fuzzing)
        raise ConfigError(
            [f"{path}:1:1: YAML nested too deeply to read (a configuration needs a few levels)"]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: YAML error: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}:1:1: the top level must be a mapping of sections, got {type(data).__name__}"]
        )
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _clean_loc(err["loc"])
            named = re.match(r"(?:Value error, )?([a-z_]+(?:\.[a-z_]+)+) ", err["msg"])
            if not loc and named and tuple(named.group(1).split(".")) in locations:
                loc = tuple(named.group(1).split("."))  # a cross-field rule names its key
            is_key = err["type"] == "extra_forbidden"
            line, col = _locate(loc, locations, is_key)
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            msg = err["msg"].removeprefix("Value error, ")
            if is_key:
                msg = "unknown key" + _suggest(loc, data)
            elif err["type"] == "missing":
                shown = ""
            problems.append(f"{path}:{line}:{col}: {_dotted(loc)}: {msg}{shown}")
        cfg = None
    if problems:
        raise ConfigError(sorted(set(problems), key=_sort_key))
    assert cfg is not None
    secret_problems = _check_secrets(cfg, locations, path)
    if secret_problems:
        raise ConfigError(secret_problems)
    return cfg


def _sort_key(problem: str) -> tuple[int, str]:
    m = re.search(r":(\d+):\d+: ", problem)
    return (int(m.group(1)) if m else 0, problem)


def _suggest(loc: tuple, data: dict) -> str:
    """'unknown key; expected one of ...' from the model that rejected it."""
    model: type[BaseModel] | None = AgentConfig
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return ""
        ann = model.model_fields[part].annotation
        model = next(
            (
                a
                for a in getattr(ann, "__args__", (ann,))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    if model is None:
        return ""
    return "; expected one of: " + ", ".join(model.model_fields)


def _check_secrets(cfg: AgentConfig, locations: dict, path: str) -> list[str]:
    problems = []
    for loc, secret in (
        (("mqtt", "password"), cfg.mqtt.password),
        (("mqtt", "tls", "key_password"), cfg.mqtt.tls.key_password),
    ):
        try:
            resolve_secret(secret)
        except ValueError as exc:
            line, col = _locate(loc, locations, False)
            problems.append(f"{path}:{line}:{col}: {_dotted(loc)}: {exc}")
    return problems
