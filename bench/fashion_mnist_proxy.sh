#!/usr/bin/env bash
# A short proxy of the Fashion-MNIST learning benchmark, for trying recipe changes: 3 epochs
# (1 of warm-up) of the benchmark's recipe on the first 10,000 training images, by `dino train`
# and by the PyTorch reference (bench/dino_reference_train.py) side by side, then 20-NN top-1
# of each teacher with those 10,000 as the k-NN train set (10k val). Prints one line per
# implementation: the flags, per-epoch loss, the teacher-target entropies of the last epoch
# (per image / of the batch mean, nats; their difference is what the targets say about an
# image) and the accuracy. References on this proxy (2 cores, 2026-11-26): random-init ViT
# 63.23, raw pixels 81.79.
#
#   bash bench/fashion_mnist_proxy.sh NAME [dino train flags...]   # ~9 + ~6 min on 2 cores
#   ONLY=dino-rs bash bench/fashion_mnist_proxy.sh NAME [flags]    # skip the PyTorch run
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
W="${FMBENCH:-/tmp/fmbench}"
DINO=./target/release/dino
[ -d "$W/data/val" ] || python3 bench/fashion_mnist_folders.py "$W/data" --train-subset 10000
mkdir -p "$W/proxy"
RECIPE=(--embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28
        --local-crop-size 14 --local-crops-number 6 --out-dim 2048 --head-hidden-dim 512
        --head-bottleneck-dim 128 --batch-size 128 --epochs 3 --warmup-epochs 1 --seed 0)

# LABEL SECONDS LOG WEIGHTS: the result line
report() {
    local summary acc
    summary=$(python3 - "$3" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
loss = " ".join(f"{r['train_loss']:.3f}" for r in rows)
last = rows[-1]
print(f"loss {loss} | H(t) {last['teacher_entropy']:.2f} H(mean) {last['batch_entropy']:.2f}")
PY
)
    acc=$($DINO knn --train "$W/data/train_10000" --val "$W/data/val" --resize none --heads 3 \
        -w "$4" --nb-knn 20 2>&1 | grep '^| 20 ' | cut -d'|' -f3 | tr -d ' ')
    echo "$1 | ${2}s | $FLAGS | $summary | 20-NN $acc" | tee -a "$W/proxy/results.txt"
}
FLAGS="$*"

out="$W/proxy/$name"
rm -rf "$out"
start=$(date +%s)
$DINO train --recipe official --data "$W/data/train_10000" --output-dir "$out" --attention-every 0 --no-resume \
    "${RECIPE[@]}" "$@" > "$out.log" 2>&1
report "$name dino-rs" $(( $(date +%s) - start )) "$out/log.txt" "$out/teacher.safetensors"

[ "${ONLY:-}" = dino-rs ] && exit 0
ref="$W/proxy/$name-pytorch"
rm -rf "$ref"
start=$(date +%s)
python3 bench/dino_reference_train.py --data "$W/data/train_10000" --out "$ref" --threads 2 \
    --workers 1 "${RECIPE[@]}" "$@" > "$ref.log" 2>&1
report "$name PyTorch" $(( $(date +%s) - start )) "$ref/log.txt" "$ref/teacher_backbone.safetensors"
