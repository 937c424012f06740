"""Rank consistency under ``torch.distributed``: every rank gets the same picks for the same call.

DREAM embeds each class with the live network. Under data parallelism every rank holds its own
replica, and tiny numeric differences (non-deterministic kernels, rank-dependent augmentation,
different GPUs) are enough for k-means to settle on different centroids, so ranks would match
their synthetic images against *different* real batches: a silent corruption of the gradient
average. This module makes the answer a collective one:

``broadcast``
    one rank (``distributed.src``) computes the picks and broadcasts them.
``shard``
    the classes of one re-selection (:meth:`Selector.select_classes`) are split across ranks --
    class ``c`` on rank ``c % world_size``, a rule that keeps a class on the same rank from call to
    call, so DREAM's per-class interval cache stays coherent -- and the picks are all-gathered.
``auto`` (default)
    ``shard`` when a re-selection covers at least ``world_size`` classes (every rank has work),
    otherwise ``broadcast``. A single-class :meth:`Selector.select` always uses broadcast.
``off``
    no collectives; every rank selects on its own.

Every exchange carries a header (class, call kind, the selector's call index, pool size, n) that
the receiving ranks check against their own call, so ranks that drifted apart (different call
order, different pool) fail loudly instead of silently matching different images. Errors on the
computing rank are sent as an error status, so the other ranks raise too instead of hanging.

Collectives use CPU tensors under gloo and tensors on the current CUDA device under NCCL.
Without an initialised process group (or with ``world_size == 1``) nothing here communicates.

Diagnostics stay per rank and honest: the computing rank's :class:`SelectionRecord` carries the
embedding/clustering times and k-means statistics; a receiving rank's record has none of that work
(``reclustered=False``, zero times) and its ``answered_by`` names the rank it received from.
``Selector.distributed_log`` keeps one :class:`DistributedEvent` per exchanged selection.
"""

from __future__ import annotations

import contextlib
import logging
import time
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch import nn

from dream_plugin.core.requests import CALL_KINDS, SelectionAnswer, SelectionCall, SelectionResult
from dream_plugin.common.seeds import derive_seed

if TYPE_CHECKING:  # pragma: no cover
    from dream_plugin.core.config import DistributedSettings

AnswerFn = Callable[[Sequence[SelectionCall]], "list[SelectionAnswer]"]
"""The selector's local answering path (:meth:`dream_plugin.core.selector.Selector.answer`)."""

MODES = ("auto", "broadcast", "shard", "off")

logger = logging.getLogger(__name__)

# header columns of one exchanged row: status, class, kind, call index, pool size, n
_HDR = 6
_OK, _FAILED, _EMPTY = 1, 2, 0


class DistributedSelectionError(RuntimeError):
    """Ranks disagree about a selection call, or the computing rank failed."""


@dataclass(frozen=True)
class DistributedEvent:
    """One selection exchanged between ranks, as seen by this rank."""

    kind: str
    class_id: int
    call_index: int
    mode: str
    rank: int
    world_size: int
    computed_by: int
    computed_here: bool


# ------------------------------------------------------------------------------------ group info
def group_info() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the default process group, or None when there is none to honour."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    if world <= 1:
        return None
    return dist.get_rank(), world


def resolve_mode(mode: str, n_classes: int, world_size: int) -> str:
    """The effective mode: ``auto`` is ``shard`` when ``n_classes >= world_size``, else ``broadcast``."""
    if mode not in MODES:
        raise ValueError(f"distributed.mode: {mode!r} is not allowed; expected one of {', '.join(MODES)}")
    if mode == "auto":
        return "shard" if n_classes >= world_size else "broadcast"
    return mode


def owner_of(class_id: int, world_size: int) -> int:
    """The rank that computes ``class_id`` in shard mode."""
    return int(class_id) % int(world_size)


