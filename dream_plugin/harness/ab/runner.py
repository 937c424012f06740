"""Run the A/B experiment: every arm x every seed (one run: :mod:`dream_plugin.harness.ab.arm`), then report.

Checks the configuration against the data before any run, runs the (arm, seed) jobs in order or in
spawned worker processes, aggregates them, prints the table and writes results.json and the plots.
"""

from __future__ import annotations

import _thread
import contextlib
import dataclasses
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from dream_plugin.harness.data import ImageDataset, load_dataset
from dream_plugin.harness.devices import resolve_device
from dream_plugin.common.extras import require
from dream_plugin.common.paths import check_writable_folder
from dream_plugin.harness.ab.aggregate import aggregate
from dream_plugin.harness.ab.arm import RunResult, device_tensors, default_adapter_class, run_arm
from dream_plugin.harness.ab.config import AbConfig, ConfigError
from dream_plugin.harness.ab.environment import loadavg, environment
from dream_plugin.harness.ab import resume as resume_state
from dream_plugin.harness.ab.output import RESULTS, RunInterrupted, prepare_out_dir, write_json_atomic, write_report
from dream_plugin.harness.ab.ownership import OutLock
from dream_plugin.harness.ab.runstate import RunStore
from dream_plugin.harness.ab.names import arm_file_name

logger = logging.getLogger(__name__)


def load_data(cfg: AbConfig) -> ImageDataset:
    try:
        return load_dataset(cfg.dataset, root=cfg.root)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"dataset (--dataset) {cfg.dataset!r}: {exc}") from exc


def check_sizes(cfg: AbConfig, data: ImageDataset) -> None:
    sizes = [int(p.numel()) for p in data.class_indices()]
    smallest = min(sizes)
    cls = sizes.index(smallest)
    if cfg.ipc > smallest:
        raise ConfigError(f"ipc (--ipc): {cfg.ipc} exceeds the {smallest} training images of class {cls} in "
                          f"{data.name}; choose at most {smallest}")
    if cfg.decoded_ipc > smallest:
        raise ConfigError(f"ipc (--ipc) x idc.factor**2 = {cfg.decoded_ipc} initialisation picks exceed the {smallest} "
                          f"training images of class {cls} in {data.name}; lower --ipc or --factor")
    factor = cfg.loop.factor(cfg)
    if factor > data.image_size:
        raise ConfigError(f"idc.factor (--factor): {factor} exceeds the {data.image_size}-pixel side of "
                          f"{data.name}'s images")
    if cfg.batch_real > smallest:
        raise ConfigError(f"batch_real (--batch-real): {cfg.batch_real} exceeds the {smallest} training images of "
                          f"class {cls} in {data.name}; choose at most {smallest}")


def _worker(job: tuple[AbConfig, str, int, type | None, Path | None]) -> RunResult:
    """One (arm, seed) run in a worker process: its own data, device and thread setting."""
    cfg, arm, seed, adapter_class, store_root = job
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    store = RunStore(store_root, arm, seed) if store_root is not None else None
    return run_arm(arm, seed, cfg, load_data(cfg), device, adapter_class=adapter_class, store=store)


def _init_worker() -> None:
    """Ignore Ctrl-C (the main process handles it), and give tqdm a thread lock: its default
    multiprocessing lock would leak a semaphore when the main process terminates the worker."""
    import threading

    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())


