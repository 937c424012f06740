"""The error type for bad configuration values, shared by every layer that checks one."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the key and what is allowed."""
