"""The harness commands' ``device`` option (``dream-plugin ab``, ``dream-plugin diagnose``).

``auto`` picks cuda when it is available, else cpu; any other name goes through the package's one
device check, :func:`dream_plugin.core.boundary.check_device` (a torch device that exists here),
worded for the option and raised as :class:`~dream_plugin.common.errors.ConfigError`.
"""

from __future__ import annotations

import torch

from dream_plugin.common.errors import ConfigError
from dream_plugin.core.boundary import check_device

OPTION = "device (--device)"
ADVICE = "use cpu or auto"


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` that ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:<index>``, ``mps``) means here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = check_device(name, OPTION, advice=ADVICE)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        # core's check knows CUDA's availability only; MPS's is checked here
        raise ConfigError(f"{OPTION}: 'mps' was asked for but is not available here; {ADVICE}")
    return device
