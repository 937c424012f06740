"""Chunked squared-Euclidean distance and nearest-centroid helpers.

All helpers use the expansion ``|x|^2 - 2 x c^T + |c|^2`` (one matrix product
per chunk, clamped at 0) and process ``x`` in row chunks of ``chunk_size`` so
the temporary ``(chunk, K)`` matrix keeps memory bounded for large ``N``.
Half-precision inputs are upcast to float32 for the arithmetic; float32 and
float64 inputs are computed in their own precision.  Nothing here moves data
between devices: the result lives on the inputs' device.  The helpers are
for assignment, not for training: inputs are detached (no autograd graph).
"""

from __future__ import annotations

import torch

from dream_plugin.common.inputs import as_int

__all__ = ["check_chunk_size", "check_pair", "compute_dtype", "nearest_centroid", "promote", "row_sq_norms", "squared_distances"]

#: Up to this many centroids the assignment computes ``c x^T`` (K x rows) instead of ``x c^T``:
#: the skinny product is 1.4-2.3x faster that way round with MKL on the CPUs we measured
#: (docs/speed.md, "Selection speed"), and the same for larger K.
TRANSPOSED_MAX_K = 16


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype used for the arithmetic on inputs of ``dtype``.

    float16 / bfloat16 (and any other sub-32-bit float) are upcast to float32
    because their mantissa is too short for accumulating distances; float32 and
    float64 are kept as they are.
    """
    if dtype == torch.float64:
        return torch.float64
    return torch.float32


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` as an int >= 1 (numpy integers accepted, as every integer option)."""
    chunk_size = as_int(chunk_size, "chunk_size")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


def check_pair(x: torch.Tensor, c: torch.Tensor, x_name: str = "x", c_name: str = "c") -> None:
    for name, t in ((x_name, x), (c_name, c)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (rows, features), got shape {tuple(t.shape)}")
    if x.shape[1] != c.shape[1]:
        raise ValueError(
            f"{x_name} and {c_name} must have the same number of features, "
            f"got {x_name} {tuple(x.shape)} and {c_name} {tuple(c.shape)}"
        )
    if x.device != c.device:
        raise ValueError(
            f"{x_name} and {c_name} must be on the same device, got {x.device} and {c.device}"
        )


def promote(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached copies (views when possible) of x and c in the shared compute dtype."""
    dt = compute_dtype(torch.promote_types(x.dtype, c.dtype))
    return x.detach().to(dt), c.detach().to(dt)


def row_sq_norms(t: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each row (``(N,)``), in ``t``'s dtype.

    ``vector_norm`` is a single fused, vectorised reduction (several times faster
    on CPU than ``einsum``/``(t * t).sum(1)``, and it allocates no ``(N, D)`` temporary).
    """
    return torch.linalg.vector_norm(t, dim=1).square_()


def _nearest(
    x: torch.Tensor,
    x_sq: torch.Tensor,
    c: torch.Tensor,
    c_sq: torch.Tensor,
    chunk_size: int,
    out_labels: torch.Tensor | None = None,
    out_dist: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Core chunked arg-min; inputs already validated and in compute dtype.

    ``x_sq`` / ``c_sq`` are the precomputed squared row norms so the Lloyd
    loop pays for ``|x|^2`` only once.  ``|x|^2`` does not change the arg-min,
    so it is added to the ``(chunk,)`` minimum only, not to the whole
    ``(chunk, K)`` block.
    """
    n = x.shape[0]
    labels = out_labels if out_labels is not None else torch.empty(n, dtype=torch.long, device=x.device)
    dist = out_dist if out_dist is not None else torch.empty(n, dtype=x.dtype, device=x.device)
    transposed = c.shape[0] <= TRANSPOSED_MAX_K
    c_t = c.t()
    c_sq_row = c_sq.unsqueeze(0)
    c_sq_col = c_sq.unsqueeze(1)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        if transposed:
            # (K, B) = |c|^2 - 2 c x^T: a few centroids against many rows runs faster this way round
            block = torch.addmm(c_sq_col, c, x[start:stop].t(), beta=1.0, alpha=-2.0)
            vals, idx = torch.min(block, dim=0)
        else:
            # (B, K) = |c|^2 - 2 x c^T, in a single fused BLAS call.
            block = torch.addmm(c_sq_row, x[start:stop], c_t, beta=1.0, alpha=-2.0)
            vals, idx = torch.min(block, dim=1)
        labels[start:stop] = idx
        torch.add(vals, x_sq[start:stop], out=dist[start:stop])
    dist.clamp_(min=0)
    return labels, dist


def squared_distances(x: torch.Tensor, c: torch.Tensor, *, chunk_size: int = 4096) -> torch.Tensor:
    """Full ``(N, K)`` matrix of squared Euclidean distances between rows of x and c.

    Meant for small problems and tests (the output is ``N*K``); use
    :func:`nearest_centroid` when only the arg-min is needed.  Computed chunk by
    chunk so the working memory beyond the output stays ``O(chunk_size * K)``.
    Returned in the compute dtype (float32 for half inputs, else input dtype).
    """
    check_pair(x, c)
    check_chunk_size(chunk_size)
    x, c = promote(x, c)
    x_sq = row_sq_norms(x)
    c_sq = row_sq_norms(c).unsqueeze(0)
    n = x.shape[0]
    out = torch.empty(n, c.shape[0], dtype=x.dtype, device=x.device)
    c_t = c.t()
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        blk = out[start:stop]
        torch.addmm(c_sq, x[start:stop], c_t, beta=1.0, alpha=-2.0, out=blk)
        blk.add_(x_sq[start:stop].unsqueeze(1))
    return out.clamp_(min=0)


def nearest_centroid(
    x: torch.Tensor, c: torch.Tensor, *, chunk_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of x, the index of its nearest row of c and that squared distance.

    Returns ``(labels, min_sq_dist)``: ``labels`` is ``(N,)`` int64, the
    distances are ``(N,)`` in the compute dtype.  Memory is bounded by
    ``chunk_size * K`` temporaries; ties go to the lowest centroid index.
    """
    check_pair(x, c)
    check_chunk_size(chunk_size)
    if c.shape[0] == 0:
        raise ValueError("c must contain at least one centroid, got shape "
                         f"{tuple(c.shape)}")
    x, c = promote(x, c)
    return _nearest(x, row_sq_norms(x), c, row_sq_norms(c), chunk_size)
