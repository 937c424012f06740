"""No silent options and no silent numbers in ``dream-plugin ab``.

* :func:`check_method_options`: an option of another method (in the section of a loop method's
  own, ``LoopMethod.section``: ``dc.*`` under dm or idc, ``idc.*`` under dm or dc) would do nothing
  yet be stored in results.json as if used; it is an error naming the method. A flag is refused
  whenever it is given; a config file's value only when it differs from the default (a file
  written by ``--show-defaults`` lists every section and stays usable).
* :func:`check_finite_config`: every number of the configuration must be finite (``inf`` passes
  ``> 0`` checks, and ``--lr-img inf`` would run to the end at chance accuracy).
* :func:`check_finite`: a loss that became NaN or infinite stops the run with
  :class:`NonFiniteError`, naming where it appeared and which option to lower.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from dream_plugin.core.config import ConfigError
from dream_plugin.harness.ab.flags import FLAGS
from dream_plugin.harness.ab.methods import registered_methods


class NonFiniteError(ValueError):
    """A loss became NaN or infinite during a run; the message says where and what to lower."""


def _flag_of(key: str) -> str | None:

    return next((flag for flag, k, _kw in FLAGS if k == key), None)


def _label(key: str) -> str:
    flag = _flag_of(key)
    return f"{key} ({flag})" if flag else key


def check_method_options(method: Any, file_data: Mapping[str, Any] | None, flags: Mapping[str, Any] | None,
                         defaults: Any) -> None:
    """Raise :class:`ConfigError` for an option of a method other than ``method`` (see the module doc)."""
    if not isinstance(method, str):
        return
    owners = {m.section: m.name for m in registered_methods() if m.section is not None}  # section -> method
    for source, data in (("flag", flags or {}), ("file", file_data or {})):
        for section, owner in owners.items():
            given = data.get(section)
            if owner == method or not isinstance(given, Mapping):
                continue
            default = dataclasses.asdict(getattr(defaults, section))
            for key, value in given.items():
                if source == "file" and key in default and value == default[key]:
                    continue
                raise ConfigError(f"{_label(f'{section}.{key}')}: applies only to --method {owner}, and this run's "
                                  f"method is {method}; remove it, or choose --method {owner}")


def check_finite_config(cfg: Any) -> None:
    """Raise :class:`ConfigError` naming the first configuration number that is NaN or infinite."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = ([(f"{f.name}.{g.name}", getattr(value, g.name)) for g in dataclasses.fields(value)]
                 if dataclasses.is_dataclass(value) else [(f.name, value)])
        for key, v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{_label(key)}: {v!r} is not allowed; expected a finite number")


def check_finite(value: float, where: str, lower: str) -> float:
    """``value`` if finite, else :class:`NonFiniteError` ``the <where> is nan; ... lower <lower>``."""
    if not math.isfinite(value):
        raise NonFiniteError(f"the {where} is {value!r}: the run diverged and every later number would be "
                             f"meaningless, so it stops here; lower {lower} and rerun")
    return value
