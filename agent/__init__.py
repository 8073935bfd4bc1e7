"""emotion-agent: on-device emotion sensing that publishes only aggregated states."""

__version__ = "0.1.0"
