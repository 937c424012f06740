"""Typed settings: loaded from YAML, validated strictly, overridden by environment variables.

Every error names the offending key (as a dotted path) and what is allowed, and loading is
all-or-nothing: a bad file never yields a half-applied configuration.
"""

from __future__ import annotations

import copy
import collections.abc
import dataclasses
import numbers
import operator
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from dream_plugin.common.errors import ConfigError, check_allowed

ENV_CONFIG = "DREAM_PLUGIN_CONFIG"
ENV_STRATEGY = "DREAM_STRATEGY"
ENV_INIT_STRATEGY = "DREAM_INIT_STRATEGY"
ENV_SEED = "DREAM_SEED"
ENV_DISABLE_AUTOLOAD = "DREAM_PLUGIN_DISABLE_AUTOLOAD"
ENV_RECORDS = "DREAM_RECORDS"
ENV_LOG = "DREAM_LOG"


@dataclass(frozen=True)
class InitSettings:
    """How the synthetic set is initialised from real images."""

    strategy: str | None = None
    """Strategy for initialisation; None follows the top-level ``strategy``."""
    factor: int = 1
    """Multi-formation factor (IDC): ipc * factor**2 real images per class are chosen."""

    def __post_init__(self) -> None:
        check_field_types(self)
        check_allowed(self.factor >= 1, "init.factor", self.factor, "an integer >= 1")


@dataclass(frozen=True)
class PluginSettings:
    """Which third-party plugins load."""

    autoload: bool = True
    """Load entry points of the ``dream_plugin`` group (DREAM_PLUGIN_DISABLE_AUTOLOAD=1 turns off)."""
    block: tuple[str, ...] = ()
    """Plugin (entry-point) names never to load."""

    def __post_init__(self) -> None:
        check_field_types(self)


@dataclass(frozen=True)
class DistributedSettings:
    """How selection stays identical across the ranks of a torch.distributed process group."""

    mode: Literal["auto", "broadcast", "shard", "off"] = "auto"
    """auto: shard when a re-selection covers >= world_size classes, else broadcast; off: no
    collectives (every rank selects on its own)."""
    src: int = 0
    """The rank that computes in broadcast mode."""
    sync_batchnorm: Literal["local", "error"] = "local"
    """Train-mode SyncBatchNorm while embedding: per-rank batch statistics (local), or refuse."""

    def __post_init__(self) -> None:
        check_field_types(self)
        check_allowed(self.src >= 0, "distributed.src", self.src, "a rank >= 0")


@dataclass(frozen=True)
class ObserveSettings:
    """Shipped observers of every SelectionRecord (see docs/configuration.md, "Seeing what was selected")."""

    records: str = ""
    """JSON-lines file every record is appended to ('' = off; '{rank}' becomes $RANK). Env: DREAM_RECORDS."""
    log: Literal["off", "info", "debug"] = "off"
    """Print the logging summary of each re-selection to stderr at this level. Env: DREAM_LOG."""
    tensorboard: str = ""
    """TensorBoard log directory ('' = off; used only when the tensorboard package is installed)."""
    wandb: bool = False
    """Log to the active wandb run (used only when wandb is installed and a run is active)."""


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one selector."""

    strategy: str = "dream"
    """Strategy for matching batches: random | dream | herding | kcenter | a plugin's name."""
    init: InitSettings = field(default_factory=InitSettings)
    bn_batch: Literal["host", "strategy"] = "host"
    """BatchNorm-statistics batches: the host's own random draw, or the configured strategy."""
    seed: int = 0
    """Seed of the selector's own generator (never the host's generators)."""
    embed_batch_size: int = 256
    """Images embedded per forward pass."""
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-strategy options, e.g. ``{"dream": {"interval": 10}}``; validated by each strategy."""
    plugins: PluginSettings = field(default_factory=PluginSettings)
    distributed: DistributedSettings = field(default_factory=DistributedSettings)
    """Rank consistency under torch.distributed (see docs/scale.md)."""
    observe: ObserveSettings = field(default_factory=ObserveSettings)
    """Shipped observers: records file, logging summary, TensorBoard / wandb."""

    def __post_init__(self) -> None:
        check_field_types(self)
        check_allowed(bool(self.strategy), "strategy", self.strategy, "a non-empty strategy name")
        check_allowed(self.embed_batch_size >= 1, "embed_batch_size", self.embed_batch_size, "an integer >= 1")
        check_allowed(self.seed >= 0, "seed", self.seed, "an integer >= 0")

    @property
    def init_strategy(self) -> str:
        """The strategy used for initialisation calls."""
        return self.init.strategy or self.strategy

    def to_dict(self) -> dict[str, Any]:
        """Plain data, fit for YAML or JSON (the fully resolved configuration)."""
        data = dataclasses.asdict(self)
        data["plugins"]["block"] = list(self.plugins.block)
        data["options"] = {k: dict(v) for k, v in self.options.items()}
        return data


def check_field_types(obj: Any) -> None:
    """Check (and normalise) every field of a frozen settings dataclass against its annotation.

    Settings built from Python get the same checks as those read from YAML: a wrong type is a
    :class:`ConfigError` naming the field, numpy integers become ``int``, lists become tuples and
    mappings given for a nested settings class become that class.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        checked = _coerce(value, hints[f.name], f.name)
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        item = _type_name(typing.get_args(tp)[0])
        plural = {"a string": "strings", "an integer": "integers", "a number": "numbers"}
        return "a list of " + plural.get(item, item)
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (e.g. list -> tuple)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: {value!r} is not allowed; expected {_type_name(tp)}")
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise bad
        return build_dataclass(tp, value, prefix=key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise bad
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if _is_int(value):
            return value if type(value) is int else operator.index(value)
        raise bad
    if tp is float:
        if isinstance(value, numbers.Real) and not _is_bool(value):
            return value if type(value) is float else float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise bad


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's bool is not an int subclass


def _is_int(value: Any) -> bool:
    """int, a numpy integer or a one-element integer tensor (the rule of :func:`dream_plugin.common.inputs.is_integer`)."""
    from dream_plugin.common.inputs import is_integer

    return is_integer(value)


def build_dataclass(cls: type, data: Mapping[str, Any], *, prefix: str = "") -> Any:
    """Validate a mapping against a (frozen) dataclass: unknown keys and wrong types are errors."""
    if not isinstance(data, Mapping):
        where = prefix or "configuration"
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(f"'{where}{k}'" for k in unknown)
            + "; allowed keys" + (f" under '{prefix}'" if prefix else "") + ": " + ", ".join(sorted(fields))
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}.{exc}") from None
        raise


