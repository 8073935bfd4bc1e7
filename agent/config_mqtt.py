"""The publishing side of the configuration: the `mqtt`, `publish` and `homeassistant` sections.

The broker URL and its parser (`parse_broker_url`), TLS, the outbox bounds, and the
secrets: the MQTT password and a TLS key passphrase are `Secret` values, a literal string
or `{env: NAME}`, `{file: PATH}` or `{credential: NAME}` (a systemd credential, read from
`$CREDENTIALS_DIRECTORY/NAME`, as `LoadCredential=` provides it), which `resolve_secret`
reads when they are needed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import field_validator, model_validator

from agent.config_base import BackoffConfig, Model, setting


class SecretRef(Model):
    env: str | None = setting(None, "Environment variable", "Read the secret from this variable.")
    file: str | None = setting(
        None, "File", "Read the secret from this file (trailing newline removed)."
    )
    credential: str | None = setting(
        None,
        "systemd credential",
        "Read the secret from $CREDENTIALS_DIRECTORY/<name> (LoadCredential= in the unit).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "credential") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or credential")
        return self


Secret = str | SecretRef


def resolve_secret(secret: Secret | None, env: dict[str, str] | None = None) -> str | None:
    """The secret's value. Raises ValueError saying what is missing."""
    if secret is None or isinstance(secret, str):
        return secret
    env = dict(os.environ) if env is None else env
    if secret.env:
        if secret.env not in env:
            raise ValueError(f"environment variable {secret.env} is not set")
        return env[secret.env]
    if secret.credential:
        cred_dir = env.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise ValueError(
                f"credential {secret.credential!r}: $CREDENTIALS_DIRECTORY is not set "
                "(LoadCredential= in the systemd unit provides it)"
            )
        file = Path(cred_dir) / secret.credential
    else:
        file = Path(str(secret.file))
    try:
        return file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None


class TlsConfig(Model):
    enabled: bool = setting(
        False, "Use TLS", "Connect with TLS (implied by an mqtts:// broker URL)."
    )
    ca_file: str | None = setting(
        None, "CA certificates", "PEM file of CAs that sign the broker; default: the system store."
    )
    cert_file: str | None = setting(
        None, "Client certificate", "PEM client certificate for mutual TLS."
    )
    key_file: str | None = setting(None, "Client key", "PEM private key of the client certificate.")
    key_password: Secret | None = setting(
        None, "Key passphrase", "Passphrase of key_file: a string or {env|file|credential: ...}."
    )
    insecure: bool = setting(
        False,
        "Skip hostname check",
        "Accept a certificate whose name does not match. Testing only.",
    )

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class OutboxConfig(Model):
    max_messages: int = setting(
        100_000,
        "Bound by count",
        "Oldest messages beyond this count are dropped (and counted).",
        ge=10,
    )
    max_age_s: float = setting(
        7 * 86400.0,
        "Bound by age",
        "Messages older than this are dropped (and counted), seconds.",
        gt=0,
    )
    inflight: int = setting(
        20,
        "Messages in flight",
        "QoS 1 messages sent ahead of their acknowledgement.",
        ge=1,
        le=1000,
    )


_BROKER_RE = re.compile(r"^(mqtts?)://")


@dataclass(frozen=True)
class BrokerAddress:
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse `mqtt://[user[:pass]@]host[:port]` or `mqtts://...`; ValueError says what is wrong."""
    if not _BROKER_RE.match(url):
        raise ValueError("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a broker URL has no path, query or fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from None
    if not parts.hostname:
        raise ValueError("the URL names no host")
    default_port = 8883 if parts.scheme == "mqtts" else 1883
    return BrokerAddress(
        parts.scheme,
        parts.hostname,
        port or default_port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )


class MqttConfig(Model):
    broker: str = setting(
        "mqtt://127.0.0.1:1883",
        "Broker URL",
        "mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS, default port 8883).",
    )
    protocol: Literal["3.1.1", "5"] = setting("3.1.1", "MQTT version", "3.1.1 or 5.")
    client_id: str | None = setting(
        None,
        "Client id",
        "Default: emotion-agent-<first 12 hex of /etc/machine-id>-<device name>, unique per "
        "device and agent; two clients with one id knock each other off the broker.",
    )
    username: str | None = setting(None, "User name", "Broker user name.")
    password: Secret | None = setting(
        None,
        "Password",
        "Broker password: a string or {env|file|credential: ...}; prefer the latter.",
    )
    tls: TlsConfig = setting(TlsConfig(), "TLS", "Transport security.")
    topic_prefix: str | None = setting(
        None, "Topic prefix", "Default: emotion-agent/<device.name>. No wildcards, no trailing '/'."
    )
    keepalive_s: int = setting(30, "Keepalive", "MQTT keepalive, seconds.", ge=5, le=3600)
    qos: Literal[1] = setting(
        1,
        "QoS",
        "State messages use QoS 1: they are removed from the outbox only once acknowledged.",
    )
    reconnect: BackoffConfig = setting(
        BackoffConfig(initial_s=1.0, max_s=60.0),
        "Reconnect",
        "Capped exponential reconnect delays.",
    )
    outbox: OutboxConfig = setting(
        OutboxConfig(), "Outbox", "The durable store of unsent messages."
    )

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        parse_broker_url(v)
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and (not v or "+" in v or "#" in v or v.endswith("/") or "\0" in v):
            raise ValueError("a topic prefix is non-empty, without + # or a trailing /")
        return v


class PublishConfig(Model):
    vitals: bool = setting(
        False, "Publish vitals", "Include heart rate and skin conductance level in state messages."
    )
    stats_interval_s: float = setting(
        60.0, "Stats interval", "Seconds between messages on <prefix>/stats.", ge=1
    )


class HomeAssistantConfig(Model):
    enabled: bool = setting(
        False,
        "Home Assistant discovery",
        "Announce valence, arousal, stress, confidence, the emotion and a pause switch as one "
        "Home Assistant device (MQTT discovery). Turning it off removes them.",
    )
    discovery_prefix: str = setting(
        "homeassistant", "Discovery prefix", "Home Assistant's MQTT discovery prefix."
    )
    expire_after_s: int | None = setting(
        None,
        "Expire after",
        "Sensors read 'unavailable' when no state came for this long; default: 3 state windows.",
        ge=1,
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _topic_level(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must be a plain MQTT topic (no wildcards, no leading/trailing /)")
        return v
