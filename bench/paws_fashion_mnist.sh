#!/usr/bin/env bash
# The learning benchmark of the PAWS issue: Fashion-MNIST with 1% of the labels (60 per class,
# drawn by `dino paws --label-fraction`, seed 0), every row in one invocation, val top-1 on the
# 10k test split:
#   (a) dino paws, then dino snn (the labelled images as the memory)
#   (b) (a) + dino paws-finetune (SuNCEt), then dino snn
#   (c) the same backbone trained supervised on the labelled images only (PyTorch,
#       bench/paws_reference.py --mode supervised; as many optimiser steps as (a))
#   (d) k-NN (20) on raw pixels with the labelled images as the memory
#   (e) dino train (the DINO benchmark's ViT recipe, DINO_EPOCHS epochs) then 20-NN with the
#       labelled images as the memory
#   (f) the PyTorch reference PAWS (suncet's code paths, bench/paws_reference.py --mode paws),
#       same recipe and iterations as (a)
# The backbone is WRN-10-2 (one pre-activation block per stage, 128 features: WRN-28-2, the
# CIFAR-10 recipe's, takes ~10x longer per step) on 28 px views, 2 small crops of 14 px, 64
# unlabelled images of the first 10,000 training images per iteration, 10 classes x 6 images x
# 2 views of support, the official CIFAR-10 learning rates (0.8 -> 3.2 -> 0.032, LARS).
#
#   sudo apt-get install dataset-fashion-mnist
#   bash bench/paws_fashion_mnist.sh [WORKDIR]          # EPOCHS=2: ~60 min on 2 cores
#   EPOCHS=7 DINO_EPOCHS=20 bash bench/paws_fashion_mnist.sh DIR   # the one-hour-per-method budget
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/tmp/pawsbench}"
FM="${FM:-$W/data}"
EPOCHS="${EPOCHS:-2}"
DINO_EPOCHS="${DINO_EPOCHS:-6}"
FT_EPOCHS="${FT_EPOCHS:-10}"
mkdir -p "$W"
DINO=./target/release/dino
cargo build --release --quiet
[ -d "$FM/val" ] || python3 bench/fashion_mnist_folders.py "$FM" --train-subset 10000
UNL="$FM/train_10000"
RECIPE=(--depth 10 --widen 2 --crop-size 28 --multicrop 2 --multicrop-size 14
        --unsupervised-batch-size 64 --classes-per-batch 10 --supervised-imgs-per-class 6
        --epochs "$EPOCHS" --warmup 1 --seed 0)

secs() { echo $(( $(date +%s) - $1 )); }

# (a) PAWS, (b) + fine-tuning
t=$(date +%s)
$DINO paws --label-fraction 0.01 --labels-from "$FM/train" --data "$UNL" --output-dir "$W/paws" \
    --no-resume "${RECIPE[@]}"
a_s=$(secs "$t")
LAB="$W/paws/labels.csv"
$DINO snn -w "$W/paws/encoder.safetensors" --train "$LAB" --val "$FM/val" --json "$W/a.json"
t=$(date +%s)
$DINO paws-finetune -w "$W/paws/encoder.safetensors" --labels "$LAB" --output-dir "$W/finetune" \
    --no-resume --supervised-imgs-per-class 16 --epochs "$FT_EPOCHS"
b_s=$(secs "$t")
$DINO snn -w "$W/finetune/encoder.safetensors" --train "$LAB" --val "$FM/val" --json "$W/b.json"
iters=$(wc -l < "$W/paws/metrics.jsonl")

# the labelled images as a class folder (the k-NN memory of (d) and (e))
rm -rf "$W/labelled"
tail -n +2 "$LAB" | while IFS=, read -r path class; do
    mkdir -p "$W/labelled/$class"
    ln -sf "$path" "$W/labelled/$class/"
done

# (c) supervised on the labelled images only
t=$(date +%s)
python3 bench/paws_reference.py --mode supervised --labels "$LAB" --labels-root "$FM/train" \
    --val "$FM/val" --iterations "$iters" --threads 2 | tail -1 > "$W/c.json"
c_s=$(secs "$t")

# (e) DINO (the Fashion-MNIST ViT recipe of bench/fashion_mnist.sh), same unlabelled images
t=$(date +%s)
$DINO train --data "$UNL" --output-dir "$W/dino" --no-resume --attention-every 0 \
    --embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28 \
    --local-crop-size 14 --local-crops-number 6 --out-dim 2048 --head-hidden-dim 512 \
    --head-bottleneck-dim 128 --batch-size 32 --epochs "$DINO_EPOCHS" --warmup-epochs 1 --seed 0
e_s=$(secs "$t")
knn() { $DINO knn --train "$W/labelled" --val "$FM/val" --resize none --heads 3 --nb-knn 20 "$@"; }
knn -w "$W/dino/teacher.safetensors" --json "$W/e.json"
# (d) raw pixels (the weights only give the patch size the pixels are cropped to)
knn -w "$W/dino/teacher.safetensors" --raw-pixels --json "$W/d.json"

# (f) the PyTorch reference PAWS
t=$(date +%s)
python3 bench/paws_reference.py --mode paws --data "$UNL" --labels "$LAB" --labels-root "$FM/train" \
    --val "$FM/val" --epochs "$EPOCHS" --threads 2 | tail -1 > "$W/f.json"
f_s=$(secs "$t")

python3 - "$W" "$a_s" "$b_s" "$c_s" "$e_s" "$f_s" "$iters" <<'EOF'
import json, sys
w, a_s, b_s, c_s, e_s, f_s, iters = sys.argv[1:]
def top1(name):
    v = json.load(open(f"{w}/{name}.json"))
    if "top1" in v:
        return v["top1"]
    return v["results"][0]["top1"]
rows = [
    ("(a) PAWS, soft-NN (dino paws + dino snn)", top1("a"), f"{a_s} s"),
    ("(b) PAWS + SuNCEt fine-tuning (dino paws-finetune)", top1("b"), f"+{b_s} s"),
    ("(c) WRN-10-2 supervised on the 600 labels (PyTorch)", top1("c"), f"{c_s} s"),
    ("(d) 20-NN on raw pixels, 600 labelled as memory", top1("d"), "-"),
    ("(e) DINO ViT (dino train) + 20-NN, 600 labelled as memory", top1("e"), f"{e_s} s"),
    ("(f) PyTorch reference PAWS, soft-NN", top1("f"), f"{f_s} s"),
]
print(f"\nFashion-MNIST, 1% labels (600), {iters} PAWS iterations; val top-1 on 10k")
print("| method | top-1 | training wall time |\n|---|---|---|")
for name, acc, t in rows:
    print(f"| {name} | {acc:.2f} | {t} |")
EOF