def _run_parallel(cfg: AbConfig, jobs: list[tuple[str, int]], adapter_class: type | None, store_root: Path | None,
                  done: Callable[[RunResult], None]) -> None:
    """Run ``jobs`` in ``cfg.jobs`` spawned processes (no progress bars); ``done`` gets each result.

    The workers ignore Ctrl-C from the start: the main process gets it, and on it (or on any error)
    terminates them at once, so no queued job runs after it and no worker outlives the command.
    """
    import multiprocessing

    quiet = dataclasses.replace(cfg, progress=False)
    ctx = multiprocessing.get_context("spawn")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the workers as they start
    try:
        pool = ctx.Pool(min(cfg.jobs, len(jobs)), initializer=_init_worker)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        for result in pool.imap_unordered(_worker, [(quiet, arm, seed, adapter_class, store_root)
                                                    for arm, seed in jobs]):
            done(result)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def run_ab(
    cfg: AbConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    adapter_class: type | None = None,
    write: bool = True,
    log: Callable[[str], None] | None = None,
    force: bool = False,
    dry_run: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Run every arm over every seed; write results.json, curves.png and synthetic grids to ``out``.

    ``out`` is checked before any work (see :func:`~dream_plugin.harness.ab.output.prepare_out_dir`; ``force``
    replaces an earlier run there; ``resume`` continues the interrupted run saved there, see
    :mod:`~dream_plugin.harness.ab.resume`) and locked for the run (:mod:`~dream_plugin.harness.ab.ownership`: a second
    run into the same folder is refused), and results.json is written before the plots. A long run
    (:func:`~dream_plugin.harness.ab.cost.is_long`) first prints its estimated cost; ``dry_run`` prints it for
    any run and returns ``{"estimate": ...}`` without running or writing anything.
    """
    cfg.validate()
    lock = None
    if dry_run:
        write = False
    if resume and not write:
        raise ValueError("resume=True needs write=True (the saved progress lives in the output folder)")
    if write:
        require("matplotlib", what="dream-plugin ab (its plots)")
        out = out or cfg.out or f"dream-ab-{time.strftime('%Y%m%d-%H%M%S')}"
        out = Path(out) if resume else check_writable_folder(out, "out (--out)")
        lock = OutLock(out).acquire()  # one owner per folder: a second run is refused here, naming this one
    threads_before = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        if write and not resume:
            prepare_out_dir(out, force=force)  # under the lock: an earlier run's files are no running run's
            resume_state.clear(out)  # --force: an earlier interrupted run's progress is not this run's
        return _run_ab(cfg, out=out, adapter_class=adapter_class, write=write, log=log, dry_run=dry_run,
                       new_run=write and not resume)
    finally:
        torch.set_num_threads(threads_before)
        if lock is not None:
            lock.release()


def _run_ab(
    cfg: AbConfig,
    *,
    out: str | os.PathLike[str] | None,
    adapter_class: type | None,
    write: bool,
    log: Callable[[str], None] | None,
    dry_run: bool = False,
    new_run: bool = False,
) -> dict[str, Any]:
    from dream_plugin.harness.ab.cost import estimate_cost, is_long
    from dream_plugin.harness.ab.report import format_table

    device = resolve_device(cfg.device)
    data = load_data(cfg)
    check_sizes(cfg, data)
    adapter_class = adapter_class or default_adapter_class()
    tensors = device_tensors(data, device)
    env = environment(device)
    out_dir = Path(out or cfg.out or f"dream-ab-{time.strftime('%Y%m%d-%H%M%S')}")
    say = log or logger.info  # the command passes print; as a library, logging.getLogger('dream_plugin.harness.ab')
    say(f"dream-plugin ab: {cfg.method} on {data.name} ({data.num_classes} classes, "
        f"{data.train_images.shape[0]} train / {data.test_images.shape[0]} test), ipc {cfg.ipc}, "
        f"{cfg.iterations} iterations, arms {', '.join(cfg.arms)}, seeds {cfg.seed_list}, "
        f"{cfg.eval.nets} eval nets at {cfg.eval_iterations}; device {device}, {torch.get_num_threads()} threads")
    if dry_run or is_long(cfg):
        estimate = estimate_cost(cfg, data, device, tensors)
        say(estimate.text())
        if dry_run:
            return {"estimate": dataclasses.asdict(estimate), "total_seconds": estimate.total_seconds}
    if new_run:  # only once every check passed: a run refused at its start leaves nothing to resume
        resume_state.save_config(out_dir, cfg)
    start = time.perf_counter()
    store_root = resume_state.resume_dir(out_dir) if write else None
    runs: list[RunResult] = []
    with _shared_work(cfg, store_root) as run_cfg:
        try:
            _run_jobs(run_cfg, data, device, adapter_class, tensors, say, store_root, runs)
        except KeyboardInterrupt:
            if not write:
                raise
            raise _interrupted(cfg, data, env, time.perf_counter() - start, runs, out_dir) from None
    total = time.perf_counter() - start
    env["load_average_at_end"] = loadavg()
    results = _results(cfg, data, env, total, aggregate(cfg, runs))
    table = format_table(results)
    results["table"] = table
    say("")
    say(table)  # before any file is written: if writing fails, the numbers are still on screen
    if write:
        _write_outputs(results, runs, cfg, data, out_dir)
        resume_state.clear(out_dir)  # every number is saved: the progress is no longer needed
        say(f"\nwrote {out_dir}/results.json, curves.png, " + ", ".join(f"synthetic_{arm_file_name(a)}.png" for a in cfg.arms)
            + f" (total {total:.1f} s)")
    return results


@contextlib.contextmanager
def _shared_work(cfg: AbConfig, store_root: Path | None) -> Iterator[AbConfig]:
    """The config the runs execute: with ``share`` and no ``cache`` folder, a cache folder for this run only.

    It lives with the run's saved progress (so a resumed run finds it, and it goes when the results are
    written), or in a temporary folder removed on exit when the run writes nothing. The results record
    ``cfg`` as given.
    """
    if cfg.cache is not None or not cfg.share:
        yield cfg
        return
    if store_root is not None:
        yield dataclasses.replace(cfg, cache=str(store_root / "shared"))
        return
    with tempfile.TemporaryDirectory(prefix="dream-ab-shared-") as folder:
        yield dataclasses.replace(cfg, cache=folder)


def _jobs(cfg: AbConfig) -> list[tuple[str, int]]:
    """Every (arm, seed) run, in the order they are started."""
    if cfg.cache is not None:
        # arm by arm: jobs that run at the same time then train different seeds' networks, and every later
        # arm of a seed loads the trajectory its first arm saved
        return [(arm, seed) for arm in cfg.arms for seed in cfg.seed_list]
    return [(arm, seed) for seed in cfg.seed_list for arm in cfg.arms]


def _run_jobs(cfg: AbConfig, data: ImageDataset, device: torch.device, adapter_class: type,
              tensors: dict[str, Any], say: Callable[[str], None], store_root: Path | None,
              runs: list[RunResult]) -> None:
    """Every (arm, seed) run, in processes when ``cfg.jobs > 1``; each is logged and added to ``runs`` as it
    ends (so an interruption leaves the finished ones there), then ``runs`` is sorted in job order.

    With ``store_root`` each run saves its progress there, and runs finished by an earlier,
    interrupted invocation are taken from it instead of being run again.
    """
    width = max([11, *(len(arm) for arm in cfg.arms)])

    def done(r: RunResult, note: str = "") -> None:
        say(f"  {r.arm:<{width}} seed {r.seed}: final acc {np.mean(r.curve[-1]['accs']):.4f} "
            f"({r.wall_seconds:.1f} s, selection {r.select_seconds:.1f} s){note}")
        runs.append(r)

    jobs = _jobs(cfg)
    todo = []
    for arm, seed in jobs:
        earlier = RunStore(store_root, arm, seed).load_result(RunResult) if store_root is not None else None
        if earlier is not None:
            done(earlier, "; finished before the interruption")
        else:
            todo.append((arm, seed))
    if cfg.jobs > 1 and len(todo) > 1:
        _run_parallel(cfg, todo, adapter_class, store_root, done)
    else:
        with _noted_interrupts() as interrupted:
            for arm, seed in todo:
                if interrupted():  # a Ctrl-C that a destructor swallowed between two runs
                    raise KeyboardInterrupt
                store = RunStore(store_root, arm, seed) if store_root is not None else None
                done(run_arm(arm, seed, cfg, data, device, adapter_class=adapter_class, tensors=tensors,
                             store=store))
            if interrupted():
                raise KeyboardInterrupt
    order = {job: i for i, job in enumerate(jobs)}
    runs.sort(key=lambda r: order[(r.arm, r.seed)])


@contextlib.contextmanager
def _noted_interrupts() -> Iterator[Callable[[], bool]]:
    """Raise KeyboardInterrupt on Ctrl-C as usual, and also remember it: an interrupt that arrives while
    Python runs a destructor (a progress bar closing at the end of a run) would be printed and dropped
    by the interpreter, so there it is only remembered, and the caller checks the returned function
    between runs. Only in the main thread."""
    seen = {"interrupt": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: Any) -> None:
        seen["interrupt"] = True
        if frame is not None and frame.f_code.co_name == "__del__":
            # raised here it would be printed as "Exception ignored" and dropped: ask again, so that it
            # is raised as soon as the destructor has returned
            _thread.interrupt_main(signal.SIGINT)
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: seen["interrupt"]
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(cfg: AbConfig, data: ImageDataset, env: dict[str, Any], seconds: float, runs: list[RunResult],
                 out_dir: Path) -> RunInterrupted:
    """Save the finished runs to results.json, marked incomplete; the one-line message for the user."""
    jobs = _jobs(cfg)
    root = resume_state.resume_dir(out_dir)
    # a worker may have saved a finished run that the main process had not received yet
    known = {(r.arm, r.seed) for r in runs}
    for a, s in jobs:
        earlier = RunStore(root, a, s).load_result(RunResult) if (a, s) not in known else None
        if earlier is not None:
            runs.append(earlier)
    finished = {(r.arm, r.seed) for r in runs}
    unfinished = [{"arm": a, "seed": s, "resume_from_iteration": RunStore(root, a, s).resume_point()}
                  for a, s in jobs if (a, s) not in finished]
    results = {**_results(cfg, data, env, seconds, {}), "incomplete": True,
               "resume": f"dream-plugin ab --resume {out_dir}",
               "finished_runs": [r.as_dict() for r in sorted(runs, key=lambda r: jobs.index((r.arm, r.seed)))],
               "unfinished_runs": unfinished}
    write_json_atomic(results, out_dir / RESULTS)
    return RunInterrupted(f"interrupted: {len(runs)} of {len(jobs)} runs finished, saved in "
                          f"{str(out_dir / RESULTS)!r} (marked incomplete); continue with: "
                          f"dream-plugin ab --resume {out_dir}")


def _results(cfg: AbConfig, data: ImageDataset, env: dict[str, Any], total: float,
             summary: dict[str, Any]) -> dict[str, Any]:
    """The results.json content: configuration, resolved settings, environment, total time and the summary."""
    return {
        "config": cfg.to_dict(),
        "resolved": {"lr_img": cfg.image_lr, "eval_augment": cfg.augment_eval, "seeds": cfg.seed_list,
                     "dataset_name": data.name, "num_classes": data.num_classes, "image_size": data.image_size,
                     "channels": data.channels, "train_images": int(data.train_images.shape[0]),
                     "test_images": int(data.test_images.shape[0]),
                     "std_note": "std over all evaluation networks of all seeds (numpy std, ddof=0)"},
        "environment": env,
        "total_seconds": total,
        **summary,
    }


def _write_outputs(results: dict[str, Any], runs: list[RunResult], cfg: AbConfig, data: ImageDataset,
                   out_dir: Path) -> None:
    """results.json, then the curves and the first seed's synthetic grids (see :func:`write_report`)."""
    from dream_plugin.harness.ab.report import save_curves, save_grids

    def plots() -> dict[str, str]:
        save_curves(results, out_dir / "curves.png")
        first = {r.arm: r.synthetic for r in runs if r.seed == cfg.seed_list[0]}
        return {"curves": "curves.png", **save_grids(first, data, cfg.ipc, out_dir)}

    write_report(results, out_dir, plots)