def comm_device() -> torch.device:
    """Where collective buffers live: the current CUDA device under NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_src(src: int, world: int) -> None:
    if src >= world:
        raise ValueError(f"distributed.src: {src} is not allowed; expected a rank in 0..{world - 1} (world_size={world})")


# ------------------------------------------------------------------------------- SyncBatchNorm
def _train_sync_bn(network: nn.Module | None) -> list[tuple[str, nn.Module]]:
    if network is None:
        return []
    from dream_plugin.engine.embedding import unwrap_network

    return [(n or "<root>", m) for n, m in unwrap_network(network).named_modules() if isinstance(m, nn.SyncBatchNorm) and m.training]


def check_sync_batchnorm(network: nn.Module | None, policy: str, mode: str) -> None:
    """Refuse train-mode SyncBatchNorm under ``sync_batchnorm: error`` (raised on every rank alike)."""
    found = _train_sync_bn(network)
    if found and policy == "error":
        names = ", ".join(n for n, _ in found[:5]) + (", ..." if len(found) > 5 else "")
        raise DistributedSelectionError(
            f"the network has train-mode SyncBatchNorm layers ({names}); under distributed.mode={mode} only "
            "the computing rank(s) embed, so their collectives would never be matched (deadlock). Allowed: "
            "distributed.sync_batchnorm: local (per-rank batch statistics while embedding), the network in "
            "eval mode, or distributed.mode: off"
        )


def _local_bn_forward(self: nn.Module, input: torch.Tensor) -> torch.Tensor:
    return nn.modules.batchnorm._BatchNorm.forward(self, input)


@contextlib.contextmanager
def local_sync_batchnorm(network: nn.Module | None) -> Iterator[int]:
    """While embedding, train-mode SyncBatchNorm layers normalise with this rank's batch statistics.

    A train-mode SyncBatchNorm all-reduces its batch statistics across ranks. When only some ranks
    embed (shard/broadcast) that collective is never matched, so for the duration of the block the
    layers run the plain BatchNorm forward (batch statistics of the chunk, as BatchNorm2d does in
    train mode; running statistics untouched, see ``frozen_batchnorm_stats``). Only an instance
    attribute is set and removed again; yields the number of layers affected.
    """
    found = [m for _, m in _train_sync_bn(network)]
    patched = []
    try:
        for m in found:
            if "forward" in m.__dict__:
                continue  # the user rebound forward themselves; leave it alone
            m.forward = types.MethodType(_local_bn_forward, m)
            patched.append(m)
        yield len(patched)
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


# ------------------------------------------------------------------------------------ exchange
def consistent_answers(
    calls: Sequence[SelectionCall], answer_locally: AnswerFn, settings: "DistributedSettings", *, batch: bool
) -> tuple[list[SelectionAnswer], list[DistributedEvent]]:
    """Answers to ``calls`` that every rank shares, and this rank's events of the exchange.

    ``answer_locally`` is the selector's own answering path. Without a process group, or with
    ``distributed.mode: off``, it simply answers every call here. Otherwise the owning rank(s)
    answer and the answers are exchanged: ``batch`` calls (one re-selection, :meth:`Selector.select_classes`)
    follow ``distributed.mode``; a single call (:meth:`Selector.select`) is broadcast from ``distributed.src``.
    """
    info = group_info()
    if info is None or settings.mode == "off":
        return answer_locally(calls), []
    rank, world = info
    mode = resolve_mode(settings.mode, len(calls), world) if batch else "broadcast"
    _check_src(settings.src, world)
    network = calls[0].request.network
    check_sync_batchnorm(network, settings.sync_batchnorm, mode)
    if batch:
        _check_same_call(calls, mode, rank, world)
    owner = [owner_of(c.request.class_id, world) if mode == "shard" else settings.src for c in calls]
    start = time.perf_counter()
    mine = [i for i, o in enumerate(owner) if o == rank]
    computed: dict[int, SelectionAnswer] = {}
    error: Exception | None = None
    if mine:
        try:
            with local_sync_batchnorm(network):  # this rank embeds alone: no SyncBN collectives
                computed = dict(zip(mine, answer_locally([calls[i] for i in mine])))
        except Exception as exc:  # noqa: BLE001 - sent as a failure status, raised after the exchange
            error = exc
    rows = _exchange(calls, owner, computed, mode, rank, world, settings.src)
    logger.debug("rank %d/%d: %s exchange of %d selection(s), %d computed here", rank, world, mode, len(calls), len(mine))
    received_share = (time.perf_counter() - start) / len(calls)
    _raise_failures(calls, owner, rows, mode, error)
    answers, events = [], []
    for i, call in enumerate(calls):
        req = call.request
        if owner[i] == rank:
            a = computed[i]
            answers.append(SelectionAnswer(a.result, a.positions, f"{a.answered_by} (computed on rank {rank}, {mode})",
                                           a.seconds))
        else:
            positions = _verify_row(rows[i], call, owner[i])
            answers.append(SelectionAnswer(SelectionResult(positions=positions), positions,
                                           f"received from rank {owner[i]} ({mode})", received_share))
        events.append(DistributedEvent(req.kind, req.class_id, call.call_index, mode, rank, world, owner[i],
                                       owner[i] == rank))
    return answers, events


def _kind_code(kind: str) -> int:
    return CALL_KINDS.index(kind)


def _header(status: int, call: SelectionCall) -> list[int]:
    r = call.request
    return [status, r.class_id, _kind_code(r.kind), call.call_index, r.pool_size, r.n]


def _row(call: SelectionCall, answer: SelectionAnswer | None, width: int) -> torch.Tensor:
    """One exchanged row: header, then the positions (zeros after a failure)."""
    row = torch.zeros(width, dtype=torch.int64)
    row[:_HDR] = torch.tensor(_header(_OK if answer is not None else _FAILED, call))
    if answer is not None:
        row[_HDR:_HDR + answer.positions.numel()] = answer.positions
    return row


def _exchange(
    calls: Sequence[SelectionCall], owner: list[int], computed: dict[int, SelectionAnswer], mode: str,
    rank: int, world: int, src: int,
) -> dict[int, torch.Tensor]:
    """Every call's row (header + positions) on every rank: all-gathered (shard) or broadcast."""
    import torch.distributed as dist

    dev = comm_device()
    if mode == "shard":  # the calls are the same on every rank (checked), so are n and the row counts
        width = _HDR + calls[0].request.n
        owned = {r: [i for i, o in enumerate(owner) if o == r] for r in range(world)}
        per_rank = max(len(v) for v in owned.values())
        local = torch.zeros(per_rank, width, dtype=torch.int64)
        for j, i in enumerate(owned[rank]):
            local[j] = _row(calls[i], computed.get(i), width)
        gathered = [torch.zeros_like(local, device=dev) for _ in range(world)]
        dist.all_gather(gathered, local.to(dev))
        return {i: gathered[r][j].cpu() for r in range(world) for j, i in enumerate(owned[r])}
    # broadcast: the headers first, so that ranks whose calls differ in n still agree on the sizes
    head = torch.zeros(len(calls), _HDR, dtype=torch.int64)
    if rank == src:
        for i, call in enumerate(calls):
            head[i] = torch.tensor(_header(_OK if i in computed else _FAILED, call))
    head_dev = head.to(dev)
    dist.broadcast(head_dev, src)
    head = head_dev.cpu()
    n_src = max((int(h[5]) for h in head if int(h[0]) == _OK), default=0)
    body = torch.zeros(len(calls), n_src, dtype=torch.int64)
    if rank == src:
        for i, a in computed.items():
            body[i, :a.positions.numel()] = a.positions
    if n_src:
        body_dev = body.to(dev)
        dist.broadcast(body_dev, src)
        body = body_dev.cpu()
    return {i: torch.cat([head[i], body[i]]) for i in range(len(calls))}


