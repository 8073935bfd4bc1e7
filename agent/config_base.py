"""The building blocks every configuration section is made of.

`Model` is the strict base (unknown keys rejected, defaults validated), `setting` declares
a field with the title and description that `emotion-agent schema config` shows, and
`BackoffConfig` is the capped exponential delay that both MQTT reconnects and source
restarts use. The sections themselves live in agent/config.py and agent/config_mqtt.py.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def setting(default: Any, title: str, description: str, **kw: Any) -> Any:
    return Field(default, title=title, description=description, **kw)


class BackoffConfig(Model):
    initial_s: float = setting(1.0, "First delay", "Delay before the first retry, seconds.", gt=0)
    max_s: float = setting(
        60.0, "Longest delay", "The delay doubles up to this cap, seconds.", gt=0
    )

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self
