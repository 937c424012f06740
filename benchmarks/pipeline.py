"""Selection inside the pipeline: a full re-selection against its embedding pass, and the share of
a DC outer iteration that selection takes."""

from __future__ import annotations

import statistics
import sys
import time

import torch

from .common import bench, load, make_selector, mnist_embeddings


def section_floor(args) -> list[dict]:
    """A full re-selection of one class vs the embedding pass it needs."""
    from dream_plugin.engine.embedding import embed_images

    print(f"\n## Full re-selection of one class vs its embedding pass ({load()})")
    _, ds, net = mnist_embeddings()
    rows = []
    ns = (10, 64) if args.quick else (10, 128)
    idx = ds.class_indices()
    for c in (0,):
        pool = idx[c]
        images = ds.train_images

        def load_fn(positions, _p=pool):
            return images[_p[positions]]

        sel = make_selector("dream", interval=1, embedding_cache=False)
        fns = {"embedding pass (floor)": lambda r: embed_images(net.embed, load_fn, pool.numel(), network=net)}
        for n in ns:
            fns[f"full re-selection, n=K={n}"] = (
                lambda r, n=n: sel.select(c, n, pool, load_fn, embed=net.embed, network=net)
            )
        t = bench(fns, args.repeats + 2)
        base = statistics.median(t["embedding pass (floor)"])
        print(f"\n### MNIST class {c}: {pool.numel()} images, ConvNet width 128 ({load()})")
        print("| step | median s | / embedding pass |")
        print("|---|---:|---:|")
        for name in fns:
            m = statistics.median(t[name])
            print(f"| {name} | {m:.4f} | {m / base:.2f} |")
            rows.append({"step": name, "seconds": m, "ratio": m / base})
    return rows



def _dc_iterations(net, syn, sampler, ipc: int, batch_real: int, iters: int) -> list[float]:
    """Seconds of each DC outer iteration: per class, real and synthetic gradients matched by DC's
    distance (:func:`~dream_plugin.harness.ab.loops.match_loss`), one image step, one network step."""
    from dream_plugin.harness.ab.loops import match_loss

    opt_img = torch.optim.SGD([syn], lr=0.1, momentum=0.5)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.01)
    params = list(net.parameters())
    crit = torch.nn.CrossEntropyLoss()
    t_iter = []
    for _ in range(iters):
        t0 = time.perf_counter()
        loss = 0.0
        for c in range(10):
            img_real = sampler(c, batch_real)
            lab_real = torch.full((batch_real,), c)
            gw_real = [g.detach() for g in torch.autograd.grad(crit(net(img_real), lab_real), params)]
            img_syn = syn[c * ipc:(c + 1) * ipc]
            gw_syn = torch.autograd.grad(crit(net(img_syn), torch.full((ipc,), c)), params, create_graph=True)
            loss = loss + match_loss(gw_syn, gw_real)
        opt_img.zero_grad()
        loss.backward()
        opt_img.step()
        # inner loop: one network step on the synthetic set (DC's inner_loop=1 at ipc=1)
        opt_net.zero_grad()
        crit(net(syn.detach()), torch.arange(10).repeat_interleave(ipc)).backward()
        opt_net.step()
        t_iter.append(time.perf_counter() - t0)
    return t_iter


def section_dc(args) -> list[dict]:
    """DC-style gradient-matching outer iterations; selection time from the selector's records."""
    import numpy as np

    from dream_plugin.adapters.get_images import GetImagesAdapter
    from dream_plugin.harness.data import load_dataset
    from dream_plugin.harness.models import ConvNet

    print(f"\n## Selection inside a DC outer iteration ({load()})")
    ds = load_dataset("mnist")
    images_all = ds.train_images
    indices_class = [i.tolist() for i in ds.class_indices()]
    batch_real, ipc = (64, 1) if args.quick else (256, 10)
    iters = 4 if args.quick else 10
    rng = np.random.default_rng(0)

    def get_images(c, n):
        idx_shuffle = rng.permutation(indices_class[c])[:n]
        return images_all[idx_shuffle]

    rows = []
    for label, interval in [("random (host get_images)", None), ("dream interval=1", 1), ("dream interval=10", 10)]:
        torch.manual_seed(0)
        net = ConvNet(1, 10, 28, width=128)
        syn = torch.randn(10 * ipc, 1, 28, 28, requires_grad=True)
        selector = None if interval is None else make_selector("dream", interval=interval)
        sampler = get_images if selector is None else GetImagesAdapter(
            get_images, images_all, indices_class, net=lambda: net, selector=selector, match_n=batch_real)
        total = sum(_dc_iterations(net, syn, sampler, ipc, batch_real, iters))
        sel_s = selector.totals.seconds if selector is not None else 0.0
        n_re = selector.totals.reclusterings if selector is not None else 0
        share = sel_s / total
        print(f"| {label} | {iters} iterations | {total / iters:.3f} s/iter | selection {sel_s / iters:.3f} s/iter "
              f"| {n_re} re-clusterings | selection share {100 * share:.1f}% |  ({load()})")
        rows.append({"arm": label, "s_per_iter": total / iters, "selection_s_per_iter": sel_s / iters,
                     "share": share, "reclusterings": n_re})
        sys.stdout.flush()
    return rows
