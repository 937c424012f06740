"""Peak memory of an embedding pass, a full re-selection and a large k-means, each measured in a
fresh interpreter (``python -m benchmarks.run --memory-child MODE``)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import torch

from dream_plugin.engine.clustering import kmeans

from .common import load, make_selector


def memory_child(mode: str) -> None:
    """Runs in a fresh interpreter: prints the peak-RSS increase (KiB) of one embedding or selection.

    Synthetic MNIST-shaped images keep the set-up's own peak low; the peak is reset through
    /proc/self/clear_refs (Linux) and read as VmHWM, else ru_maxrss deltas are used.
    """
    from dream_plugin.engine.embedding import embed_images
    from dream_plugin.harness.models import ConvNet

    torch.manual_seed(0)
    net = ConvNet(1, 10, 28, width=128)
    pool = torch.arange(400)
    images = torch.randn(400, 1, 28, 28)

    def load_fn(positions):
        return images[pool[positions]]

    with torch.no_grad():
        net.embed(images[:2])  # warm the allocator / kernels for a fair baseline
    x = torch.randn(5000, 2048, generator=torch.Generator().manual_seed(0)) if mode == "kmeans" else None
    before, how = _peak_reset()
    if mode == "embed":
        embed_images(net.embed, load_fn, pool.numel(), network=net)
    elif mode == "select":
        sel = make_selector("dream", interval=1)
        sel.select(0, 128, pool, load_fn, embed=net.embed, network=net)
    elif mode == "kmeans":
        kmeans(x, 128, generator=torch.Generator().manual_seed(0))
    after = _peak(how)
    print(json.dumps({"mode": mode, "delta_kib": after - before, "how": how}))


def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _peak_reset() -> tuple[int, str]:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        return _vm("VmHWM"), "VmHWM after clear_refs"
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss delta"


def _peak(how: str) -> int:
    if how.startswith("VmHWM"):
        return _vm("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def section_memory(args) -> list[dict]:
    print(f"\n## Peak memory (ru_maxrss increase in a fresh subprocess, CPU; {load()})")
    print("| step | peak RSS increase |")
    print("|---|---:|")
    rows = []
    for mode, label in (("embed", "embedding pass, MNIST class (400 images)"),
                        ("select", "full re-selection, MNIST class, K=128"),
                        ("kmeans", "k-means 5000x2048 (40 MB input), K=128")):
        cmd = [sys.executable, "-m", "benchmarks.run", "--memory-child", mode]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd,
                             capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        d = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {label} | {d['delta_kib'] / 1024:.1f} MiB ({d['how']}) |")
        rows.append({"step": label, "mib": d["delta_kib"] / 1024})
    return rows
