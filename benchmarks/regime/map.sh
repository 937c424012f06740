#!/usr/bin/env bash
# The regime map of docs/findings.md: IDC's loop on the embedded MNIST subset (ipc 10, factor 2,
# ConvNet width 32 depth 3), `match-only - random` in each cell, with the image learning rate of each
# distance chosen on the random arm alone (seed 100, which no cell uses).
# Every command shares one --cache folder: each seed's matching networks are trained once and the
# evaluations both arms share (iteration 0) run once; the numbers are those of runs without it.
#
# Usage: benchmarks/regime/map.sh OUT_DIR [STEP ...]
#   steps (default, in this order): sweeps wt-dc study-sweep study-dc wt-l1 wt-mse wt-mse-extra digits diagnose
#   also: stratified (needs commit 2d43255, where the strategy lives)
#   A step whose results.json exists is skipped, so an interrupted map continues where it stopped.
#   Later arms of a cell run in folders of their own and are pooled with it by (arm, seed):
#   cd OUT_DIR && python -m benchmarks.regime.summarize wt-dc wt-l1 wt-mse+wt-mse-dream wt-mse-b64 \
#     digits-mse study-dc   # the table (add +wt-mse-strat, +wt-dc-strat after the stratified step)
set -euo pipefail
out=${1:?usage: map.sh OUT_DIR [STEP ...]}
shift
here="$(cd "$(dirname "$0")" && pwd)"
wt="$here/well-trained.yaml"
wtd="$here/well-trained-digits.yaml"
study="$here/../idc/mnist.yaml"
cache="$out/cache"
mkdir -p "$out"

ab() {
  local name=$1
  shift
  if [ -f "$out/$name/results.json" ]; then echo "$name: already done"; return; fi
  dream-plugin ab --cache "$cache" --no-progress --out "$out/$name" "$@" > "$out/$name.log" 2>&1
  echo "$name done"
}

sweeps() {  # the random arm alone, 6 outer iterations, final accuracy (iteration 0: 93.20 for seed 100)
  ab sweep-dc-0.1 --config "$wt" --metric dc --lr-img 0.1 --arms random --seed 100 --seeds 2 --eval-at 0 6
  ab sweep-dc-0.3 --config "$wt" --metric dc --lr-img 0.3 --arms random --seed 100 --seeds 2 --eval-at 6
  for point in dc:0.03 l1:0.003 l1:0.01 l1:0.03 l1:0.1 mse:0.1 mse:0.3 mse:1 mse:3; do
    ab "sweep-${point/:/-}" --config "$wt" --metric "${point%%:*}" --lr-img "${point##*:}" --arms random \
      --seed 100 --seeds 1 --eval-at 6
  done
}
wt-dc() { ab wt-dc --config "$wt" --metric dc --lr-img 0.03 --seed 0 --seeds 5; }
wt-l1() { ab wt-l1 --config "$wt" --metric l1 --lr-img 0.01 --seed 0 --seeds 5; }
wt-mse() { ab wt-mse --config "$wt" --metric mse --lr-img 0.3 --seed 0 --seeds 5; }
wt-mse-extra() {  # the cell with the largest effect: dream - init-only, and batch_real 64
  ab wt-mse-dream --config "$wt" --metric mse --lr-img 0.3 --seed 0 --seeds 3 --arms init-only dream
  ab wt-mse-b64 --config "$wt" --metric mse --lr-img 0.3 --seed 0 --seeds 3 --batch-real 64
}
digits() {  # the replication of the mse cell on the 8x8 digits: lr_img chosen on the random arm alone
  for lr in 0.01 0.03 0.1 0.3 1; do
    ab "sweep-digits-mse-$lr" --config "$wtd" --metric mse --lr-img "$lr" --arms random --seed 100 --seeds 1 \
      --eval-at 0 6
  done
  ab digits-mse --config "$wtd" --metric mse --lr-img 0.03 --seed 0 --seeds 5   # the best of the sweep
}
stratified() {  # the stratified strategy's matching (measured, then removed: run this step at commit 2d43255)
  ab wt-mse-strat --config "$wt" --metric mse --lr-img 0.3 --seed 0 --seeds 5 --arms match:stratified
  ab wt-dc-strat --config "$wt" --metric dc --lr-img 0.03 --seed 0 --seeds 3 --arms match:stratified
}
study-sweep() {
  for lr in 0.1 0.3; do
    ab "study-sweep-dc-$lr" --config "$study" --metric dc --lr-img "$lr" --arms random --seed 100 --seeds 1 \
      --eval-at 10
  done
}
study-dc() { ab study-dc --config "$study" --metric dc --lr-img 0.3 --arms random match-only --seeds 3 --eval-at 0 5 10; }
diagnose() {
  for input in normalized raw; do
    [ -f "$out/diagnose-mnist-$input/diagnose.json" ] || dream-plugin diagnose --networks fresh trained:20 trained:325 \
      --strategies random dream dream+ --sizes 64 128 --metric dc --embed-input "$input" \
      --out "$out/diagnose-mnist-$input" > "$out/diagnose-mnist-$input.log"
    [ -f "$out/diagnose-digits-$input/diagnose.json" ] || dream-plugin diagnose --dataset digits --width 32 \
      --depth 2 --networks fresh trained:20 trained:325 --strategies random dream dream+ --sizes 32 64 --metric dc \
      --embed-input "$input" --out "$out/diagnose-digits-$input" > "$out/diagnose-digits-$input.log"
  done
  echo "diagnose done"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(sweeps wt-dc study-sweep study-dc wt-l1 wt-mse wt-mse-extra digits diagnose)
for step in "${steps[@]}"; do "$step"; done
