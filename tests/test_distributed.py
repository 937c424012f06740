"""Rank consistency under torch.distributed: a real 2-process gloo group on CPU.

One spawned pair of workers runs every scenario (spawning costs seconds, so it happens once per
module); each writes what it saw to a file that the tests below read. The two ranks' embeddings
differ on purpose (rank-dependent noise added in the embed function), so without the consistency
mechanism (``mode: off``) they pick differently -- the first test shows that -- and every other
scenario must nevertheless give both ranks identical picks.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch import nn

from dream_plugin.core.config import ConfigError, DistributedSettings, PluginSettings, Settings, parse_settings
from dream_plugin.core.distributed import (
    DistributedSelectionError,
    check_sync_batchnorm,
    local_sync_batchnorm,
    owner_of,
    resolve_mode,
)
from dream_plugin.core.manager import build_plugin_manager
from dream_plugin.core.selector import Selector

WORLD = 2
CLASSES = 4
POOL = 40
N = 5
TIMEOUT_S = 120


# ------------------------------------------------------------------------------ shared helpers
class TinyNet(nn.Module):
    def __init__(self, norm: str = "bn") -> None:
        super().__init__()
        norm_layer = nn.SyncBatchNorm(8) if norm == "syncbn" else nn.BatchNorm2d(8)
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), norm_layer, nn.ReLU(), nn.AvgPool2d(2))
        self.classifier = nn.Linear(8 * 4 * 4, CLASSES)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def make_data() -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    images = torch.randn(CLASSES * POOL, 1, 8, 8, generator=g)
    pools = [torch.arange(c * POOL, (c + 1) * POOL) for c in range(CLASSES)]
    return images, pools


def make_selector(**distributed) -> Selector:
    settings = Settings(distributed=DistributedSettings(**distributed), options={"dream": {"kmeans": {"max_iter": 30}}})
    return Selector(settings, plugin_manager=build_plugin_manager(PluginSettings(autoload=False)))


def noisy_embedder(net: nn.Module, rank: int):
    """The network's embedding plus rank-dependent noise: the ranks' features differ."""
    from dream_plugin.engine.embedding import resolve_embedder

    embed, _ = resolve_embedder(net)

    def fn(x: torch.Tensor) -> torch.Tensor:
        f = embed(x)
        g = torch.Generator().manual_seed(1000 + rank)  # the same noise for the same call: deterministic
        return f + 0.5 * f.std() * torch.randn(f.shape, generator=g)

    return fn


def loaders(images: torch.Tensor, pools: list[torch.Tensor]):
    return [(lambda pos, p=p: images[p[pos]]) for p in pools]


def _pick_dict(picks: dict[int, torch.Tensor]) -> dict[int, list[int]]:
    return {int(c): p.tolist() for c, p in picks.items()}


# ----------------------------------------------------------------------------------- the worker
def _scenarios(rank: int) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: dict = {}
    images, pools = make_data()
    loads = loaders(images, pools)
    ids = list(range(CLASSES))
    torch.manual_seed(0)
    net = TinyNet()
    embed = noisy_embedder(net, rank)

    def run(sel: Selector, **kw):
        return _pick_dict(sel.select_classes(ids, N, pools, loads, embed=embed, network=net, **kw))

    # A. no consistency: the ranks' noisy embeddings make them pick differently
    out["off"] = run(make_selector(mode="off"))

    # B. broadcast from rank 1 (not the default src, to see the setting is honoured)
    sel = make_selector(mode="broadcast", src=1)
    out["broadcast"] = run(sel)
    out["broadcast_events"] = [vars(e) for e in sel.distributed_log]
    out["broadcast_records"] = [r.as_dict() for r in sel.records]

    # C. shard, twice (the second call reuses DREAM's interval cache on the owning rank)
    sel = make_selector(mode="shard")
    out["shard"] = run(sel)
    out["shard_again"] = run(sel)
    out["shard_events"] = [vars(e) for e in sel.distributed_log]
    out["shard_records"] = [r.as_dict() for r in sel.records]

    # D. auto: 4 classes >= 2 ranks -> shard; 1 class < 2 ranks -> broadcast
    sel = make_selector(mode="auto")
    out["auto_many"] = run(sel)
    out["auto_one"] = _pick_dict(sel.select_classes([2], N, [pools[2]], [loads[2]], embed=embed, network=net))
    out["auto_modes"] = [(e.class_id, e.mode) for e in sel.distributed_log]

    # E. plain select under the process group: broadcast, one class at a time
    sel = make_selector()
    out["plain"] = [sel.select(3, N, pools[3], loads[3], embed=embed, network=net).tolist() for _ in range(2)]
    out["plain_events"] = [vars(e) for e in sel.distributed_log]

    # F. DDP-wrapped network: embedding goes through the inner module (no DDP forward, no buffer
    #    broadcast); afterwards a DDP training step still lines up across ranks
    torch.manual_seed(rank)  # different init per rank: DDP's constructor broadcasts rank 0's weights
    ddp = DDP(TinyNet())
    before = {k: v.clone() for k, v in ddp.module.state_dict().items()}
    dembed = noisy_embedder(ddp, rank)
    sel = make_selector(mode="shard")
    out["ddp"] = _pick_dict(sel.select_classes(ids, N, pools, loads, embed=dembed, network=ddp))
    out["ddp_state_unchanged"] = all(torch.equal(before[k], v) for k, v in ddp.module.state_dict().items())
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x = images[rank * 10:(rank + 1) * 10]  # different data per rank: DDP must all-reduce the grads
    loss = ddp(x).logsumexp(1).mean()
    loss.backward()
    opt.step()
    out["ddp_param_sum"] = float(sum(p.detach().double().sum() for p in ddp.parameters()))

    # G. train-mode SyncBatchNorm: local statistics while embedding (shard), or a clear refusal
    torch.manual_seed(0)
    snet = TinyNet("syncbn")
    sembed = noisy_embedder(snet, rank)
    sel = make_selector(mode="shard")
    out["syncbn"] = _pick_dict(sel.select_classes(ids, N, pools, loads, embed=sembed, network=snet))
    out["syncbn_forward_restored"] = "forward" not in snet.features[1].__dict__
    sel = make_selector(mode="shard", sync_batchnorm="error")
    try:
        sel.select_classes(ids, N, pools, loads, embed=sembed, network=snet)
        out["syncbn_error"] = None
    except DistributedSelectionError as exc:
        out["syncbn_error"] = str(exc)

    # H. ranks that disagree (rank 1's pool of class 0 is one image shorter) fail loudly
    sel = make_selector(mode="broadcast")
    pool0 = pools[0] if rank == 0 else pools[0][:-1]
    try:
        sel.select(0, N, pool0, loads[0], embed=embed, network=net)
        out["mismatch"] = None
    except DistributedSelectionError as exc:
        out["mismatch"] = str(exc)

    # I. the computing rank fails (no network for an init call): every rank raises, none hangs
    sel = make_selector(mode="broadcast")
    try:
        sel.select(1, N, pools[1], loads[1], kind="init", embed=None, network=None)
        out["failure"] = None
    except Exception as exc:  # noqa: BLE001
        out["failure"] = f"{type(exc).__name__}: {exc}"

    # J. select_classes called with different n on the ranks
    sel = make_selector(mode="shard")
    try:
        sel.select_classes(ids, N + rank, pools, loads, embed=embed, network=net)
        out["signature"] = None
    except DistributedSelectionError as exc:
        out["signature"] = str(exc)

    dist.barrier()  # still in step after all of the above
    return out


def _worker(rank: int, world: int, port: int, outdir: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
        result = _scenarios(rank)
        torch.save(result, Path(outdir) / f"rank{rank}.pt")
    except BaseException:  # noqa: BLE001 - the parent reports it
        (Path(outdir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    import multiprocessing as mp

    outdir = tmp_path_factory.mktemp("dist")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, WORLD, port, str(outdir)), daemon=True) for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for r in hung:
        procs[r].kill()
        procs[r].join(5)
    errors = {r: (outdir / f"rank{r}.err").read_text() for r in range(WORLD) if (outdir / f"rank{r}.err").exists()}
    if hung:
        pytest.fail(f"2-process gloo run did not finish within {TIMEOUT_S} s; ranks {hung} killed (deadlock?). Errors: {errors}")
    if errors or any(p.exitcode != 0 for p in procs):
        pytest.fail(f"worker(s) failed: exit codes {[p.exitcode for p in procs]}\n" + "\n".join(f"rank {r}:\n{t}" for r, t in errors.items()))
    return [torch.load(outdir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# --------------------------------------------------------------------------- 2-process tests
def test_without_consistency_the_noisy_ranks_pick_differently(ranks):
    r0, r1 = ranks
    assert r0["off"] != r1["off"], "the test needs ranks whose own picks differ; raise the noise"


@pytest.mark.parametrize("key", ["broadcast", "shard", "shard_again", "auto_many", "auto_one", "plain", "ddp", "syncbn"])
def test_every_rank_gets_identical_picks(ranks, key):
    r0, r1 = ranks
    assert r0[key] == r1[key]


def test_broadcast_computes_on_src_only(ranks):
    r0, r1 = ranks
    for rank, r in enumerate(ranks):
        assert [(e["class_id"], e["computed_by"], e["computed_here"], e["mode"]) for e in r["broadcast_events"]] == [
            (c, 1, rank == 1, "broadcast") for c in range(CLASSES)
        ]
    # the picks are those rank 1 computes on its own (its noisy features), not rank 0's
    assert r0["broadcast"] == r1["off"]
    src_rec = r1["broadcast_records"]
    rcv_rec = r0["broadcast_records"]
    assert all(rec["reclustered"] and rec["embed_seconds"] > 0 and "computed on rank 1" in rec["answered_by"] for rec in src_rec)
    assert all(not rec["reclustered"] and rec["embed_seconds"] == 0 and rec["kmeans_iterations"] is None
               and rec["answered_by"] == "received from rank 1 (broadcast)" for rec in rcv_rec)


def test_shard_splits_the_classes_by_class_modulo_world_size(ranks):
    for rank, r in enumerate(ranks):
        computed = sorted(e["class_id"] for e in r["shard_events"] if e["computed_here"] and e["call_index"] == 0)
        assert computed == [c for c in range(CLASSES) if c % WORLD == rank]
        assert all(e["computed_by"] == e["class_id"] % WORLD and e["mode"] == "shard" for e in r["shard_events"])
        assert {(e["class_id"], e["call_index"]) for e in r["shard_events"]} == {(c, i) for c in range(CLASSES) for i in (0, 1)}
        # every rank keeps the same call counters, whoever computed
        assert sorted((rec["class_id"], rec["step"]) for rec in r["shard_records"]) == [(c, i) for c in range(CLASSES) for i in (0, 1)]
    # each class's picks are what its owner computes on its own
    for c in range(CLASSES):
        assert ranks[0]["shard"][c] == ranks[c % WORLD]["off"][c]
    # the second call reused the owner's interval cache: same picks, not reclustered
    assert ranks[0]["shard_again"] == ranks[0]["shard"]
    rec = ranks[1]["shard_records"]
    assert [r["reclustered"] for r in rec if r["class_id"] == 1] == [True, False]


def test_auto_shards_many_classes_and_broadcasts_few(ranks):
    modes = ranks[0]["auto_modes"]
    assert sorted(modes[:CLASSES]) == [(c, "shard") for c in range(CLASSES)] and modes[CLASSES:] == [(2, "broadcast")]


def test_plain_select_broadcasts_from_rank_0(ranks):
    r0, r1 = ranks
    assert [(e["computed_by"], e["computed_here"]) for e in r1["plain_events"]] == [(0, False), (0, False)]
    assert [(e["computed_by"], e["computed_here"]) for e in r0["plain_events"]] == [(0, True), (0, True)]


def test_ddp_network_is_embedded_without_side_effects_and_training_stays_in_step(ranks):
    r0, r1 = ranks
    assert r0["ddp_state_unchanged"] and r1["ddp_state_unchanged"]
    assert r0["ddp_param_sum"] == pytest.approx(r1["ddp_param_sum"], rel=0, abs=1e-9)


def test_sync_batchnorm_local_statistics_or_clear_refusal(ranks):
    for r in ranks:
        assert r["syncbn_forward_restored"]
        assert r["syncbn_error"] is not None
        assert "train-mode SyncBatchNorm layers (features.1)" in r["syncbn_error"]
        assert "distributed.sync_batchnorm: local" in r["syncbn_error"]


def test_disagreeing_ranks_fail_loudly(ranks):
    r0, r1 = ranks
    assert r0["mismatch"] is None  # the src answered its own call
    assert "ranks disagree" in r1["mismatch"] and "pool 39" in r1["mismatch"] and "pool 40" in r1["mismatch"]
    for r in ranks:
        assert "ranks disagree about select_classes" in r["signature"] and "n=5" in r["signature"] and "n=6" in r["signature"]


def test_failure_on_the_computing_rank_reaches_every_rank(ranks):
    r0, r1 = ranks
    assert r0["failure"].startswith("ValueError") and "needs embeddings" in r0["failure"]
    assert r1["failure"].startswith("DistributedSelectionError") and "rank 0 failed" in r1["failure"]


# ------------------------------------------------------------------------ single-process tests
def test_select_classes_without_a_process_group_equals_select_per_class(tiny_net):
    images, pools = make_data()
    loads = loaders(images, pools)
    from dream_plugin.engine.embedding import resolve_embedder

    embed, _ = resolve_embedder(tiny_net)
    a = make_selector(mode="shard").select_classes([3, 1], N, {3: pools[3], 1: pools[1]}, {3: loads[3], 1: loads[1]},
                                                    embed=embed, network=tiny_net)
    b = make_selector()
    assert list(a) == [3, 1]
    for c in (3, 1):
        assert torch.equal(a[c], b.select(c, N, pools[c], loads[c], embed=embed, network=tiny_net))


@pytest.mark.parametrize(
    ("ids", "pools", "err", "msg"),
    [
        ([0, 0], [torch.arange(5)] * 2, ValueError, r"class_ids must be distinct; repeated: \[0\]"),
        ([], [], ValueError, "class_ids is empty"),
        ([0, 1], [torch.arange(5)], ValueError, "pools: 1 entries for 2 classes"),
        ([0, 1], {0: torch.arange(5)}, ValueError, r"pools: no entry for class\(es\) \[1\]"),
        ([-1], [torch.arange(5)], ValueError, "class_ids must be >= 0, got -1"),
        (["a"], [torch.arange(5)], TypeError, "class_ids must hold ints, got str 'a'"),
        ([0], [torch.arange(5)], TypeError, "n must be an int, got float 2.0"),
    ],
)
def test_select_classes_rejects_bad_arguments(ids, pools, err, msg):
    loads = {c: (lambda p: torch.zeros(len(p), 1, 8, 8)) for c in range(3)}
    with pytest.raises(err, match=msg):
        make_selector().select_classes(ids, 2.0 if "float" in msg else 2, pools, loads)


def test_mode_rules_and_owner():
    assert resolve_mode("auto", 8, 8) == "shard" and resolve_mode("auto", 7, 8) == "broadcast"
    assert resolve_mode("off", 100, 2) == "off" and resolve_mode("broadcast", 100, 2) == "broadcast"
    assert [owner_of(c, 3) for c in range(5)] == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="distributed.mode: 'sharded' is not allowed; expected one of auto, broadcast, shard, off"):
        resolve_mode("sharded", 1, 2)


def test_distributed_settings_are_validated():
    assert parse_settings({"distributed": {"mode": "shard", "src": 1}}).distributed == DistributedSettings("shard", 1)
    with pytest.raises(ConfigError, match="distributed.mode: 'all' is not allowed; expected one of 'auto', 'broadcast', 'shard', 'off'"):
        parse_settings({"distributed": {"mode": "all"}})
    with pytest.raises(ConfigError, match="distributed.src: -1 is not allowed"):
        parse_settings({"distributed": {"src": -1}})
    with pytest.raises(ConfigError, match="distributed.sync_batchnorm: 'sync' is not allowed; expected one of 'local', 'error'"):
        parse_settings({"distributed": {"sync_batchnorm": "sync"}})


def test_local_sync_batchnorm_uses_batch_statistics_and_restores():
    torch.manual_seed(0)
    net = TinyNet("syncbn").train()
    ref = TinyNet("bn").train()
    ref.load_state_dict(net.state_dict())
    x = torch.randn(6, 1, 8, 8)
    with local_sync_batchnorm(net) as patched, torch.no_grad():
        assert patched == 1
        assert torch.allclose(net.embed(x), ref.embed(x), atol=1e-6)
    assert "forward" not in net.features[1].__dict__
    net.eval()
    with local_sync_batchnorm(net) as patched:
        assert patched == 0  # eval-mode SyncBatchNorm does not communicate: left alone
    check_sync_batchnorm(net, "error", "shard")  # eval mode: fine
    with pytest.raises(DistributedSelectionError, match="features.1"):
        check_sync_batchnorm(net.train(), "error", "shard")


def test_select_classes_clusters_the_classes_as_one_batch(tiny_net):
    images, pools = make_data()
    loads = loaders(images, pools)
    from dream_plugin.engine.embedding import resolve_embedder

    embed, _ = resolve_embedder(tiny_net)
    sel = make_selector()
    strategy = sel.strategy("dream")
    batches = []
    original = strategy.select_many
    strategy.select_many = lambda reqs: batches.append([r.class_id for r in reqs]) or original(reqs)
    ids = [0, 1, 2, 3]
    out = sel.select_classes(ids, N, pools, loads, embed=embed, network=tiny_net)
    assert batches == [ids]
    per_class = make_selector()
    for c in ids:
        assert torch.equal(out[c], per_class.select(c, N, pools[c], loads[c], embed=embed, network=tiny_net))
    assert [r.class_id for r in sel.records] == ids
    assert all(r.reclustered and r.seconds > 0 for r in sel.records)  # each carries its share of the batch


def test_select_classes_batches_what_no_plugin_answered(tiny_net):
    from dream_plugin import hookimpl
    from dream_plugin.engine.embedding import resolve_embedder

    images, pools = make_data()
    loads = loaders(images, pools)
    embed, _ = resolve_embedder(tiny_net)

    class ClassZeroFirst:
        @hookimpl
        def select_real_batch(self, request):
            return torch.arange(request.n) if request.class_id == 0 else None

    sel = make_selector()
    sel.pm.register(ClassZeroFirst(), name="class-zero-first")
    strategy = sel.strategy("dream")
    batches = []
    original = strategy.select_many
    strategy.select_many = lambda reqs: batches.append([r.class_id for r in reqs]) or original(reqs)
    out = sel.select_classes([0, 1, 2], N, pools[:3], loads[:3], embed=embed, network=tiny_net)
    assert batches == [[1, 2]]
    assert torch.equal(out[0], torch.arange(N))
    assert [r.answered_by for r in sel.records] == ["plugin:class-zero-first", "strategy:dream", "strategy:dream"]
    plain = make_selector()
    for c in (1, 2):
        assert torch.equal(out[c], plain.select(c, N, pools[c], loads[c], embed=embed, network=tiny_net))


def test_an_unrelated_plugin_changes_neither_the_path_nor_the_picks(tiny_net):
    from dream_plugin import hookimpl
    from dream_plugin.engine.embedding import resolve_embedder

    images, pools = make_data()
    loads = loaders(images, pools)
    embed, _ = resolve_embedder(tiny_net)

    class Bystander:  # implements the selection hook but never answers, and observes
        seen = 0

        @hookimpl
        def select_real_batch(self, request):
            return None

        @hookimpl
        def selection_done(self, record):
            Bystander.seen += 1

    outs, batches = [], []
    for extra in (False, True):
        sel = make_selector()
        if extra:
            sel.pm.register(Bystander(), name="bystander")
        strategy = sel.strategy("dream")
        original = strategy.select_many
        strategy.select_many = lambda reqs, o=original: batches.append([r.class_id for r in reqs]) or o(reqs)
        outs.append(sel.select_classes(list(range(CLASSES)), N, pools, loads, embed=embed, network=tiny_net))
    assert batches == [list(range(CLASSES))] * 2
    assert all(torch.equal(outs[0][c], outs[1][c]) for c in range(CLASSES))
    assert Bystander.seen == CLASSES


def test_select_classes_records_nothing_when_an_answer_is_refused(tiny_net):
    from dream_plugin import hookimpl

    images, pools = make_data()
    loads = loaders(images, pools)

    class BadForClassTwo:
        @hookimpl
        def select_real_batch(self, request):
            return torch.zeros(request.n, dtype=torch.int64) if request.class_id == 2 else torch.arange(request.n)

    sel = make_selector()
    sel.pm.register(BadForClassTwo(), name="bad-for-two")
    with pytest.raises(Exception, match="duplicate positions for class 2"):
        sel.select_classes([0, 1, 2], N, pools[:3], loads[:3])
    assert sel.records == []
    assert sel.select(0, N, pools[0], loads[0]).tolist() == list(range(N))
    assert sel.records[-1].step == 0  # the failed re-selection counted no call
