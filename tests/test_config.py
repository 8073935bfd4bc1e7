"""Configuration: typed, every error located, all reported at once, secrets from outside."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.config import AgentConfig, default_client_id
from agent.config_loader import ConfigError, load_config, parse_config
from agent.config_mqtt import parse_broker_url, resolve_secret
from tests.conftest import ROOT, agent_cmd

BAD_CONFIGS = {
    "yaml-syntax": ("mqtt:\n  broker: [mqtt://x\nprivacy: {}\n", ":3:", "YAML syntax error"),
    "unknown-key": ("mqtt:\n  brokr: mqtt://x\n", ":2:3:", "mqtt.brokr: unknown key"),
    "wrong-type": ("windows:\n  state_s: often\n", ":2:12:", "windows.state_s"),
    "bad-broker-url": ("mqtt:\n  broker: http://example.org\n", ":2:11:", "mqtt.broker"),
    "nested-wrong-type": (
        "mqtt:\n  outbox:\n    max_messages: lots\n",
        ":3:19:",
        "mqtt.outbox.max_messages",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_exit_2_with_line_and_key(tmp_path: Path, name: str) -> None:
    text, where, what = BAD_CONFIGS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    for args in (["check-config", str(path)], ["run", "-c", str(path)]):
        proc = subprocess.run(
            agent_cmd(*args), capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        assert f"{path}{where}" in proc.stderr, proc.stderr
        assert what in proc.stderr
        assert "Traceback" not in proc.stderr


def test_missing_file_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        agent_cmd("check-config", str(tmp_path / "nope.yaml")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "nope.yaml: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_broker_on_command_line_exit_2() -> None:
    proc = subprocess.run(
        agent_cmd("demo", "--broker", "tcp:/x"), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "bad broker URL" in proc.stderr and "Traceback" not in proc.stderr


def test_all_errors_reported_at_once() -> None:
    text = "device:\n  name: 'no spaces'\nmqtt:\n  keepalive_s: -1\n  qos: 2\nextra: 1\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith("c.yaml:2:9: device.name:")
    assert any(p.startswith("c.yaml:4:16: mqtt.keepalive_s:") and "(got -1)" in p for p in problems)
    assert any(p.startswith("c.yaml:5:8: mqtt.qos:") for p in problems)
    assert any(
        p.startswith("c.yaml:6:1: extra: unknown key; expected one of: device, mqtt")
        for p in problems
    )


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"c.yaml:3:1: mqtt: duplicate key"):
        parse_config("mqtt: {}\nprivacy: {}\nmqtt: {}\n", "c.yaml")


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- a\n- b\n", "c.yaml")


def test_empty_file_gives_defaults() -> None:
    cfg = parse_config("", "c.yaml")
    assert cfg.privacy.consent is False
    assert cfg.mqtt.qos == 1
    assert cfg.topic_prefix() == f"emotion-agent/{cfg.device.name}"


def test_shipped_configs_are_valid() -> None:
    example = load_config(ROOT / "config" / "example.yaml")
    assert example.device.name == "livingroom"
    demo = load_config(ROOT / "config" / "demo.yaml")
    assert demo.privacy.consent is True
    # relative paths are taken relative to the file
    assert demo.sources.replay is not None
    assert (
        Path(demo.sources.replay.session).resolve()
        == (ROOT / "agent" / "sessions" / "demo").resolve()
    )


def test_example_documents_every_option() -> None:
    """Every field of the schema appears in config/example.yaml (commented or not)."""
    text = (ROOT / "config" / "example.yaml").read_text()

    def names(model: type) -> set[str]:
        out = set()
        for name, field in model.model_fields.items():
            out.add(name)
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    out |= names(arg)
        return out

    missing = sorted(n for n in names(AgentConfig) if f"{n}:" not in text)
    assert not missing, f"config/example.yaml does not document: {missing}"


def test_schema_has_titles_and_descriptions() -> None:
    proc = subprocess.run(agent_cmd("schema", "config"), capture_output=True, text=True, timeout=60)
    schema = json.loads(proc.stdout)
    mqtt = schema["$defs"]["MqttConfig"]["properties"]
    assert mqtt["broker"]["title"] == "Broker URL"
    for model in schema["$defs"].values():
        for name, prop in model.get("properties", {}).items():
            assert prop.get("title") and prop.get("description"), name
        assert model.get("additionalProperties") is False


@pytest.mark.parametrize(
    ("url", "host", "port", "tls"),
    [
        ("mqtt://broker.lan", "broker.lan", 1883, False),
        ("mqtts://broker.lan", "broker.lan", 8883, True),
        ("mqtt://u:p%40ss@10.0.0.2:1884", "10.0.0.2", 1884, False),
        ("mqtt://[::1]:1883", "::1", 1883, False),
    ],
)
def test_broker_urls(url: str, host: str, port: int, tls: bool) -> None:
    addr = parse_broker_url(url)
    assert (addr.host, addr.port, addr.tls) == (host, port, tls)


@pytest.mark.parametrize(
    "url", ["http://x", "mqtt://", "mqtt://h:99999", "mqtt://h/path", "h:1883"]
)
def test_bad_broker_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_broker_url(url)


def test_secret_from_env_file_and_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("from-credential")
    monkeypatch.setenv("MQTT_PW", "from-env")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = parse_config(
        f"mqtt:\n  password: {{file: {tmp_path / 'pw'}}}\n"
        "  tls:\n    key_password: {env: MQTT_PW}\n"
    )
    assert resolve_secret(cfg.mqtt.password) == "from-file"
    assert resolve_secret(cfg.mqtt.tls.key_password) == "from-env"
    cfg2 = parse_config("mqtt:\n  password: {credential: mqtt_password}\n")
    assert resolve_secret(cfg2.mqtt.password) == "from-credential"
    assert resolve_secret("literal") == "literal"


def test_missing_secret_is_a_located_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(
        ConfigError, match=r"c.yaml:3:13: mqtt.password: credential 'pw'.*LoadCredential"
    ):
        parse_config("mqtt:\n  username: u\n  password: {credential: pw}\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"exactly one of env, file or credential"):
        parse_config("mqtt:\n  password: {env: A, file: /b}\n", "c.yaml")


def test_default_client_id_from_machine_id(tmp_path: Path) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    assert default_client_id(str(mid)) == "emotion-agent-0123456789ab"
    assert default_client_id(str(tmp_path / "none")).startswith("emotion-agent-")


def test_audience_mode_is_camera_only_located_at_the_key() -> None:
    text = "sources:\n  heart: {match: {name: 'X'}}\nprivacy:\n  mode: audience\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert info.value.problems == [
        "c.yaml:4:9: privacy.mode: privacy.mode audience is camera only: remove sources.heart"
    ]
    with pytest.raises(ConfigError, match="never publishes vitals"):
        parse_config("privacy: {mode: audience}\npublish: {vitals: true}\n", "c.yaml")


def test_summary_window_is_a_multiple_of_the_state_window() -> None:
    assert parse_config("windows: {state_s: 7}\n").windows.summary_s == 63  # default rounds up
    assert parse_config("windows: {state_s: 600}\n").windows.summary_s == 600
    with pytest.raises(ConfigError, match=r"windows: summary_s \(25\) must be a whole multiple"):
        parse_config("windows: {state_s: 10, summary_s: 25}\n", "c.yaml")
