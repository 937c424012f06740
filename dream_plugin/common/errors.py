"""The error type for bad configuration values, shared by every layer that checks one, and the one
check that words it: ``<key>: <value> is not allowed; expected <what is allowed>``."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value or file is invalid; the message names the key and what is allowed."""


def check_allowed(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` ``<key>: <value!r> is not allowed; expected <allowed>`` unless ``ok``.

    ``key`` names the option as a reader finds it (its YAML key and, where one exists, its flag:
    ``"ipc (--ipc)"``), so every configuration error reads alike.
    """
    if not ok:
        raise ConfigError(f"{key}: {value!r} is not allowed; expected {allowed}")
