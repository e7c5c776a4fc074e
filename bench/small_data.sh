#!/usr/bin/env bash
# The small-data recipe against the official one and random initialisation on Fashion-MNIST
# subsets (1,000 / 5,000 / 10,000 training images), each run ~750-940 iterations of batch 32
# (about 5 minutes of training on 2 cores when alone), the benchmark's ViT for 28x28 images;
# then 20-NN top-1 on the 10,000 val images with the subset itself (and its labels) as the
# k-NN memory. Prints one line per run.
#
#   sudo apt-get install dataset-fashion-mnist
#   bash bench/small_data.sh [WORKDIR]        # ~70 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/tmp/smalldata}"
DINO=./target/release/dino
cargo build --release --quiet
[ -d "$W/data/val" ] || python3 bench/fashion_mnist_folders.py "$W/data" --train-subset 10000
for n in 1000 5000; do
    [ -d "$W/data/train_$n" ] && continue
    for c in "$W"/data/train_10000/*/; do
        mkdir -p "$W/data/train_$n/$(basename "$c")"
        ls "$c" | head -$((n / 10)) | while read -r f; do cp "$c$f" "$W/data/train_$n/$(basename "$c")/"; done
    done
done
ARCH=(--embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28
      --local-crop-size 14 --local-crops-number 6 --head-hidden-dim 512 --head-bottleneck-dim 128
      --batch-size 32 --warmup-epochs 1 --seed 0 --attention-every 0 --no-resume)
knn() { $DINO knn --train "$1" --val "$W/data/val" --resize none --heads 3 -w "$2" --nb-knn 20 "${@:3}" 2>&1 |
        grep '^| 20 ' | cut -d'|' -f3 | tr -d ' '; }
for spec in "1000 24" "5000 5" "10000 3"; do
    set -- $spec
    data="$W/data/train_$1"
    for recipe in official small-data; do
        out="$W/$recipe-$1"
        # the official recipe with the Fashion-MNIST benchmark's head (K = 2048, not 65,536)
        extra=(); [ "$recipe" = official ] && extra=(--out-dim 2048)
        start=$(date +%s)
        $DINO train --data "$data" --output-dir "$out" --recipe "$recipe" --epochs "$2" "${ARCH[@]}" \
            "${extra[@]}" > "$out.log" 2>&1
        echo "$1 images, $2 epochs, --recipe $recipe: $(( $(date +%s) - start )) s, 20-NN $(knn "$data" "$out/teacher.safetensors")"
    done
    echo "$1 images, random init: 20-NN $(knn "$data" "$out/teacher.safetensors" --random-init)"
done
