#!/usr/bin/env bash
# A short proxy of the Fashion-MNIST learning benchmark, for trying recipe changes: 3 epochs
# (1 of warm-up) of `dino train` on the first 10,000 training images with the benchmark's ViT,
# then 20-NN top-1 with those 10,000 as the k-NN train set (10k val). Prints one line: the
# flags, per-epoch loss, the teacher-target entropies of the last epoch (per image / of the batch
# mean, nats; their difference is what the targets say about an image) and the accuracy.
# References on this proxy (2 cores, 2026-11-26): random-init ViT 63.23, raw pixels 81.79.
#
#   bash bench/fashion_mnist_proxy.sh NAME [dino train flags...]    # ~9 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
W="${FMBENCH:-/tmp/fmbench}"
DINO=./target/release/dino
[ -d "$W/data/val" ] || python3 bench/fashion_mnist_folders.py "$W/data" --train-subset 10000
mkdir -p "$W/proxy"
out="$W/proxy/$name"
rm -rf "$out"
start=$(date +%s)
$DINO train --data "$W/data/train_10000" --output-dir "$out" --attention-every 0 --no-resume \
    --embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28 \
    --local-crop-size 14 --local-crops-number 6 --out-dim 2048 --head-hidden-dim 512 \
    --head-bottleneck-dim 128 --batch-size 128 --epochs 3 --warmup-epochs 1 --seed 0 "$@" \
    > "$out.log" 2>&1
secs=$(( $(date +%s) - start ))
summary=$(python3 - "$out/log.txt" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
loss = " ".join(f"{r['train_loss']:.3f}" for r in rows)
last = rows[-1]
print(f"loss {loss} | H(t) {last['teacher_entropy']:.2f} H(mean) {last['batch_entropy']:.2f}")
PY
)
acc=$($DINO knn --train "$W/data/train_10000" --val "$W/data/val" --resize none --heads 3 \
    -w "$out/teacher.safetensors" --nb-knn 20 2>&1 | grep '^| 20 ' | cut -d'|' -f3 | tr -d ' ')
echo "$name | ${secs}s | $* | $summary | 20-NN $acc" | tee -a "$W/proxy/results.txt"