def parse_settings(data: Mapping[str, Any] | None) -> Settings:
    """Validate a plain mapping (e.g. parsed YAML) into :class:`Settings`."""
    return build_dataclass(Settings, data or {})


class DuplicateKeyError(yaml.YAMLError):
    """The same key appears twice in one YAML mapping (PyYAML would silently keep the last)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in the same mapping, naming both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let SafeLoader report it
                continue
            mark = key_node.start_mark
            if first is not None:
                a, b = (f"line {m.line + 1}" + (f", column {m.column + 1}" if first.line == mark.line else "")
                        for m in (first, mark))
                raise DuplicateKeyError(f"key {key!r} is given twice, at {a} and at {b}; keep one")
            seen[key] = mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file; malformed YAML is a :class:`ConfigError` naming the file and line."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a directory; expected the path of a YAML file")
    if p.exists() and not p.is_file():
        raise ConfigError(f"config file {str(p)!r} is not a regular file; expected the path of a YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist (set {ENV_CONFIG} or pass an existing path)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKeyError as exc:
        raise ConfigError(f"config file {str(p)!r}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def apply_env(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """Apply environment overrides: DREAM_STRATEGY (the A/B switch), DREAM_INIT_STRATEGY, DREAM_SEED,
    DREAM_RECORDS, DREAM_LOG, DREAM_PLUGIN_DISABLE_AUTOLOAD."""
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for name in (ENV_STRATEGY, ENV_INIT_STRATEGY):
        # set but empty (``DREAM_STRATEGY=$ARM`` with ARM unset) would silently run the configured strategy
        if name in env and not env[name].strip():
            raise ConfigError(f"{name} is set but empty; set it to a strategy name (e.g. {name}=random or "
                              f"{name}=dream) or unset it to use the configured strategy")
    if env.get(ENV_STRATEGY):
        changes["strategy"] = env[ENV_STRATEGY].strip()
    if env.get(ENV_INIT_STRATEGY):
        changes["init"] = dataclasses.replace(settings.init, strategy=env[ENV_INIT_STRATEGY].strip())
    if env.get(ENV_SEED):
        raw = env[ENV_SEED].strip()
        if not raw.isdigit():
            raise ConfigError(f"{ENV_SEED}: {raw!r} is not allowed; expected an integer >= 0")
        changes["seed"] = int(raw)
    if env.get(ENV_RECORDS) or env.get(ENV_LOG):
        observe = settings.observe
        if env.get(ENV_RECORDS):
            observe = dataclasses.replace(observe, records=env[ENV_RECORDS].strip())
        if env.get(ENV_LOG):
            level = env[ENV_LOG].strip().lower()
            if level not in ("off", "info", "debug"):
                raise ConfigError(f"{ENV_LOG}: {level!r} is not allowed; expected off, info or debug")
            observe = dataclasses.replace(observe, log=level)
        changes["observe"] = observe
    flag = env.get(ENV_DISABLE_AUTOLOAD, "").strip().lower()
    if flag:
        if flag not in ("0", "1", "true", "false", "yes", "no"):
            raise ConfigError(f"{ENV_DISABLE_AUTOLOAD}: {flag!r} is not allowed; expected 1/0, true/false or yes/no")
        if flag in ("1", "true", "yes"):
            changes["plugins"] = dataclasses.replace(settings.plugins, autoload=False)
    return dataclasses.replace(settings, **changes) if changes else settings


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings: defaults < YAML file (``path`` or $DREAM_PLUGIN_CONFIG) < ``overrides`` < environment."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = path if path is not None else env.get(ENV_CONFIG) or None
    if source is not None:
        data = load_yaml(source)
    if overrides:
        data = deep_merge(data, overrides)
    return apply_env(parse_settings(data), env)


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested mappings merged key by key; both left unchanged (deep copies)."""
    out = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