def _raise_failures(calls: Sequence[SelectionCall], owner: list[int], rows: dict[int, torch.Tensor], mode: str,
                    error: Exception | None) -> None:
    """Raise on every rank when any computing rank failed: its own error there, else a clear one."""
    failed = [i for i in range(len(calls)) if int(rows[i][0]) == _FAILED]
    if error is not None:
        raise error
    if failed:
        i = failed[0]
        req = calls[i].request
        raise DistributedSelectionError(
            f"rank {owner[i]} failed while selecting {req.kind!r} picks for class {req.class_id} (call "
            f"{calls[i].call_index}; {len(failed)} class(es) failed in this {mode} exchange: "
            f"{[calls[j].request.class_id for j in failed][:10]}); see that rank's log for the error"
        )


def _verify_row(row: torch.Tensor, call: SelectionCall, src: int) -> torch.Tensor:
    """Check a received row against this rank's own call; return its positions (CPU int64)."""
    req = call.request
    status, r_class, r_kind, r_call, r_pool, r_n = (int(v) for v in row[:_HDR].tolist())
    if status != _OK:
        raise DistributedSelectionError(f"rank {src} sent no picks for class {req.class_id} (status {status})")
    mine = (req.class_id, _kind_code(req.kind), call.call_index, req.pool_size, req.n)
    theirs = (r_class, r_kind, r_call, r_pool, r_n)
    if mine != theirs:
        def fmt(t: tuple[int, ...]) -> str:
            kind = CALL_KINDS[t[1]] if 0 <= t[1] < len(CALL_KINDS) else t[1]
            return f"class {t[0]}, kind {kind!r}, call {t[2]}, pool {t[3]}, n={t[4]}"

        raise DistributedSelectionError(
            f"ranks disagree about a selection: this rank asked for {fmt(mine)} but rank {src} answered "
            f"{fmt(theirs)}; every rank must make the same selection calls in the same order with the same pools"
        )
    return row[_HDR:_HDR + req.n].to("cpu", torch.int64).clone()


def _check_same_call(calls: Sequence[SelectionCall], mode: str, rank: int, world: int) -> None:
    """Every rank must be making the same ``select_classes`` call, else the collectives would not line up."""
    import torch.distributed as dist

    first = calls[0].request
    ids = [c.request.class_id for c in calls]
    sig = torch.tensor([len(ids), first.n, _kind_code(first.kind), MODES.index(mode), derive_seed(*ids)],
                       dtype=torch.int64, device=comm_device())
    sigs = [torch.zeros_like(sig) for _ in range(world)]
    dist.all_gather(sigs, sig)
    for r, s in enumerate(sigs):
        if not torch.equal(s.cpu(), sig.cpu()):
            got = s.tolist()
            raise DistributedSelectionError(
                f"ranks disagree about select_classes: this rank (rank {rank}) has {len(ids)} classes, n={first.n}, "
                f"kind {first.kind!r}, mode {mode!r}; rank {r} has {got[0]} classes, n={got[1]}, kind "
                f"{CALL_KINDS[got[2]]!r}, mode {MODES[got[3]]!r}"
                + (" (same sizes, different class lists)" if got[:4] == sig.tolist()[:4] else "")
                + "; every rank must call select_classes with the same arguments"
            )
