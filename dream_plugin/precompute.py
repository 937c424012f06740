"""Precomputed DREAM picks: embed a dataset once, cluster every class, write the picks to a file.

At ImageNet scale the real cost of live DREAM is re-embedding every class pool every ``interval``
calls. When a fixed network is good enough (a trained checkpoint, or a fresh network as in DREAM's
initialisation), ``dream-plugin precompute`` does the work once and the ``precomputed`` strategy
answers selections from the file.

Streaming: classes are processed one at a time; only the current class's features are in memory
(embedded in batches of ``batch_size``). Each finished class is written atomically to a sidecar
directory ``<out>.partial/``; a rerun after an interruption skips the finished classes, and the final
file is assembled (and written atomically) only when every class is done.

File format (``torch.save`` of a plain dict, readable with ``torch.load(weights_only=True)``)::

    format: "dream-plugin-picks", version: 1
    num_items, num_classes, pool_sizes (list), labels_sha256   # dataset fingerprint
    ks: [10, 50], feature_dim
    picks:     {K: int64 tensor (num_classes, K)}   # positions within each class's pool
    centroids: {K: float32 tensor (num_classes, K, feature_dim)} or None
    inertia:   {K: float64 tensor (num_classes,)};  n_iter: {K: int64 tensor (num_classes,)}
    seed, kmeans (options), source (what was embedded, with which network)

Positions are positions *within each class's pool*, in the order of
:meth:`dream_plugin.data.ImageDataset.class_indices` (ascending dataset index per class), which
is the order the hosts' ``indices_class`` lists use. A host whose pools are ordered differently
gets different images for the same positions: the pool sizes are validated, the order cannot be.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from .clustering.backends import BACKEND_NAMES
from .clustering.seeding import SEEDING_METHODS
from .strategies.dream import KMeansOptions

FORMAT = "dream-plugin-picks"
FORMAT_VERSION = 1
_PARTIAL_SUFFIX = ".partial"
_MANIFEST = "manifest.json"


class PicksFileError(ValueError):
    """A picks file is missing, malformed, or does not match the data it is used with."""


# -------------------------------------------------------------------------------- fingerprint
@dataclass(frozen=True)
class Fingerprint:
    """What a picks file was computed for: sizes and a hash of the labels."""

    num_items: int
    num_classes: int
    pool_sizes: tuple[int, ...]
    labels_sha256: str

    @classmethod
    def from_labels(cls, labels: torch.Tensor, num_classes: int | None = None) -> "Fingerprint":
        """From a dataset's training labels (the order defines the per-class pool order)."""
        labels = torch.as_tensor(labels).to("cpu", torch.int64).flatten()
        if labels.numel() == 0:
            raise ValueError("labels is empty: nothing to precompute")
        if int(labels.min()) < 0:
            raise ValueError(f"labels must be >= 0, found {int(labels.min())}")
        c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
        sizes = torch.bincount(labels, minlength=c)
        if sizes.numel() > c:
            raise ValueError(f"labels hold class {sizes.numel() - 1} but num_classes={c}")
        digest = hashlib.sha256(labels.numpy().astype("<i8").tobytes()).hexdigest()
        return cls(int(labels.numel()), c, tuple(int(s) for s in sizes.tolist()), digest)

    @classmethod
    def from_pool_sizes(cls, pool_sizes: Sequence[int]) -> "Fingerprint":
        """For class-major data (class 0's items, then class 1's, ...) known only by its pool sizes."""
        sizes = [int(s) for s in pool_sizes]
        if not sizes:
            raise ValueError("pool_sizes is empty: nothing to precompute")
        bad = [(c, s) for c, s in enumerate(sizes) if s < 1]
        if bad:
            raise ValueError(f"every class needs at least one item; empty: classes {[c for c, _ in bad][:10]}")
        h = hashlib.sha256()
        for c, s in enumerate(sizes):  # the labels (class-major) streamed, never materialised whole
            h.update(torch.full((s,), c, dtype=torch.int64).numpy().astype("<i8").tobytes())
        return cls(sum(sizes), len(sizes), tuple(sizes), h.hexdigest())

    def as_dict(self) -> dict[str, Any]:
        return {"num_items": self.num_items, "num_classes": self.num_classes, "pool_sizes": list(self.pool_sizes),
                "labels_sha256": self.labels_sha256}


