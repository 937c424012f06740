"""Configuration of ``dream-plugin ab``: typed, validated, loadable from YAML, overridable by flags.

Resolution order (later wins): built-in defaults < ``--config FILE`` < ``--quick`` preset <
explicit command-line flags. Every error is a :class:`~dream_plugin.core.config.ConfigError` that names
the option (as its YAML key and, where one exists, its flag) and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import yaml

from dream_plugin.common.errors import check_allowed
from dream_plugin.core.config import ConfigError, Settings, build_dataclass, deep_merge, parse_settings
from dream_plugin.harness.ab.methods import METHODS, LoopMethod, get_method, registered_methods
from dream_plugin.harness.ab.methods.dc import DCConfig
from dream_plugin.harness.ab.methods.idc import IdcConfig
from dream_plugin.harness.devices import resolve_device

from dream_plugin.harness.ab.names import ARM_FORMS, ARMS, AUG_OPS, arm_file_name, arm_strategies  # noqa: F401 - ARMS is imported from here too


@dataclass(frozen=True)
class ModelConfig:
    """The ConvNet used for distillation and evaluation (conv-norm-relu-pool blocks)."""

    width: int = 32
    depth: int = 3
    norm: Literal["instancenorm", "batchnorm", "none"] = "instancenorm"


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: train ``nets`` fresh ConvNets on the synthetic set, test on the held-out split."""

    nets: int = 3
    epochs: int = 50
    lr: float = 0.01
    batch: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0005
    augment: bool | None = None
    """Augment training batches; None follows the top-level ``dsa``."""


