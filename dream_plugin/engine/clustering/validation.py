"""What every k-means entry point validates, and the result type they return.

Shared by the engine (:mod:`.batched`, :mod:`.kmeans`) and the optional backends
(:mod:`.backends`), so each argument is checked one way with one message.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from dream_plugin.common.inputs import as_int
from dream_plugin.engine.clustering.distances import check_chunk_size

__all__ = [
    "INIT_METHODS", "PRECISIONS", "KMeansResult", "check_init_name", "check_max_iter", "check_tol",
    "make_generator", "matmul_precision", "validate_common", "validate_init", "validate_precision", "validate_x",
]

#: String initialisations accepted by :func:`kmeans` (a ``(K, D)`` tensor is also allowed).
#: ``'k-means++-sampled'`` runs k-means++ on a random subsample of ``max(20 K, 1000)`` rows
#: (cheaper seeding on large pools; see docs/speed.md, "Selection speed").
INIT_METHODS = ("k-means++", "k-means++-sampled", "random")

#: Arithmetic of the distance matrix products: ``'fp32'`` (default, exact float32),
#: ``'tf32'`` (CUDA TensorFloat-32 matmuls) or ``'bf16'`` (CUDA bfloat16 matmuls on centred
#: data). Both reduced precisions are GPU options: on CPU they run as ``'fp32'``. Labels and
#: inertia of the result always come from a final float32 assignment.
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of one k-means run.

    ``centroids`` is ``(K, D)`` on x's device in x's dtype; ``labels`` is the
    ``(N,)`` int64 index of each point's nearest centroid and ``inertia`` the
    sum of squared distances of points to those centroids (both computed with
    the final centroids).  ``converged`` is True when the stopping rule (labels
    unchanged, or centroid shift <= tolerance) fired within ``max_iter``.
    """

    centroids: torch.Tensor
    labels: torch.Tensor
    inertia: float
    n_iter: int
    converged: bool
    backend: str = "torch"


def validate_precision(precision: object) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Allow TF32 CUDA matmuls inside the block when ``precision == 'tf32'``; restored after.

    A no-op for ``'fp32'`` / ``'bf16'`` and on CPU. The previous setting comes back even on error.
    """
    if precision != "tf32" or device.type != "cuda":
        yield
        return
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):  # torch >= 2.9 API
        old = m.fp32_precision
        try:
            m.fp32_precision = "tf32"
        except Exception:  # noqa: BLE001 - mixing APIs can raise: then run in fp32
            yield
            return
        try:
            yield
        finally:
            m.fp32_precision = old
    else:  # pragma: no cover - older torch
        old_flag = m.allow_tf32
        m.allow_tf32 = True
        try:
            yield
        finally:
            m.allow_tf32 = old_flag


def validate_x(x: object, check_finite: bool = True) -> torch.Tensor:
    """``x`` as a 2-D floating-point tensor with rows; ``check_finite``: also refuse NaN / inf values
    (:func:`kmeans` leaves that to the batched engine, which checks every real row once)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (float16, bfloat16, float32 or float64), got dtype {x.dtype}"
        )
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D with shape (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x must contain at least one row, got shape {tuple(x.shape)}")
    if check_finite:
        check_finite_rows(x.unsqueeze(0))
    return x


def check_finite_rows(x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Refuse NaN / inf values in the real rows of ``x`` ``(B, N, D)`` (``mask``: the real rows, or
    None for all), naming the rows (and, in a batch, the problem) that hold them."""
    # cheap screen first: a NaN/inf anywhere makes its row sum non-finite
    sums = x.sum(dim=2)
    if mask is not None:
        sums = sums.masked_fill(~mask, 0)
    if bool(torch.isfinite(sums).all()):
        return
    finite_rows = torch.isfinite(x).all(dim=2)  # exact check (row sums may merely overflow)
    if mask is not None:
        finite_rows |= ~mask
    for b in range(x.shape[0]):
        bad = (~finite_rows[b]).nonzero().flatten()
        if bad.numel():
            shown = ", ".join(str(i) for i in bad[:5].tolist())
            more = f", ...]; {bad.numel()} rows in total" if bad.numel() > 5 else "]"
            where = "" if x.shape[0] == 1 else f"problem {b}, "
            raise ValueError(f"x contains NaN or inf values ({where}rows [{shown}{more})")


def check_max_iter(max_iter: object) -> int:
    """``max_iter`` as an int >= 1."""
    mi = as_int(max_iter, "max_iter")
    if mi < 1:
        raise ValueError(f"max_iter must be >= 1, got {mi}")
    return mi


def check_tol(tol: object) -> float:
    """``tol`` as a finite float >= 0: a real number, not a bool or a string."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a float >= 0, got {tol!r}")
    tol_f = float(tol)
    if not tol_f >= 0 or math.isinf(tol_f):  # also rejects NaN
        raise ValueError(f"tol must be a finite float >= 0, got {tol!r}")
    return tol_f


def check_init_name(init: object, tensor_shape: str) -> None:
    """A string ``init`` must be one of :data:`INIT_METHODS`; ``tensor_shape`` names the tensor
    form the caller also accepts (``'(K, D)'`` for one problem, ``'(B, K, D)'`` for a batch)."""
    allowed = f"{', '.join(map(repr, INIT_METHODS))} or a {tensor_shape} tensor of initial centroids"
    if isinstance(init, str) and init not in INIT_METHODS:
        raise ValueError(f"unknown init {init!r}; allowed: {allowed}")
    if not isinstance(init, (str, torch.Tensor)):
        raise ValueError(f"unknown init of type {type(init).__name__}; allowed: {allowed}")


def validate_common(
    x: torch.Tensor, n_clusters: object, max_iter: object, tol: object, chunk_size: object
) -> tuple[int, int, float, int]:
    k = as_int(n_clusters, "n_clusters")
    n = x.shape[0]
    if k < 1 or k > n:
        raise ValueError(f"n_clusters must be between 1 and the number of rows of x ({n}), got {k}")
    return k, check_max_iter(max_iter), check_tol(tol), check_chunk_size(chunk_size)  # type: ignore[arg-type]


def validate_init(init: object, x: torch.Tensor, k: int) -> str | torch.Tensor:
    check_init_name(init, "(K, D)")
    if isinstance(init, str):
        return init
    assert isinstance(init, torch.Tensor)
    if not init.is_floating_point():
        raise TypeError(f"init tensor must be floating point, got dtype {init.dtype}")
    if tuple(init.shape) != (k, x.shape[1]):
        raise ValueError(
            f"init tensor must have shape (n_clusters, D) = {(k, x.shape[1])}, got {tuple(init.shape)}"
        )
    if init.device != x.device:
        raise ValueError(f"init tensor must be on x's device {x.device}, got {init.device}")
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init tensor contains NaN or inf values")
    return init


def make_generator(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        g = torch.Generator()
        g.seed()  # nondeterministic seed for this private generator only
        return g
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