# ----------------------------------------------------------------------------------- the file
@dataclass
class PicksFile:
    """A loaded, validated picks file."""

    path: str
    fingerprint: Fingerprint
    ks: tuple[int, ...]
    feature_dim: int
    picks: dict[int, torch.Tensor]
    centroids: dict[int, torch.Tensor] | None
    inertia: dict[int, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.fingerprint.num_classes

    def positions(self, class_id: int, k: int, pool_size: int | None = None) -> torch.Tensor:
        """The ``k`` pool positions of ``class_id`` (validated against ``pool_size`` if given)."""
        if not 0 <= int(class_id) < self.num_classes:
            raise PicksFileError(
                f"class {class_id} is not in picks file {self.path!r}: it covers classes 0..{self.num_classes - 1}"
            )
        expected = self.fingerprint.pool_sizes[int(class_id)]
        if pool_size is not None and int(pool_size) != expected:
            raise PicksFileError(
                f"picks file {self.path!r} was computed for a pool of {expected} items in class {class_id}; "
                f"found {pool_size} here. Rerun `dream-plugin precompute` on this data (pool order must be "
                "that of ImageDataset.class_indices())"
            )
        if int(k) not in self.picks:
            raise PicksFileError(
                f"K={k} is not in picks file {self.path!r}; available K: {', '.join(map(str, self.ks))} "
                f"(precompute with --k {k})"
            )
        return self.picks[int(k)][int(class_id)].clone()


def _require_fields(data: Mapping[str, Any], path: str, names: Iterable[str]) -> None:
    missing = [n for n in names if n not in data]
    if missing:
        raise PicksFileError(f"picks file {path!r} is incomplete: missing {', '.join(missing)}")


def load_picks(
    path: str | os.PathLike[str],
    *,
    num_items: int | None = None,
    num_classes: int | None = None,
    pool_sizes: Sequence[int] | None = None,
    labels: torch.Tensor | None = None,
    ks: Iterable[int] | None = None,
) -> PicksFile:
    """Load and validate a picks file; each expectation given is checked with a clear error."""
    p = str(path)
    if not Path(p).is_file():
        raise FileNotFoundError(f"picks file {p!r} does not exist (write it with `dream-plugin precompute --out {p}`)")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise PicksFileError(f"picks file {p!r} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PicksFileError(f"{p!r} is not a dream-plugin picks file (expected format {FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise PicksFileError(
            f"picks file {p!r} has format version {version!r}; this dream-plugin reads version {FORMAT_VERSION}"
        )
    _require_fields(data, p, ("num_items", "num_classes", "pool_sizes", "labels_sha256", "ks", "feature_dim", "picks"))
    fp = Fingerprint(int(data["num_items"]), int(data["num_classes"]), tuple(int(s) for s in data["pool_sizes"]),
                     str(data["labels_sha256"]))
    file_ks = tuple(int(k) for k in data["ks"])
    if set(data["picks"]) != set(file_ks):
        raise PicksFileError(f"picks file {p!r} is inconsistent: ks {list(file_ks)} but picks for {sorted(data['picks'])}")
    for k, t in data["picks"].items():
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (fp.num_classes, k):
            raise PicksFileError(f"picks file {p!r} is inconsistent: picks[{k}] should have shape ({fp.num_classes}, {k})")

    def mismatch(what: str, expected: Any, found: Any) -> PicksFileError:
        return PicksFileError(f"picks file {p!r} was computed for {' '.join(filter(None, (what, str(expected))))}; found {found} here")

    if labels is not None:
        here = Fingerprint.from_labels(labels, num_classes if num_classes is not None else fp.num_classes)
        if here.num_items != fp.num_items:
            raise mismatch("a dataset of", f"{fp.num_items} items", f"{here.num_items}")
        if here.pool_sizes != fp.pool_sizes:
            diff = next(c for c, (a, b) in enumerate(zip(fp.pool_sizes, here.pool_sizes)) if a != b) if len(here.pool_sizes) == len(fp.pool_sizes) else None
            raise mismatch("per-class pool sizes", list(fp.pool_sizes)[:10], list(here.pool_sizes)[:10]
                           if diff is None else f"class {diff}: {here.pool_sizes[diff]} items instead of {fp.pool_sizes[diff]}")
        if here.labels_sha256 != fp.labels_sha256:
            raise mismatch("labels with sha256", fp.labels_sha256[:16] + "...",
                           here.labels_sha256[:16] + "... (same sizes, different label order)")
    if num_items is not None and int(num_items) != fp.num_items:
        raise mismatch("a dataset of", f"{fp.num_items} items", f"{num_items}")
    if num_classes is not None and int(num_classes) != fp.num_classes:
        raise mismatch("", f"{fp.num_classes} classes", f"{num_classes}")
    if pool_sizes is not None and tuple(int(s) for s in pool_sizes) != fp.pool_sizes:
        raise mismatch("per-class pool sizes", list(fp.pool_sizes)[:10], [int(s) for s in pool_sizes][:10])
    for k in ks or ():
        if int(k) not in file_ks:
            raise PicksFileError(f"K={k} is not in picks file {p!r}; available K: {', '.join(map(str, file_ks))}")
    return PicksFile(
        path=p, fingerprint=fp, ks=file_ks, feature_dim=int(data["feature_dim"]),
        picks={int(k): v.to(torch.int64) for k, v in data["picks"].items()},
        centroids=data.get("centroids"), inertia=data.get("inertia") or {},
        meta={k: data.get(k) for k in ("seed", "kmeans", "source", "n_iter")},
    )


# ---------------------------------------------------------------------------------- the engine
def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"K: {k!r} is not allowed; expected integers >= 1 (e.g. --k 10 --k 50)")
        out.append(int(k))
    if not out:
        raise ValueError("no K given; pass at least one (e.g. --k 10)")
    return tuple(sorted(set(out)))


def partial_dir(out: str | os.PathLike[str]) -> Path:
    """The sidecar directory of finished classes for ``out``."""
    o = Path(out)
    return o.with_name(o.name + _PARTIAL_SUFFIX)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _class_file(d: Path, c: int) -> Path:
    return d / f"class_{c:06d}.pt"


def _cluster_class(feats: torch.Tensor, c: int, ks: tuple[int, ...], seed: int, km: KMeansOptions,
                   keep_centroids: bool) -> dict[str, Any]:
    from .clustering import nearest_unique, run_kmeans
    from .selector import derive_seed

    if feats.dim() != 2:
        raise ValueError(f"features of class {c} must be 2-D (items, dim), got shape {tuple(feats.shape)}")
    if not feats.is_floating_point():
        raise TypeError(f"features of class {c} must be floating point, got {feats.dtype}")
    out: dict[str, Any] = {"class": c, "pool_size": int(feats.shape[0]), "feature_dim": int(feats.shape[1]),
                           "picks": {}, "centroids": {}, "inertia": {}, "n_iter": {}}
    for k in ks:
        if k > feats.shape[0]:
            raise ValueError(f"class {c} has {feats.shape[0]} items, fewer than K={k}; use K <= {feats.shape[0]}")
        gen = torch.Generator(device=feats.device).manual_seed(derive_seed(seed, "precompute", c, k))
        res = run_kmeans(feats, k, backend=km.backend, init=km.init, generator=gen, **km.engine_settings())
        pos, _ = nearest_unique(feats, res.centroids, chunk_size=km.chunk_size)
        out["picks"][k] = pos.to("cpu", torch.int64)
        if keep_centroids:
            out["centroids"][k] = res.centroids.detach().to("cpu", torch.float32)
        out["inertia"][k] = float(res.inertia)
        out["n_iter"][k] = int(res.n_iter)
    return out


@dataclass
class PrecomputeReport:
    """What a run did: the file, how many classes it computed or reused, and its cost."""

    path: str
    num_classes: int
    computed: list[int]
    reused: list[int]
    seconds: float
    peak_rss_mib: float
    feature_dim: int


def _peak_rss_mib() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def run_precompute(
    features_of: Callable[[int], torch.Tensor],
    fingerprint: Fingerprint,
    ks: Iterable[int],
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    kmeans: KMeansOptions = KMeansOptions(),
    save_centroids: bool = True,
    source: Mapping[str, Any] | None = None,
    restart: bool = False,
    progress: bool = True,
) -> PrecomputeReport:
    """Cluster every class (``features_of(c)`` -> (pool_size_c, D)) and write the picks file ``out``.

    Resumable: finished classes live in ``<out>.partial/``; a rerun with the same job skips them.
    A partial directory from a different job (other data, K, seed, k-means settings) is an error
    unless ``restart=True``, which deletes it.
    """
    start = time.perf_counter()
    ks = _check_ks(ks)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: {seed!r} is not allowed; expected an integer >= 0")
    out_p = Path(out)
    if out_p.is_dir():
        raise ValueError(f"out: {str(out_p)!r} is a directory; give a file path such as picks.pt")
    small = [(c, s) for c, s in enumerate(fingerprint.pool_sizes) if s < max(ks)]
    if small:
        c, s = small[0]
        raise ValueError(
            f"class {c} has {s} items, fewer than K={max(ks)} ({len(small)} class(es) too small); "
            f"use K <= {min(s for _, s in small)}"
        )
    out_p.parent.mkdir(parents=True, exist_ok=True)
    job = {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fingerprint.as_dict(), "ks": list(ks),
           "seed": seed, "kmeans": dataclasses.asdict(kmeans), "save_centroids": save_centroids,
           "source": dict(source or {})}
    d = partial_dir(out_p)
    if d.exists() and restart:
        shutil.rmtree(d)
    if d.exists():
        manifest = d / _MANIFEST
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            old = None
        if old != json.loads(json.dumps(job)):
            diffs = [key for key in job if old is None or json.loads(json.dumps(job[key])) != old.get(key)]
            raise ValueError(
                f"{str(d)!r} holds an interrupted run of a different job (differs in: {', '.join(diffs) or 'manifest'}); "
                "delete it or pass --restart (restart=True) to start over"
            )
    else:
        d.mkdir(parents=True)
        tmp = d / f".{_MANIFEST}.tmp"
        tmp.write_text(json.dumps(job, indent=1))
        os.replace(tmp, d / _MANIFEST)

    from tqdm.auto import tqdm

    done, todo = [], []
    for c in range(fingerprint.num_classes):
        (done if _class_file(d, c).is_file() else todo).append(c)
    bar = tqdm(total=fingerprint.num_classes, initial=len(done), desc="precompute", unit="class",
               disable=not progress, file=sys.stderr)
    try:
        for c in todo:
            feats = features_of(c)
            if not isinstance(feats, torch.Tensor):
                raise TypeError(f"features of class {c}: expected a tensor, got {type(feats).__name__}")
            if feats.dim() == 2 and feats.shape[0] != fingerprint.pool_sizes[c]:
                raise ValueError(
                    f"features of class {c}: {feats.shape[0]} rows, but its pool has {fingerprint.pool_sizes[c]} items"
                )
            result = _cluster_class(feats, c, ks, seed, kmeans, save_centroids)
            del feats
            _atomic_save(result, _class_file(d, c))
            bar.update(1)
    finally:
        bar.close()

    # assemble
    picks = {k: torch.empty(fingerprint.num_classes, k, dtype=torch.int64) for k in ks}
    inertia = {k: torch.empty(fingerprint.num_classes, dtype=torch.float64) for k in ks}
    n_iter = {k: torch.empty(fingerprint.num_classes, dtype=torch.int64) for k in ks}
    centroids: dict[int, torch.Tensor] | None = {} if save_centroids else None
    dim = None
    for c in range(fingerprint.num_classes):
        part = torch.load(_class_file(d, c), map_location="cpu", weights_only=True)
        if part.get("pool_size") != fingerprint.pool_sizes[c] or dim not in (None, part["feature_dim"]):
            raise ValueError(f"{str(_class_file(d, c))!r} does not belong to this job; delete {str(d)!r} and rerun")
        dim = part["feature_dim"]
        for k in ks:
            picks[k][c] = part["picks"][k]
            inertia[k][c] = part["inertia"][k]
            n_iter[k][c] = part["n_iter"][k]
            if centroids is not None:
                if k not in centroids:
                    centroids[k] = torch.empty(fingerprint.num_classes, k, dim, dtype=torch.float32)
                centroids[k][c] = part["centroids"][k]
    assert dim is not None
    data = {
        "format": FORMAT, "version": FORMAT_VERSION, **fingerprint.as_dict(), "ks": list(ks), "feature_dim": int(dim),
        "picks": picks, "centroids": centroids, "inertia": inertia, "n_iter": n_iter, "seed": seed,
        "kmeans": job["kmeans"], "source": job["source"],
    }
    _atomic_save(data, out_p)
    shutil.rmtree(d)
    return PrecomputeReport(str(out_p), fingerprint.num_classes, todo, done, time.perf_counter() - start,
                            _peak_rss_mib(), int(dim))


def precompute_from_features(
    features: Sequence[torch.Tensor] | Callable[[int], torch.Tensor],
    ks: Iterable[int],
    out: str | os.PathLike[str],
    *,
    pool_sizes: Sequence[int] | None = None,
    labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> PrecomputeReport:
    """Picks from features given directly: one (pool_size_c, D) tensor per class, or a function
    ``c -> features`` (then ``pool_sizes`` is required; features are produced class by class).

    The fingerprint comes from ``labels`` (the dataset's labels, whose order defines the pools)
    when given, else from the pool sizes (class-major labels). Other keywords: :func:`run_precompute`.
    """
    if callable(features):
        if pool_sizes is None and labels is None:
            raise TypeError("features given as a function need pool_sizes= (or labels=) to know the classes")
        features_of = features
    else:
        seq = list(features)
        features_of = seq.__getitem__
        sizes = [int(t.shape[0]) for t in seq]
        if pool_sizes is not None and list(pool_sizes) != sizes:
            raise ValueError(f"pool_sizes {list(pool_sizes)[:10]} do not match the features' rows {sizes[:10]}")
        pool_sizes = sizes
    fp = Fingerprint.from_labels(labels, len(pool_sizes) if pool_sizes is not None else None) if labels is not None \
        else Fingerprint.from_pool_sizes(pool_sizes)  # type: ignore[arg-type]
    if pool_sizes is not None and tuple(int(s) for s in pool_sizes) != fp.pool_sizes:
        raise ValueError(f"labels give pool sizes {list(fp.pool_sizes)[:10]}, but pool_sizes are {list(pool_sizes)[:10]}")
    return run_precompute(features_of, fp, ks, out, **kwargs)


def synthetic_features(num_classes: int, per_class: int, dim: int, *, seed: int = 0, modes: int = 16):
    """A deterministic synthetic source (for scale measurements): ``(features_of, pool_sizes)``.

    Each class is a mixture of ``modes`` Gaussian blobs in ``dim`` dimensions, generated on demand
    from ``(seed, class)``, so no more than one class is ever in memory.
    """
    for name, v in (("classes", num_classes), ("per_class", per_class), ("dim", dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"synthetic {name}: {v!r} is not allowed; expected an integer >= 1")
    from .selector import derive_seed

    def features_of(c: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(seed, "synthetic", c))
        centers = 4.0 * torch.randn(modes, dim, generator=g)
        which = torch.randint(0, modes, (per_class,), generator=g)
        return centers[which] + torch.randn(per_class, dim, generator=g)

    return features_of, [per_class] * num_classes


def precompute_dataset(
    dataset: Any,
    network: nn.Module,
    ks: Iterable[int],
    out: str | os.PathLike[str],
    *,
    embed_fn: Callable | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    source: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> PrecomputeReport:
    """Embed an :class:`~dream_plugin.data.ImageDataset`'s training images with ``network`` (as it
    is: put it in eval mode first for running BatchNorm statistics) and write the picks file.

    Pools are ``dataset.class_indices()``; each class is embedded in batches of ``batch_size``
    and only its features are kept while it is clustered.
    """
    from .embedding import embed_images, resolve_embedder

    embedder, how = resolve_embedder(network, embed_fn=embed_fn)
    pools = dataset.class_indices()
    fp = Fingerprint.from_labels(dataset.train_labels, dataset.num_classes)
    images = dataset.train_images

    def features_of(c: int) -> torch.Tensor:
        pool = pools[c]
        return embed_images(embedder, lambda pos: images[pool[pos]], int(pool.numel()), batch_size=batch_size,
                            device=device, network=network).cpu()

    src = {"dataset": getattr(dataset, "name", "?"), "embedding": how, **dict(source or {})}
    return run_precompute(features_of, fp, ks, out, source=src, **kwargs)


# ----------------------------------------------------------------------------------------- CLI
def _parse_synthetic(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(
            f"--synthetic: {text!r} is not allowed; expected N_CLASSES,PER_CLASS,DIM (positive integers, e.g. 100,2000,512)"
        )
    return parts  # type: ignore[return-value]


def _load_factory(spec: str) -> Callable[..., Any]:
    if spec.count(":") != 1:
        raise ValueError(f"--factory: {spec!r} is not allowed; expected module:function (e.g. mypkg.nets:make_net)")
    mod_name, fn_name = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"--factory: cannot import module {mod_name!r}: {exc}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ValueError(f"--factory: module {mod_name!r} has no callable {fn_name!r}")
    return fn


def build_network(args: argparse.Namespace, channels: int, num_classes: int, image_size: int) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a ``precompute`` command: a factory's or our ConvNet, optionally with a checkpoint."""
    from .models import ConvNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        if args.factory:
            fn = _load_factory(args.factory)
            shape = {"channels": channels, "num_classes": num_classes, "image_size": image_size}
            try:
                params = inspect.signature(fn).parameters
                kw = {k: v for k, v in shape.items() if k in params}
            except (TypeError, ValueError):
                kw = {}
            net = fn(**kw)
            if not isinstance(net, nn.Module):
                raise ValueError(f"--factory {args.factory} returned {type(net).__name__}; expected a torch.nn.Module")
            desc = {"network": f"factory {args.factory}"}
        else:
            net = ConvNet(channels, num_classes, image_size, width=args.width, depth=args.depth, norm=args.norm)
            desc = {"network": f"ConvNet(width={args.width}, depth={args.depth}, norm={args.norm})"}
    if args.checkpoint:
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint: {args.checkpoint!r} does not exist")
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"--checkpoint: {args.checkpoint!r} holds {type(state).__name__}; expected a state_dict")
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(
                f"--checkpoint {args.checkpoint!r} does not fit {desc['network']} for {channels}x{image_size}x{image_size} "
                f"inputs and {num_classes} classes (pass the --width/--depth/--norm it was trained with, or --factory): {exc}"
            ) from None
        desc["checkpoint"] = str(args.checkpoint)
    else:
        desc["seed"] = args.seed
    return net.eval(), desc


def _cmd_precompute(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: {args.threads} is not allowed; expected an integer >= 1")
        torch.set_num_threads(args.threads)
    km = KMeansOptions(max_iter=args.max_iter, tol=args.tol, backend=args.backend, seeding=args.seeding,
                       n_local_trials=args.n_local_trials)
    common = dict(seed=args.kmeans_seed, kmeans=km, save_centroids=not args.no_centroids, restart=args.restart,
                  progress=not args.no_progress)
    if args.synthetic and args.dataset:
        raise ValueError("give either --dataset or --synthetic, not both")
    if args.synthetic:
        c, per, dim = args.synthetic
        features_of, sizes = synthetic_features(c, per, dim, seed=args.seed)
        what = f"synthetic {c} classes x {per} x {dim}-d features"
        report = precompute_from_features(features_of, args.k, args.out, pool_sizes=sizes,
                                          source={"synthetic": [c, per, dim], "seed": args.seed}, **common)
    else:
        from .data import load_dataset

        ds = load_dataset(args.dataset or "mnist", args.root)
        net, desc = build_network(args, ds.channels, ds.num_classes, ds.image_size)
        net = net.to(args.device)
        what = f"{ds.name}: {ds.train_labels.numel()} training images, {ds.num_classes} classes, {desc['network']}"
        report = precompute_dataset(ds, net, args.k, args.out, batch_size=args.batch_size, device=args.device,
                                    source=desc, **common)
    print(f"{report.path}: picks for K={','.join(map(str, sorted(set(args.k))))} of {report.num_classes} classes "
          f"({what}); feature dim {report.feature_dim}")
    print(f"computed {len(report.computed)} classes, reused {len(report.reused)} from an interrupted run; "
          f"wall {report.seconds:.1f} s, peak RSS {report.peak_rss_mib:.0f} MiB (ru_maxrss, whole process)")
    return 0


def add_precompute_parser(sub: Any) -> None:
    """Register ``dream-plugin precompute`` on the CLI's subparsers."""
    p = sub.add_parser("precompute", help="embed a dataset once, cluster every class, write DREAM picks to a file",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the picks file to write (e.g. picks.pt)")
    p.add_argument("--k", type=int, action="append", required=True, help="K (picks per class); repeat: --k 10 --k 50")
    src = p.add_argument_group("data")
    src.add_argument("--dataset", help="mnist | digits | folder | torchvision:<Name> (default mnist)")
    src.add_argument("--root", help="folder holding the data (folder, torchvision:<Name>)")
    src.add_argument("--synthetic", type=_parse_synthetic, metavar="N_CLASSES,PER_CLASS,DIM",
                     help="synthetic features instead of a dataset and network (scale measurements)")
    net = p.add_argument_group("network (ignored with --synthetic)")
    net.add_argument("--checkpoint", help="a state_dict for the network (ConvNet, or --factory's)")
    net.add_argument("--factory", metavar="MODULE:FUNCTION", help="returns an nn.Module (called with channels, "
                     "num_classes, image_size where it accepts them)")
    net.add_argument("--width", type=int, default=128)
    net.add_argument("--depth", type=int, default=3)
    net.add_argument("--norm", default="instancenorm", choices=["instancenorm", "batchnorm", "none"])
    net.add_argument("--seed", type=int, default=0, help="seed of a fresh network (and of --synthetic data)")
    net.add_argument("--batch-size", type=int, default=256)
    net.add_argument("--device", default="cpu")
    km = p.add_argument_group("k-means")
    km.add_argument("--max-iter", type=int, default=100)
    km.add_argument("--tol", type=float, default=1e-4)
    km.add_argument("--backend", default="torch", choices=list(BACKEND_NAMES))
    km.add_argument("--seeding", default="auto", choices=list(SEEDING_METHODS),
                    help="how k-means++ gets its distances (torch backend; see docs/benchmarks.md)")
    km.add_argument("--n-local-trials", type=int, default=None,
                    help="k-means++ candidates per step (torch backend; default 2 + ln K, 1 = classic k-means++)")
    km.add_argument("--kmeans-seed", type=int, default=0)
    p.add_argument("--no-centroids", action="store_true", help="do not store the centroids (smaller file)")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run of a different job")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy, shared CPU)")
    p.set_defaults(func=_cmd_precompute)
