#!/usr/bin/env bash
# The multi-process benchmark of the MPI issue, dino-rs and PyTorch side by side in one run:
# the Fashion-MNIST recipe (batch 32, K = 2048, 2 epochs of train_1000: 62 iterations) as one
# process and as two ranks on the same cores: `mpirun -np 2 dino train` (each rank a share of
# the cores) against `torchrun --nproc_per_node 2` of the PyTorch reference
# (bench/dino_reference_train.py: DDP over gloo, one thread per rank), plus dino-rs's two parts
# in one process and two ranks with the BatchNorm head (SyncBatchNorm). Prints a table: wall
# time of the whole command (start-up included), img/s of the last epoch (dino-rs: its training
# steps, from metrics.jsonl; PyTorch: the epoch's wall time, from its log) and, for dino-rs's
# ranks, the median time per step spent summing over the ranks (`comm_s`). Both run the
# official recipe's defaults (`--recipe official`) with the flags below.
#
#   sudo apt-get install dataset-fashion-mnist openmpi-bin libopenmpi-dev libclang-dev
#   bash bench/mpi_scaling.sh [WORKDIR]          # ~6 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-/tmp/mpibench}"
FM="${FM:-$W/data}"
mkdir -p "$W"
[ -d "$FM/train_1000" ] || python3 bench/fashion_mnist_folders.py "$FM" --train-subset 1000
cargo build --release --quiet -p dino-native --features mpi
DINO=./target/release/dino
RECIPE=(--embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28
        --local-crop-size 14 --local-crops-number 6 --out-dim 2048 --head-hidden-dim 512
        --head-bottleneck-dim 128 --batch-size 32 --epochs 2 --warmup-epochs 1 --seed 0)
MPIRUN=(mpirun --oversubscribe -np 2)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
ROWS=()

# NAME DIR COMMAND...: runs it, times it, keeps a table row
measure() {
    local name=$1 dir=$2
    shift 2
    rm -rf "$dir"
    local start end
    start=$(date +%s.%N)
    "$@" >"$dir.out" 2>&1 || { cat "$dir.out"; exit 1; }
    end=$(date +%s.%N)
    ROWS+=("$(python3 - "$name" "$dir" "$start" "$end" <<'PY'
import json, os, statistics, sys
name, d, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
comm = "-"
metrics = os.path.join(d, "metrics.jsonl")
if os.path.exists(metrics):
    # dino-rs: the steps of the last epoch (their img/s counts every rank's images)
    records = [json.loads(l) for l in open(metrics)]
    last = [r for r in records if r["epoch"] == records[-1]["epoch"]]
    ips = 1 / statistics.mean(1 / r["img_per_s"] for r in last)
    c = [r.get("comm_s") for r in records[4:]]
    c = [x for x in c if x is not None]
    if c:
        comm = f"{statistics.median(c) * 1e3:.1f} ms"
else:
    # the PyTorch reference: its last epoch's images over its wall time
    epochs = [json.loads(l) for l in open(os.path.join(d, "log.txt")) if l.startswith("{")]
    ips = epochs[-1]["img_per_s"]
print(f"| {name} | {end - start:.1f} s | {ips:.1f} | {comm} |")
PY
)")
}

dino() { $DINO train --recipe official --data "$FM/train_1000" --attention-every 0 "${RECIPE[@]}" "$@"; }
torch_ref() { python3 bench/dino_reference_train.py --data "$FM/train_1000" --workers 1 "${RECIPE[@]}" "$@"; }

measure "dino-rs, one process, one part" "$W/one" dino --output-dir "$W/one" --devices 1
measure "dino-rs, one process, two parts" "$W/parts" dino --output-dir "$W/parts" --devices 2
measure "dino-rs, mpirun -np 2 (one part each)" "$W/ranks" \
    "${MPIRUN[@]}" "$DINO" train --recipe official --data "$FM/train_1000" --attention-every 0 \
    "${RECIPE[@]}" --output-dir "$W/ranks" --devices 1
measure "dino-rs, mpirun -np 2, BatchNorm head (SyncBatchNorm)" "$W/ranks_bn" \
    "${MPIRUN[@]}" "$DINO" train --recipe official --data "$FM/train_1000" --attention-every 0 \
    "${RECIPE[@]}" --output-dir "$W/ranks_bn" --devices 1 --use-bn-in-head true
measure "PyTorch, one process, 2 threads" "$W/torch_one" torch_ref --out "$W/torch_one" --threads 2
measure "PyTorch, torchrun 2 ranks x 1 thread (DDP, gloo)" "$W/torch_ranks" \
    python3 -m torch.distributed.run --standalone --nproc_per_node 2 \
    bench/dino_reference_train.py --data "$FM/train_1000" --workers 1 "${RECIPE[@]}" \
    --out "$W/torch_ranks" --threads 1

echo
echo "| run | wall time | img/s (last epoch) | comm per step (median) |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
