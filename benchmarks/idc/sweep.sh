#!/usr/bin/env bash
# The matching-only sweeps of docs/findings.md ("The first study"): each line
# is one `dream-plugin ab` run of the pair init-only vs dream on digits, 3 seeds, changing one knob
# of benchmarks/idc/digits.yaml. Usage: benchmarks/idc/sweep.sh OUT_DIR
set -euo pipefail
out=${1:?usage: sweep.sh OUT_DIR}
cfg="$(dirname "$0")/digits.yaml"
run() { name=$1; shift; dream-plugin ab --config "$cfg" --arms init-only dream --seeds 3 --no-progress --out "$out/$name" "$@" \
          > "$out/$name.log" 2>&1; echo "$name done"; }
mkdir -p "$out"
run n_data-0      --n-data 0
run pretrain-1437 --pretrain 1437
run batch-8       --batch-real 8
run interval-1    --interval 1
run fix_iter-5    --fix-iter 5
run factor-2      --factor 2
run n_data-1024   --n-data 1024
run ipc-1         --ipc 1
run batch-64      --batch-real 64
