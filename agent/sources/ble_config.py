"""Configuration of the BLE sources: which device, which adapter, how to reconnect.

Kept apart from agent.config so the sources can be built and tested on their own; the
agent's SourcesConfig embeds these models as its `heart:` and `eda:` sections.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.sources.gatt import normalize_uuid
from agent.sources.gatt_eda import EdaDecoderConfig

HEART_RATE_SERVICE = normalize_uuid("180d")
_MAC = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BleDeviceMatch(_Strict):
    """Which advertising device to use; every criterion given must match."""

    address: str | None = Field(
        None,
        title="Address",
        description="Bluetooth address AA:BB:CC:DD:EE:FF (see `emotion-agent scan`).",
    )
    name: str | None = Field(
        None,
        min_length=1,
        title="Name prefix",
        description="The advertised name starts with this ('Polar H10' matches "
        "'Polar H10 8C4E5A2B').",
    )
    service_uuid: str | None = Field(
        None,
        title="Advertised service",
        description="A service UUID the device advertises (16- or 128-bit).",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().upper().replace("-", ":")
        if not _MAC.match(text):
            raise ValueError(f"not a Bluetooth address: {value!r} (expected AA:BB:CC:DD:EE:FF)")
        return text

    @field_validator("service_uuid")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        return None if value is None else normalize_uuid(value)

    @model_validator(mode="after")
    def _any(self) -> BleDeviceMatch:
        if self.address is None and self.name is None and self.service_uuid is None:
            raise ValueError("give at least one of address, name, service_uuid")
        return self

    def matches(self, address: str, name: str | None, service_uuids: list[str]) -> bool:
        """True when an advertisement (address, local name, service UUIDs) fits."""
        if self.address is not None and address.upper() != self.address:
            return False
        if self.name is not None and not (name or "").startswith(self.name):
            return False
        if self.service_uuid is not None:
            return self.service_uuid in {u.lower() for u in service_uuids}
        return True

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.model_dump().items() if v is not None]
        return ", ".join(parts)


class BleLinkConfig(_Strict):
    adapter: str | None = Field(
        None,
        pattern=r"^hci[0-9]+$",
        title="Adapter",
        description="Bluetooth adapter such as 'hci0'; unset: BlueZ's first powered one.",
    )
    scan_timeout_s: float = Field(
        30.0,
        gt=0,
        title="Scan timeout (s)",
        description="How long to look for the device before counting a failed attempt.",
    )
    connect_timeout_s: float = Field(
        30.0,
        gt=0,
        title="Connect timeout (s)",
        description="Longest a connect may take, its quick retries included (the kernel "
        "gives up on one LE connection attempt after 20 s).",
    )
    connect_attempts: int = Field(
        3,
        ge=1,
        le=10,
        title="Connect attempts",
        description="Quick retries of a failing connect (bleak-retry-connector) before the "
        "reconnect backoff.",
    )
    reconnect_initial_s: float = Field(
        1.0,
        gt=0,
        title="Reconnect backoff start (s)",
        description="First wait after a lost link or a failed connect; doubles each failure.",
    )
    reconnect_max_s: float = Field(
        60.0, gt=0, title="Reconnect backoff cap (s)", description="Longest wait between tries."
    )
    battery_interval_s: float = Field(
        300.0,
        ge=0,
        title="Battery read interval (s)",
        description="How often to read the battery level (0x2A19 or BlueZ Battery1); 0: never.",
    )

    @model_validator(mode="after")
    def _backoff(self) -> BleLinkConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class HeartSourceConfig(BleLinkConfig):
    """A Bluetooth LE heart-rate strap (Heart Rate Service 0x180D, measurement 0x2A37)."""

    match: BleDeviceMatch = Field(
        default_factory=lambda: BleDeviceMatch(service_uuid=HEART_RATE_SERVICE),
        title="Device",
        description="Which strap to use; default: the first one advertising 0x180D.",
    )


class EdaSourceConfig(BleLinkConfig):
    """A Bluetooth LE electrodermal-activity sensor with a configured GATT decoder."""

    match: BleDeviceMatch | None = Field(
        None,
        title="Device",
        description="Which sensor to use; default: one advertising decoder.service_uuid.",
    )
    decoder: EdaDecoderConfig = Field(
        title="Decoder", description="How the sensor's notifications are laid out."
    )

    @property
    def device_match(self) -> BleDeviceMatch:
        """The match in force (an unset match means the decoder's advertised service)."""
        return self.match or BleDeviceMatch(service_uuid=self.decoder.service_uuid)
