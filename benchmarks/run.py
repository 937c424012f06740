"""Selection-speed benchmarks: our k-means vs the libraries users would pick, the embedding floor,
the overhead inside a DC iteration, and the peak memory of a selection.

    python -m benchmarks.run                 # everything (minutes on a 2-core CPU)
    python -m benchmarks.run --quick         # small sizes, one repeat (a smoke run)
    python -m benchmarks.run --sections engine,floor --repeats 5

Every section runs all contenders interleaved in ONE process (repeat r runs each contender once,
in turn), reports the median time over repeats and ratios to ours, and prints ``os.getloadavg()``
before and after: on a shared machine, compare ratios, not absolute seconds.
Inertia is recomputed by us for every contender the same way (float64 sum of squared distances
to the returned centroids). Sections: :mod:`.engine` (engine, seeding), :mod:`.pipeline` (floor,
dc), :mod:`.memory`; :mod:`.compare_engine` times our rows against another checkout.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from .common import load, set_threads
from .engine import section_engine, section_seeding
from .memory import memory_child, section_memory
from .pipeline import section_dc, section_floor

SECTIONS = {
    "engine": section_engine, "seeding": section_seeding, "floor": section_floor, "dc": section_dc,
    "memory": section_memory,
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    p.add_argument("--repeats", type=int, default=None, help="repeats per contender (default 3; quick: 1)")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--threads", type=int, default=None, help="threads for every contender (default: torch's)")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child)
        return {}
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    print(f"# dream-plugin selection benchmarks: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; start {load()}")
    out = {}
    for name in args.sections.split(","):
        out[name] = SECTIONS[name.strip()](args)
    print(f"\n# end {load()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
