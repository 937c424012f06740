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
    no collectives; every rank selects on its own (the pre-0.2 behaviour).

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
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .requests import CALL_KINDS, SelectionRequest, SelectionResult

if TYPE_CHECKING:  # pragma: no cover
    from .selector import Selector

MODES = ("auto", "broadcast", "shard", "off")

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


@dataclass
class _Role:
    """What this rank does for one (kind, class) inside :func:`select_classes`."""

    action: str  # "compute" | "receive"
    mode: str
    owner: int
    row: torch.Tensor | None = None  # the received row (header + positions), for "receive"


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
    from .embedding import unwrap_network

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
def _kind_code(kind: str) -> int:
    return CALL_KINDS.index(kind)


def _header(status: int, kind: str, class_id: int, call_index: int, pool_size: int, n: int) -> list[int]:
    return [status, int(class_id), _kind_code(kind), int(call_index), int(pool_size), int(n)]


def _verify_row(row: torch.Tensor, kind: str, class_id: int, call_index: int, pool_size: int, n: int, src: int) -> torch.Tensor:
    """Check a received row against this rank's own call; return its positions (CPU int64)."""
    status, r_class, r_kind, r_call, r_pool, r_n = (int(v) for v in row[:_HDR].tolist())
    if status == _FAILED:
        raise DistributedSelectionError(
            f"rank {src} failed while selecting {kind!r} picks for class {class_id} (call {call_index}); "
            "see that rank's log for the error"
        )
    if status != _OK:
        raise DistributedSelectionError(f"rank {src} sent no picks for class {class_id} (status {status})")
    mine = (class_id, _kind_code(kind), call_index, pool_size, n)
    theirs = (r_class, r_kind, r_call, r_pool, r_n)
    if mine != theirs:
        def fmt(t: tuple[int, ...]) -> str:
            return f"class {t[0]}, kind {CALL_KINDS[t[1]] if 0 <= t[1] < len(CALL_KINDS) else t[1]!r}, call {t[2]}, pool {t[3]}, n={t[4]}"

        raise DistributedSelectionError(
            f"ranks disagree about a selection: this rank asked for {fmt(mine)} but rank {src} answered "
            f"{fmt(theirs)}; every rank must make the same selection calls in the same order with the same pools"
        )
    return row[_HDR:_HDR + n].to("cpu", torch.int64).clone()


def _broadcast_row(row: torch.Tensor | None, src: int, width: int) -> torch.Tensor:
    import torch.distributed as dist

    dev = comm_device()
    buf = row.to(dev) if row is not None else torch.zeros(width, dtype=torch.int64, device=dev)
    dist.broadcast(buf, src)
    return buf.cpu()


def _broadcast_answer(selector: "Selector", request: SelectionRequest, compute: Callable[[], Any], rank: int, world: int) -> Any:
    """Broadcast mode for one class: ``src`` computes, the others receive."""
    import torch.distributed as dist

    from .selector import _check_positions

    settings = selector.settings.distributed
    src = settings.src
    _check_src(src, world)
    check_sync_batchnorm(request.network, settings.sync_batchnorm, "broadcast")
    call_index = selector._calls.get((request.kind, request.class_id), 0)
    dev = comm_device()
    if rank == src:
        name = request.context.get("strategy_name", "?")
        try:
            with local_sync_batchnorm(request.network):
                answer = compute()
            result = answer if isinstance(answer, SelectionResult) else SelectionResult(positions=answer)
            who = request.context.get("answered_by", f"strategy:{name}")
            positions = _check_positions(result.positions, request.n, request.pool_size, request.class_id, who)
        except BaseException:
            head = torch.tensor(_header(_FAILED, request.kind, request.class_id, call_index, request.pool_size, request.n), device=dev)
            dist.broadcast(head, src)
            raise
        head = torch.tensor(_header(_OK, request.kind, request.class_id, call_index, request.pool_size, request.n), device=dev)
        dist.broadcast(head, src)
        dist.broadcast(positions.to(dev), src)
        request.context["answered_by"] = f"{who} (computed on rank {rank}, broadcast)"
        _log(selector, request.kind, request.class_id, call_index, "broadcast", rank, world, src)
        return result
    head = torch.zeros(_HDR, dtype=torch.int64, device=dev)
    dist.broadcast(head, src)
    head = head.cpu()
    if int(head[0]) == _OK:
        body = torch.zeros(int(head[5]), dtype=torch.int64, device=dev)
        dist.broadcast(body, src)
        row = torch.cat([head, body.cpu()])
    else:
        row = head
    positions = _verify_row(row, request.kind, request.class_id, call_index, request.pool_size, request.n, src)
    request.context["answered_by"] = f"received from rank {src} (broadcast)"
    _log(selector, request.kind, request.class_id, call_index, "broadcast", rank, world, src)
    return SelectionResult(positions=positions)


