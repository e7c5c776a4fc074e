#!/usr/bin/env bash
# Training speed of the PAWS benchmark's recipe (bench/paws_fashion_mnist.sh: WRN-10-2, 64
# unlabelled images x (2 x 28 px + 2 x 14 px) + 10 x 6 x 2 support views per iteration):
# `dino paws` against the PyTorch reference (bench/paws_reference.py, 2 threads) on the same
# images, one epoch of IMAGES unlabelled images each, ROUNDS times alternating.
# dino's time is the whole process (start-up, label draw and checkpoint writing included); the
# reference's is its training loop only (its `train_s`: data loading included, evaluation not).
#
#   FM=/tmp/fm bash bench/paws_speed.sh [WORKDIR]     # FM: folders of bench/fashion_mnist_folders.py
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/tmp/paws_speed}"
FM="${FM:-$W/data}"
IMAGES="${IMAGES:-2560}"
ROUNDS="${ROUNDS:-2}"
DINO=./target/release/dino
cargo build --release --quiet
[ -d "$FM/val" ] || python3 bench/fashion_mnist_folders.py "$FM" --train-subset 10000
mkdir -p "$W/unl/x" "$W/val"
mapfile -t imgs < <(find "$FM/train_10000" -type f | sort)
ln -sf "${imgs[@]:0:$IMAGES}" "$W/unl/x/"
for c in "$FM"/val/*/; do   # a small val set: the reference evaluates after training
    mkdir -p "$W/val/$(basename "$c")"
    mapfile -t some < <(find "$c" -type f | sort)
    ln -sf "${some[@]:0:10}" "$W/val/$(basename "$c")/"
done
iters=$((IMAGES / 64))
printf '| round | dino paws s/iteration | PyTorch reference s/iteration |\n|---|---:|---:|\n'
for r in $(seq 1 "$ROUNDS"); do
    t=$(date +%s%N)
    $DINO paws --label-fraction 0.01 --labels-from "$FM/train" --data "$W/unl" --output-dir "$W/out" \
        --no-resume --depth 10 --widen 2 --crop-size 28 --multicrop 2 --multicrop-size 14 \
        --unsupervised-batch-size 64 --classes-per-batch 10 --supervised-imgs-per-class 6 \
        --epochs 1 --warmup 1 --seed 0 > "$W/dino_$r.log" 2>&1
    ms=$(( ($(date +%s%N) - t) / 1000000 ))
    python3 bench/paws_reference.py --mode paws --data "$W/unl" --labels "$W/out/labels.csv" \
        --labels-root "$FM/train" --val "$W/val" --epochs 1 --threads 2 2> "$W/ref_$r.log" | tail -1 > "$W/ref_$r.json"
    ref=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['train_s'])" "$W/ref_$r.json")
    awk -v r="$r" -v ms="$ms" -v ref="$ref" -v n="$iters" \
        'BEGIN { printf "| %s | %.2f | %.2f |\n", r, ms / 1000 / n, ref / n }'
done
