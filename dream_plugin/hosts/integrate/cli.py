"""Command-line entry of ``dream-plugin integrate``."""

from __future__ import annotations

from typing import Any


def add_integrate_parser(sub: Any) -> None:
    """Register ``dream-plugin integrate PATH [--apply|--check]``."""
    from dream_plugin.hosts.integrate import command

    command.add_parser(sub)