def _log(selector: "Selector", kind: str, class_id: int, call_index: int, mode: str, rank: int, world: int, owner: int) -> None:
    log = selector.__dict__.setdefault("distributed_log", [])
    log.append(DistributedEvent(kind, int(class_id), int(call_index), mode, rank, world, int(owner), owner == rank))


def consistent_answer(selector: "Selector", request: SelectionRequest, compute: Callable[[], Any]) -> Any:
    """The selector's hook point: run ``compute`` (the ``select_*`` hook) so all ranks agree.

    Without a process group, or with ``distributed.mode: off``, this is just ``compute()``.
    Inside :func:`select_classes` the role (compute here / receive from a rank) is preset;
    a plain :meth:`Selector.select` under a process group uses broadcast.
    """
    roles: dict[tuple[str, int], _Role] = selector.__dict__.get("_dist_roles") or {}
    role = roles.get((request.kind, request.class_id))
    if role is not None:
        info = group_info()
        rank, world = info if info is not None else (0, 1)
        call_index = selector._calls.get((request.kind, request.class_id), 0)
        if role.action == "compute":
            with local_sync_batchnorm(request.network):
                answer = compute()
            who = request.context.get("answered_by", f"strategy:{request.context.get('strategy_name', '?')}")
            request.context["answered_by"] = f"{who} (computed on rank {rank}, {role.mode})"
            _log(selector, request.kind, request.class_id, call_index, role.mode, rank, world, rank)
            return answer
        assert role.row is not None
        positions = _verify_row(role.row, request.kind, request.class_id, call_index, request.pool_size, request.n, role.owner)
        request.context["answered_by"] = f"received from rank {role.owner} ({role.mode})"
        _log(selector, request.kind, request.class_id, call_index, role.mode, rank, world, role.owner)
        return SelectionResult(positions=positions)
    info = group_info()
    if info is None or selector.settings.distributed.mode == "off":
        return compute()
    return _broadcast_answer(selector, request, compute, *info)


# ------------------------------------------------------------------------------ select_classes
def _per_class(values: Any, class_ids: list[int], what: str) -> dict[int, Any]:
    if isinstance(values, Mapping):
        missing = [c for c in class_ids if c not in values]
        if missing:
            raise ValueError(f"{what}: no entry for class(es) {missing[:10]}; give one per class in class_ids")
        return {c: values[c] for c in class_ids}
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a mapping class -> value or a sequence aligned with class_ids, got {type(values).__name__}")
    if len(values) != len(class_ids):
        raise ValueError(f"{what}: {len(values)} entries for {len(class_ids)} classes; give one per class in class_ids")
    return dict(zip(class_ids, values))


def _signature(class_ids: list[int], n: int, kind: str, mode: str) -> list[int]:
    from .selector import derive_seed

    return [len(class_ids), n, _kind_code(kind), MODES.index(mode), derive_seed(*class_ids)]


