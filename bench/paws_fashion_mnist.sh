#!/usr/bin/env bash
# The learning benchmark of the PAWS issue: Fashion-MNIST with 1% of the labels (60 per class,
# drawn by `dino paws --label-fraction`, seed 0; LABEL_FRACTION=0.1 for the 10% table), every
# row in one invocation, val top-1 on the 10k test split:
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
#   ROWS=cd bash bench/paws_fashion_mnist.sh DIR   # only these rows, beside (a)'s run already in DIR
#   DINO=/tmp/dino ROWS=ef ...                      # a copied binary: rebuilds cannot change it
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/tmp/pawsbench}"
FM="${FM:-$W/data}"
EPOCHS="${EPOCHS:-2}"
DINO_EPOCHS="${DINO_EPOCHS:-6}"
FT_EPOCHS="${FT_EPOCHS:-10}"
ROWS="${ROWS:-abcdef}"
LABEL_FRACTION="${LABEL_FRACTION:-0.01}"
want() { [[ "$ROWS" == *"$1"* ]]; }
mkdir -p "$W"
# DINO=/path/to/dino: a binary built earlier (a long run then survives rebuilds of target/)
if [ -z "${DINO:-}" ]; then
    DINO=./target/release/dino
    cargo build --release --quiet
fi
[ -d "$FM/val" ] || python3 bench/fashion_mnist_folders.py "$FM" --train-subset 10000
UNL="$FM/train_10000"
RECIPE=(--depth 10 --widen 2 --crop-size 28 --multicrop 2 --multicrop-size 14
        --unsupervised-batch-size 64 --classes-per-batch 10 --supervised-imgs-per-class 6
        --epochs "$EPOCHS" --warmup 1 --seed 0)

secs() { echo $(( $(date +%s) - $1 )); }

# (a) PAWS, (b) + fine-tuning; the other rows take (a)'s labelled split and iteration count
LAB="$W/paws/labels.csv"
if want a; then
    t=$(date +%s)
    $DINO paws --label-fraction "$LABEL_FRACTION" --labels-from "$FM/train" --data "$UNL" --output-dir "$W/paws" \
        --no-resume "${RECIPE[@]}"
    secs "$t" > "$W/a.secs"
    $DINO snn -w "$W/paws/encoder.safetensors" --train "$LAB" --val "$FM/val" --json "$W/a.json"
fi
[ -f "$W/paws/metrics.jsonl" ] || { echo "row (a) has not run in $W: ROWS must include a" >&2; exit 1; }
if want b; then
    t=$(date +%s)
    $DINO paws-finetune -w "$W/paws/encoder.safetensors" --labels "$LAB" --output-dir "$W/finetune" \
        --no-resume --supervised-imgs-per-class 16 --epochs "$FT_EPOCHS"
    secs "$t" > "$W/b.secs"
    $DINO snn -w "$W/finetune/encoder.safetensors" --train "$LAB" --val "$FM/val" --json "$W/b.json"
fi
iters=$(wc -l < "$W/paws/metrics.jsonl")

# the labelled images as a class folder (the k-NN memory of (d) and (e))
rm -rf "$W/labelled"
tail -n +2 "$LAB" | while IFS=, read -r path class; do
    mkdir -p "$W/labelled/$class"
    ln -sf "$path" "$W/labelled/$class/"
done

# (c) supervised on the labelled images only
if want c; then
    t=$(date +%s)
    python3 bench/paws_reference.py --mode supervised --labels "$LAB" --labels-root "$FM/train" \
        --val "$FM/val" --iterations "$iters" --threads 2 | tail -1 > "$W/c.json"
    secs "$t" > "$W/c.secs"
fi

# (e) DINO (the Fashion-MNIST ViT recipe of bench/fashion_mnist.sh), same unlabelled images
knn() { $DINO knn --train "$W/labelled" --val "$FM/val" --resize none --heads 3 --nb-knn 20 "$@"; }
if want e; then
    t=$(date +%s)
    $DINO train --data "$UNL" --output-dir "$W/dino" --no-resume --attention-every 0 \
        --embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28 \
        --local-crop-size 14 --local-crops-number 6 --out-dim 2048 --head-hidden-dim 512 \
        --head-bottleneck-dim 128 --batch-size 32 --epochs "$DINO_EPOCHS" --warmup-epochs 1 --seed 0
    secs "$t" > "$W/e.secs"
    knn -w "$W/dino/teacher.safetensors" --json "$W/e.json"
fi
# (d) raw pixels (any ViT's weights: they only give the patch size the pixels are cropped to)
if want d; then
    PATCH7="$W/dino/teacher.safetensors"
    if [ ! -f "$PATCH7" ]; then   # (e) not run: a patch-7 ViT from one step on 32 images
        mkdir -p "$W/patch7/data/x"
        mapfile -t some < <(find "$UNL" -type f | sort)   # (no `head`: pipefail)
        ln -sf "${some[@]:0:32}" "$W/patch7/data/x/"
        $DINO train --data "$W/patch7/data" --output-dir "$W/patch7" --no-resume --attention-every 0 \
            --embed-dim 192 --depth 1 --num-heads 3 --patch-size 7 --global-crop-size 28 \
            --local-crops-number 0 --out-dim 64 --head-hidden-dim 64 --head-bottleneck-dim 32 \
            --batch-size 32 --epochs 1 --warmup-epochs 0 --seed 0 > /dev/null
        PATCH7="$W/patch7/teacher.safetensors"
    fi
    knn -w "$PATCH7" --raw-pixels --json "$W/d.json"
fi

# (f) the PyTorch reference PAWS
if want f; then
    t=$(date +%s)
    python3 bench/paws_reference.py --mode paws --data "$UNL" --labels "$LAB" --labels-root "$FM/train" \
        --val "$FM/val" --epochs "$EPOCHS" --threads 2 | tail -1 > "$W/f.json"
    secs "$t" > "$W/f.secs"
fi

# the table, from every row's results in W (rows not run this time: from an earlier run, if any)
python3 - "$W" "$iters" "$LABEL_FRACTION" "$(($(wc -l < "$LAB") - 1))" <<'EOF'
import json, os, sys
w, iters, fraction, labelled = sys.argv[1:]
def top1(name):
    v = json.load(open(f"{w}/{name}.json"))
    if "top1" in v:
        return v["top1"]
    return v["results"][0]["top1"]
def secs(name, plus=""):
    p = f"{w}/{name}.secs"
    return f"{plus}{open(p).read().strip()} s" if os.path.exists(p) else "-"
rows = [
    ("a", "(a) PAWS, soft-NN (dino paws + dino snn)", secs("a")),
    ("b", "(b) PAWS + SuNCEt fine-tuning (dino paws-finetune)", secs("b", "+")),
    ("c", f"(c) WRN-10-2 supervised on the {labelled} labels (PyTorch)", secs("c")),
    ("d", f"(d) 20-NN on raw pixels, {labelled} labelled as memory", "-"),
    ("e", f"(e) DINO ViT (dino train) + 20-NN, {labelled} labelled as memory", secs("e")),
    ("f", "(f) PyTorch reference PAWS, soft-NN", secs("f")),
]
print(f"\nFashion-MNIST, {float(fraction):.0%} labels ({labelled}), {iters} PAWS iterations; val top-1 on 10k")
print("| method | top-1 | training wall time |\n|---|---|---|")
for key, name, t in rows:
    if os.path.exists(f"{w}/{key}.json"):
        print(f"| {name} | {top1(key):.2f} | {t} |")
EOF
