"""Memory of a long host run: RSS growth over many ``get_images`` calls through the adapter.

A host run makes one call per class and matching step (IDC's paper setting: about 2 million). The
random arm is measured (the host's own sampler answers; every call is still recorded and sent to
the observers), with a tiny image tensor so that only the per-call bookkeeping can grow.

    python -m benchmarks.records_memory --calls 1000000 [--records FILE]

prints one JSON line: calls, seconds, RSS at start and end and the growth in MiB, and the growth
after each tenth of the calls.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time

import numpy as np
import torch


def rss_mib() -> float:
    """Current resident set size (not the peak) from /proc/self/statm."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=1_000_000)
    p.add_argument("--records", metavar="FILE", help="also stream every record to FILE (DREAM_RECORDS)")
    args = p.parse_args(argv)

    from dream_plugin.adapters.get_images import GetImagesAdapter
    from dream_plugin.core.config import parse_settings
    from dream_plugin.core.manager import build_plugin_manager
    from dream_plugin.hosts.observers import attach
    from dream_plugin.core.selector import Selector

    classes, per_class = 10, 20
    images_all = torch.zeros(classes * per_class, 1, 2, 2)
    indices_class = [list(range(c * per_class, (c + 1) * per_class)) for c in range(classes)]

    def get_images(c: int, n: int) -> torch.Tensor:  # the hosts' sampler
        return images_all[np.random.permutation(indices_class[c])[:n]]

    data = {"strategy": "random", "init": {"strategy": "random"}}
    settings = parse_settings({**data, "observe": {"records": args.records}} if args.records else data)
    selector = Selector(settings, plugin_manager=build_plugin_manager(settings.plugins))
    attach(selector)
    adapter = GetImagesAdapter(get_images, images_all, indices_class, selector=selector)
    for c in range(classes):  # warm-up: pools, first allocations
        adapter.match(c, 4)
    gc.collect()
    start_rss, start = rss_mib(), time.perf_counter()
    marks = []
    step = max(1, args.calls // 10)
    for i in range(args.calls):
        adapter.match(i % classes, 4)
        if (i + 1) % step == 0:
            marks.append(round(rss_mib() - start_rss, 1))
    seconds = time.perf_counter() - start
    gc.collect()
    end_rss = rss_mib()
    out = {"calls": args.calls, "seconds": round(seconds, 1), "rss_start_mib": round(start_rss, 1),
           "rss_end_mib": round(end_rss, 1), "growth_mib": round(end_rss - start_rss, 1), "growth_by_tenth": marks,
           "records_file": args.records, "torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