def select_classes(
    selector: "Selector",
    class_ids: Sequence[int],
    n: int,
    pools: Any,
    loads: Any,
    *,
    kind: str = "match",
    embed: Any = None,
    network: nn.Module | None = None,
    step: int | None = None,
    device: Any = None,
    embed_source: str = "none",
) -> dict[int, torch.Tensor]:
    """Implementation of :meth:`Selector.select_classes` (see there)."""
    import torch.distributed as dist

    if isinstance(class_ids, (str, bytes)) or not isinstance(class_ids, Sequence):
        raise TypeError(f"class_ids must be a sequence of ints, got {type(class_ids).__name__}")
    ids: list[int] = []
    for c in class_ids:
        if isinstance(c, bool) or not isinstance(c, int) and not (isinstance(c, torch.Tensor) and c.dim() == 0):
            raise TypeError(f"class_ids must hold ints, got {type(c).__name__} {c!r}")
        if int(c) < 0:
            raise ValueError(f"class_ids must be >= 0, got {int(c)}")
        ids.append(int(c))
    if not ids:
        raise ValueError("class_ids is empty; give at least one class")
    if len(set(ids)) != len(ids):
        dup = sorted({c for c in ids if ids.count(c) > 1})
        raise ValueError(f"class_ids must be distinct; repeated: {dup[:10]}")
    if kind not in CALL_KINDS:
        raise ValueError(f"kind: {kind!r} is not allowed; expected one of {', '.join(CALL_KINDS)}")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    if n <= 0:
        raise ValueError(f"n must be >= 1, got n={n}")
    pool_of = _per_class(pools, ids, "pools")
    load_of = _per_class(loads, ids, "loads")

    def one(c: int) -> torch.Tensor:
        return selector.select(c, n, pool_of[c], load_of[c], kind=kind, embed=embed, network=network, step=step,
                               device=device, embed_source=embed_source)

    def prepare(classes: list[int]) -> None:  # batched answers for the one(c) calls that follow
        selector._prepare_many(classes, n, pool_of, load_of, kind=kind, embed=embed, network=network, step=step,
                               device=device, embed_source=embed_source)

    info = group_info()
    settings = selector.settings.distributed
    mode = resolve_mode(settings.mode, len(ids), info[1] if info else 1)
    if info is None or mode == "off":
        try:
            prepare(ids)
            return {c: one(c) for c in ids}
        finally:
            selector._prepared.clear()
    rank, world = info
    _check_src(settings.src, world)
    check_sync_batchnorm(network, settings.sync_batchnorm, mode)
    dev = comm_device()

    # 1. every rank must be making the same call (else the collectives below would not line up)
    sig = torch.tensor(_signature(ids, n, kind, mode), dtype=torch.int64, device=dev)
    sigs = [torch.zeros_like(sig) for _ in range(world)]
    dist.all_gather(sigs, sig)
    for r, s in enumerate(sigs):
        if not torch.equal(s.cpu(), sig.cpu()):
            got = s.tolist()
            raise DistributedSelectionError(
                f"ranks disagree about select_classes: this rank (rank {rank}) has {len(ids)} classes, n={n}, "
                f"kind {kind!r}, mode {mode!r}; rank {r} has {got[0]} classes, n={got[1]}, kind "
                f"{CALL_KINDS[got[2]]!r}, mode {MODES[got[3]]!r}"
                + (" (same sizes, different class lists)" if got[:4] == sig.tolist()[:4] else "")
                + "; every rank must call select_classes with the same arguments"
            )

    # 2. compute this rank's share
    owner = {c: (owner_of(c, world) if mode == "shard" else settings.src) for c in ids}
    owned = {r: [c for c in ids if owner[c] == r] for r in range(world)}
    width = _HDR + n
    rows_per_rank = max(len(v) for v in owned.values())
    mine = owned[rank]
    rows = torch.zeros(rows_per_rank if mode == "shard" else len(ids), width, dtype=torch.int64)
    errors: dict[int, BaseException] = {}
    roles = selector.__dict__.setdefault("_dist_roles", {})
    try:
        with local_sync_batchnorm(network):  # this rank embeds alone: no SyncBN collectives
            prepare(mine)
    except Exception:  # noqa: BLE001 - the per-class calls below meet the error and report it
        selector._prepared.clear()
    try:
        for j, c in enumerate(mine):
            call_index = selector._calls.get((kind, c), 0)
            pool_size = int(torch.as_tensor(pool_of[c]).numel())
            roles[(kind, c)] = _Role("compute", mode, rank)
            try:
                positions = one(c)
                rows[j, :_HDR] = torch.tensor(_header(_OK, kind, c, call_index, pool_size, n))
                rows[j, _HDR:] = positions
            except Exception as exc:  # noqa: BLE001 - reported to every rank after the exchange
                errors[c] = exc
                rows[j, :_HDR] = torch.tensor(_header(_FAILED, kind, c, call_index, pool_size, n))
            finally:
                roles.pop((kind, c), None)
    finally:
        selector._prepared.clear()

    # 3. exchange
    if mode == "shard":
        local = rows.to(dev)
        gathered = [torch.zeros_like(local) for _ in range(world)]
        dist.all_gather(gathered, local)
        table = {c: gathered[r][j].cpu() for r in range(world) for j, c in enumerate(owned[r])}
    else:
        buf = rows.to(dev)
        dist.broadcast(buf, settings.src)
        buf = buf.cpu()
        table = {c: buf[j] for j, c in enumerate(ids)}

    failed = [c for c in ids if int(table[c][0]) == _FAILED]
    if failed:
        if errors:
            raise next(iter(errors.values()))
        c = failed[0]
        raise DistributedSelectionError(
            f"rank {owner[c]} failed while selecting {kind!r} picks for class {c} ({len(failed)} class(es) failed "
            f"in this {mode} exchange: {failed[:10]}); see that rank's log for the error"
        )

    # 4. every rank records the classes it received (advancing its call counters like the computing rank)
    out: dict[int, torch.Tensor] = {}
    for c in ids:
        if owner[c] == rank:
            out[c] = table[c][_HDR:].clone()
            continue
        roles[(kind, c)] = _Role("receive", mode, owner[c], table[c])
        try:
            out[c] = one(c)
        finally:
            roles.pop((kind, c), None)
    return out