@dataclass(frozen=True)
class AbConfig:
    """One A/B experiment: every arm distils with the same loop, seeds and budget."""

    method: str = "dm"
    """A registered loop method (:mod:`dream_plugin.harness.ab.methods`): dm, dc, idc."""
    dataset: str = "mnist"
    root: str | None = None
    arms: tuple[str, ...] = ("random", "dream", "init-only", "match-only")
    seeds: int = 1
    """How many seeds: seed, seed+1, ..., seed+seeds-1."""
    seed: int = 0
    ipc: int = 10
    iterations: int = 100
    eval_points: int = 5
    """Evaluate at this many evenly spaced iterations from 0 to ``iterations`` (both included)."""
    eval_at: tuple[int, ...] | None = None
    """Explicit evaluation iterations (override ``eval_points``); each in [0, iterations]. The last
    iteration is always evaluated as well: the final row and the saved synthetic set are that one."""
    batch_real: int = 64
    lr_img: float | None = None
    """Learning rate of the synthetic images; None: 1.0 for dm, 0.1 for dc (the hosts' values), 0.01 for idc."""
    momentum_img: float = 0.5
    init: Literal["real", "noise"] = "real"
    dsa: bool = False
    dsa_strategy: str = "crop_scale"
    interval: int = 10
    """DREAM re-clusters a class every ``interval`` matching calls (options.dream.interval); in the idc
    loop the count restarts with every outer iteration, so each new network is clustered afresh."""
    subsample: int = 4
    """The ``dream+`` arm's DREAM+ sub-sampling s: batch_real/s centroids, the s images nearest each."""
    model: ModelConfig = field(default_factory=ModelConfig)
    # the sections of the loop methods that have options (LoopMethod.section): one field each
    dc: DCConfig = field(default_factory=DCConfig)
    idc: IdcConfig = field(default_factory=IdcConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    selector: Mapping[str, Any] = field(default_factory=dict)
    """Extra selector settings shared by every arm (e.g. options.dream.kmeans.backend, plugins);
    options.dream.interval given here wins over ``interval``."""
    cache: str | None = None
    """A folder for work that every arm of a seed does identically (:mod:`dream_plugin.harness.ab.cache`): the
    idc matching network's trajectory and the evaluations of identical synthetic sets. The first run
    saves, the others load; the numbers are those of a run without it. None: no cache folder (see
    ``share``)."""
    share: bool = True
    """Without a ``cache`` folder, share the same work between the arms of this run only (in
    ``<out>/resume/shared``, removed when the results are written; a temporary folder when nothing is
    written). Same numbers; False makes every arm do all its own work (to time each arm alone)."""
    device: str = "auto"
    threads: int | None = 1
    """torch.set_num_threads for the run; None keeps torch's default (one per core). 1 by default: the
    harness's tensors are small, and with more threads OpenMP's overhead and contention with other
    processes outweigh the parallelism (measured 3-4x slower with two threads on a 2-core CPU)."""
    jobs: int = 1
    """Run this many (arm, seed) runs at once, each in a process of its own with ``threads`` threads.
    Every run is seeded on its own, so the numbers are the same as with one job."""
    out: str | None = None
    progress: bool = True

    # -- derived --------------------------------------------------------------------------------
    @property
    def loop(self) -> LoopMethod:
        """The registered loop method named by ``method`` (ConfigError listing them for any other name)."""
        return get_method(self.method)

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    @property
    def eval_iterations(self) -> list[int]:
        if self.eval_at is not None:  # the last iteration always: the saved set is the one reported as final
            return sorted(set(self.eval_at) | {self.iterations})
        if self.eval_points == 1:
            return [self.iterations]
        pts = {round(i * self.iterations / (self.eval_points - 1)) for i in range(self.eval_points)}
        return sorted(pts)

    @property
    def image_lr(self) -> float:
        if self.lr_img is not None:
            return self.lr_img
        return self.loop.lr_img

    @property
    def decoded_ipc(self) -> int:
        """Training images per class that the synthetic set decodes into (ipc * factor**2 for idc)."""
        return self.ipc * self.loop.factor(self) ** 2

    @property
    def augment_eval(self) -> bool:
        return self.dsa if self.eval.augment is None else self.eval.augment

    def arm_settings(self, arm: str, seed: int) -> Settings:
        """The selector settings of one arm (the only thing that differs between arms)."""
        strategy, init_strategy = arm_strategies(arm) or (arm, arm)
        data = deep_merge(
            {"options": {"dream": {"interval": self.interval}}},
            dict(self.selector),
        )
        if arm == "dream+":
            data = deep_merge(data, {"options": {"dream": {"subsample": self.subsample}}})
        data.update(strategy=strategy, init={**dict(data.get("init", {})), "strategy": init_strategy}, seed=seed)
        return parse_settings(data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["arms"] = list(self.arms)
        data["eval_at"] = list(self.eval_at) if self.eval_at is not None else None
        data["selector"] = _plain(self.selector)
        return data

    # -- validation -----------------------------------------------------------------------------
    def validate(self) -> "AbConfig":
        """Cross-field checks; returns self. Raises ConfigError naming the option."""
        from dream_plugin.harness.ab.validity import check_finite_config

        check_finite_config(self)  # inf passes the "> 0" checks below
        get_method(self.method)  # the one check of the name: a registered method, or the list of them
        if not self.arms:
            raise ConfigError("arms (--arms): at least one arm is needed; known arms: " + ", ".join(ARMS))
        for a in self.arms:
            check_allowed(arm_strategies(a) is not None, "arms (--arms)", a, ARM_FORMS + "; named arms: " + ", ".join(ARMS))
        dup = sorted({a for a in self.arms if self.arms.count(a) > 1})
        if dup:
            raise ConfigError(f"arms (--arms): {', '.join(dup)} listed more than once")
        _check_dataset(self.dataset, self.root)
        check_allowed(self.seeds >= 1, "seeds (--seeds)", self.seeds, "an integer >= 1 (how many seeds to run)")
        check_allowed(self.seed >= 0, "seed (--seed)", self.seed, "an integer >= 0")
        check_allowed(self.ipc >= 1, "ipc (--ipc)", self.ipc, "an integer >= 1 (synthetic images per class)")
        check_allowed(self.iterations >= 1, "iterations (--iterations)", self.iterations, "an integer >= 1")
        check_allowed(self.eval_points >= 1, "eval_points (--eval-points)", self.eval_points, "an integer >= 1")
        if self.eval_at is not None:
            if not self.eval_at:
                raise ConfigError("eval_at (--eval-at): give at least one iteration, or null to use eval_points")
            for it in self.eval_at:
                check_allowed(0 <= it <= self.iterations, "eval_at (--eval-at)", it,
                              f"iterations between 0 and iterations={self.iterations}")
        check_allowed(self.batch_real >= 1, "batch_real (--batch-real)", self.batch_real, "an integer >= 1")
        if self.lr_img is not None:
            check_allowed(self.lr_img > 0, "lr_img (--lr-img)", self.lr_img, "a number > 0 (or null for the method's default)")
        check_allowed(0 <= self.momentum_img < 1, "momentum_img (--momentum-img)", self.momentum_img, "a number in [0, 1)")
        ops = [o for o in self.dsa_strategy.split("_") if o]
        if not ops:
            raise ConfigError(f"dsa_strategy (--dsa-strategy): {self.dsa_strategy!r} names no operation; "
                              f"expected operations joined by '_' among {', '.join(AUG_OPS)}")
        for o in ops:
            check_allowed(o in AUG_OPS, "dsa_strategy (--dsa-strategy)", o,
                          f"operations joined by '_' among {', '.join(AUG_OPS)}")
        check_allowed(self.interval >= 1, "interval (--interval)", self.interval, "an integer >= 1")
        check_allowed(self.subsample >= 1, "subsample (--subsample)", self.subsample, "an integer >= 1")
        if "dream+" in self.arms and self.batch_real % self.subsample:
            raise ConfigError(f"subsample (--subsample): {self.subsample} does not divide batch_real={self.batch_real}; "
                              "the dream+ arm takes batch_real/subsample centroids and subsample images nearest each")
        for method in registered_methods():  # every config holds every method's section
            if method.section is not None:
                method.check(getattr(self, method.section))
        check_allowed(self.model.width >= 1, "model.width (--width)", self.model.width, "an integer >= 1")
        check_allowed(self.model.depth >= 1, "model.depth (--depth)", self.model.depth, "an integer >= 1")
        check_allowed(self.eval.nets >= 1, "eval.nets (--eval-nets)", self.eval.nets, "an integer >= 1")
        check_allowed(self.eval.epochs >= 1, "eval.epochs (--eval-epochs)", self.eval.epochs, "an integer >= 1")
        check_allowed(self.eval.lr > 0, "eval.lr (--eval-lr)", self.eval.lr, "a number > 0")
        check_allowed(self.eval.batch >= 1, "eval.batch (--eval-batch)", self.eval.batch, "an integer >= 1")
        check_allowed(self.eval.weight_decay >= 0, "eval.weight_decay (--eval-weight-decay)", self.eval.weight_decay, "a number >= 0")
        check_allowed(0 <= self.eval.momentum < 1, "eval.momentum (--eval-momentum)", self.eval.momentum, "a number in [0, 1)")
        if self.cache is not None:
            check_allowed(isinstance(self.cache, str) and self.cache.strip() != "", "cache (--cache)", self.cache,
                          "a folder path, or null for no cache")
        resolve_device(self.device)  # auto, or a device that exists here
        check_allowed(self.jobs >= 1, "jobs (--jobs)", self.jobs, "an integer >= 1 (parallel runs)")
        if self.threads is not None:
            check_allowed(self.threads >= 1, "threads (--threads)", self.threads, "an integer >= 1 (or null for torch's default)")
        for key in ("strategy", "init", "seed"):
            if key in self.selector and not (key == "init" and set(self.selector[key]) <= {"factor"}):
                raise ConfigError(f"selector.{key}: set by each arm (and the run's seed); remove it from selector")
        self._check_selectors()
        return self

    def _check_selectors(self) -> None:
        """Build each arm's selector once, so unknown strategies or options fail before any work."""
        from dream_plugin.core.manager import build_plugin_manager, collect_strategies
        from dream_plugin.core.selector import Selector

        pm = None
        for arm in self.arms:
            settings = self.arm_settings(arm, self.seed)
            if pm is None:
                pm = build_plugin_manager(settings.plugins)
                known = collect_strategies(pm)
            for name in arm_strategies(arm) or ():
                check_allowed(name in known, "arms (--arms)", arm,
                              f"an arm whose strategies are registered; {name!r} is not (registered strategies: "
                              + ", ".join(sorted(known)) + f"; named arms: {', '.join(ARMS)})")
            Selector(settings, plugin_manager=pm)
        files = [arm_file_name(a) for a in self.arms]
        clash = sorted({a for a in self.arms if files.count(arm_file_name(a)) > 1})
        if clash:
            raise ConfigError(f"arms (--arms): {', '.join(clash)} would write the same files; run them separately")


def _check_dataset(name: str, root: str | None) -> None:
    if name in ("mnist", "digits"):
        return
    if name == "folder" or (name.startswith("torchvision:") and len(name) > len("torchvision:")):
        if not root:
            raise ConfigError(f"root (--root): dataset {name!r} needs the folder that holds it; pass --root DIR")
        return
    raise ConfigError(
        f"dataset (--dataset): {name!r} is not allowed; expected mnist (embedded subset), digits, "
        "folder (with --root) or torchvision:<Name> such as torchvision:MNIST (with --root)"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


QUICK: dict[str, Any] = {
    "iterations": 20,
    "eval_points": 3,
    "batch_real": 32,
    "model": {"width": 16},
    "dc": {"outer_loop": 2, "inner_loop": 2},
    "eval": {"nets": 2, "epochs": 30},
}
"""The ``--quick`` preset (about a minute on 2 CPU cores with the default arms and dm); each method adds
its own (:attr:`LoopMethod.quick <dream_plugin.harness.ab.methods.base.LoopMethod.quick>`). Its dc
section applies under --method dc only, and is recorded in every quick run's config alike."""


def build_config(
    file_data: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    *,
    quick: bool = False,
    preset: str | None = None,
    validate: bool = True,
) -> AbConfig:
    """Defaults < preset < file < quick preset < flags (nested dicts with dotted keys already expanded).

    ``validate=False`` only builds the typed config (``--show-defaults`` prints a preset that still
    needs ``--root``); every run validates.
    """
    if file_data and not isinstance(file_data, Mapping):
        raise ConfigError(f"the ab config must be a mapping at the top level, got {type(file_data).__name__}")
    from dream_plugin.harness.ab.presets import preset_data

    base = preset_data(preset) if preset is not None else {}
    loop = get_method((flags or {}).get("method", (file_data or {}).get("method", base.get("method", AbConfig.method))))
    data = deep_merge(deep_merge({}, loop.defaults), base)  # the method's defaults < preset
    if file_data:
        data = deep_merge(data, file_data)
    if quick:
        data = deep_merge(deep_merge(data, QUICK), loop.quick)
    if flags:
        data = deep_merge(data, flags)
    from dream_plugin.harness.ab.validity import check_method_options

    check_method_options(loop.name, file_data, flags, AbConfig())
    cfg = build_dataclass(AbConfig, data)
    return cfg.validate() if validate else cfg


def defaults_yaml(cfg: AbConfig | None = None, preset: str | None = None) -> str:
    """The configuration as commented YAML (``dream-plugin ab --show-defaults [--preset NAME]``)."""
    body = yaml.safe_dump((cfg or AbConfig()).to_dict(), sort_keys=False)
    title = f"resolved config of preset {preset}" if preset else "defaults"
    methods = registered_methods()
    lr_defaults = ", ".join(f"{m.lr_img!r} for {m.name}" for m in methods)
    sections = "".join(_section_line(m) for m in methods if m.section is not None)
    head = (
        f"# dream-plugin ab: {title} (every key also has a flag; flags override this file)\n"
        f"# method: {' | '.join(METHODS)}; arms: any of {', '.join(ARMS)}, or a registered strategy S as S, match:S or init:S\n"
        "# dataset: mnist (embedded subset, 400/100 per class) | digits | folder | torchvision:<Name> (+ root)\n"
        "# eval_at: null -> eval_points evenly spaced iterations from 0 to iterations\n"
        f"# lr_img: null -> {lr_defaults}; eval.augment: null -> follows dsa\n"
        f"{sections}"
        f"# dsa_strategy: operations joined by '_' among {', '.join(AUG_OPS)}\n"
        "# selector: extra selector settings for every arm, e.g. {options: {dream: {kmeans: {backend: torch}}}}\n"
    )
    return head + body


def _section_line(method: LoopMethod) -> str:
    """The defaults file's comment on a method's section: whose options, and the method's own defaults."""
    defaults = ", ".join(f"{k} {v}" for k, v in method.defaults.items())
    return (f"# {method.section}: the options of method {method.name} ({method.summary})"
            + (f"; its defaults: {defaults}" if defaults else "") + "\n")
