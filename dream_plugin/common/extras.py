"""Optional dependencies: which pip extra provides each, and a one-line message when one is missing."""

from __future__ import annotations

import importlib

EXTRA_OF = {"mlxtend": "demo", "matplotlib": "demo", "faiss": "faiss", "fast_pytorch_kmeans": "fast-kmeans"}
"""Top-level module -> the ``dream-plugin[extra]`` that installs it."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""


def missing_extra_message(module: str, what: str = "this command") -> str | None:
    """The one-line hint for a missing top-level ``module``, or None when no extra provides it."""
    top = module.split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return f"{what} needs {top!r}, which is not installed; install it with: pip install 'dream-plugin[{extra}]'"


def require(*modules: str, what: str = "this command") -> None:
    """Import each module now, so a missing extra is reported before any work starts."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            msg = missing_extra_message(name, what)
            if msg is None:
                raise
            raise MissingExtraError(msg) from exc
