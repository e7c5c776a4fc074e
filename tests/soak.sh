#!/usr/bin/env bash
# Crash-safety soak: `dino train` killed with SIGKILL at KILLS random moments (start-up,
# mid-step, mid-checkpoint, mid-log: wherever the clock falls), restarted each time on the
# same output folder, then run to its end; the result must equal an uninterrupted run byte for
# byte: the rolling checkpoint (networks, optimiser state, center), the exported teacher and
# log.txt, and metrics.jsonl must hold each iteration once. Every restart must resume from
# the last checkpoint written (or start afresh when none was).
#
#   bash tests/soak.sh                 # 20 kills (a few minutes on 2 cores)
#   KILLS=4 bash tests/soak.sh         # the short version CI runs
#   DINO=path/to/dino SEED=7 bash tests/soak.sh   # (default: the build of DINO_PROFILE, release)
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS="${KILLS:-20}"
source tests/features.sh
DINO="${DINO:-$BUILT/dino}"
SEED="${SEED:-$RANDOM}"
RANDOM=$SEED
W=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$W"' EXIT
[ -x "$DINO" ] || { echo "soak: $DINO not built (cargo build --profile $PROFILE -p dino-native)"; exit 1; }

ARGS=(train --data tests/fixtures/images --arch vit_tiny --out-dim 32 --head-hidden-dim 16
      --head-bottleneck-dim 8 --batch-size 2 --epochs 8 --warmup-epochs 1 --global-crop-size 32
      --local-crop-size 16 --local-crops-number 2 --checkpoint-every 1 --saveckp-freq 1
      --attention-every 1 --attention-images 2 --seed 3)

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
start=$(now_ms)
"$DINO" "${ARGS[@]}" --output-dir "$W/straight" 2> "$W/straight.log" &
pid=$!
while [ ! -e "$W/straight/checkpoint.safetensors" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
first=$(( $(now_ms) - start ))
wait "$pid" || { cat "$W/straight.log"; exit 1; }
ms=$(( $(now_ms) - start ))
echo "soak: uninterrupted run ${ms} ms (first checkpoint after ${first} ms); $KILLS kills at random moments (seed $SEED)"

# a quarter of the kills land at a random moment of start-up (loading, resuming, the learning
# check, the first step); the others after the restart has written a checkpoint of its own, at
# a random moment of the next iteration and a half (a step, a checkpoint write, a log, plot or
# snapshot write), so that the run moves on between kills
iters=$(grep -c . "$W/straight/metrics.jsonl")
per_iter=$(( (ms - first) / iters + 1 ))
ckpt="$W/killed/checkpoint.safetensors"
resumed=()
for k in $(seq 1 "$KILLS"); do
    before=$(stat -c %y "$ckpt" 2>/dev/null || echo none)
    "$DINO" "${ARGS[@]}" --output-dir "$W/killed" 2> "$W/restart$k.log" &
    pid=$!
    if (( RANDOM % 4 == 0 )); then
        delay=$(( RANDOM % first ))
    else
        while [ "$(stat -c %y "$ckpt" 2>/dev/null || echo none)" = "$before" ] \
            && kill -0 "$pid" 2>/dev/null; do
            sleep 0.01
        done
        delay=$(( RANDOM % (3 * per_iter / 2) ))
    fi
    sleep "$(awk "BEGIN { printf \"%.3f\", $delay / 1000 }")"
    kill -KILL "$pid" 2>/dev/null || true
    status=0
    wait "$pid" 2>/dev/null || status=$?
    if [ "$status" != 137 ]; then
        echo "soak: restart $k was not killed (exit status $status):"; cat "$W/restart$k.log"; exit 1
    fi
    from=$(grep -o 'at epoch [0-9]*, iteration [0-9]*' "$W/restart$k.log" | grep -o '[0-9]*$' || echo fresh)
    resumed+=("$from")
    if grep -q '^error' "$W/restart$k.log"; then
        echo "soak: restart $k failed:"; cat "$W/restart$k.log"; exit 1
    fi
done
"$DINO" "${ARGS[@]}" --output-dir "$W/killed" 2> "$W/final.log" || { cat "$W/final.log"; exit 1; }
final=$(grep -o 'at epoch [0-9]*, iteration [0-9]*' "$W/final.log" | grep -o '[0-9]*$' || echo fresh)
echo "soak: restarts resumed at iterations: ${resumed[*]}; the last one at $final"

fail=0
for f in checkpoint.safetensors teacher.safetensors log.txt checkpoint0007.safetensors; do
    if cmp -s "$W/straight/$f" "$W/killed/$f"; then
        echo "soak: $f identical"
    else
        echo "soak: $f DIFFERS"; fail=1
    fi
done
want=$(wc -l < "$W/straight/metrics.jsonl")
got=$(grep -o '"iteration":[0-9]*' "$W/killed/metrics.jsonl" | sort -u | wc -l)
lines=$(wc -l < "$W/killed/metrics.jsonl")
if [ "$want" = "$lines" ] && [ "$want" = "$got" ]; then
    echo "soak: metrics.jsonl has each of the $want iterations once"
else
    echo "soak: metrics.jsonl has $lines lines for $got iterations, want $want"; fail=1
fi
leftovers=$(find "$W/killed" -name '.tmp*' | wc -l)
[ "$leftovers" = 0 ] || { echo "soak: $leftovers temporary files left"; fail=1; }
[ $fail = 0 ] && echo "soak: PASS ($KILLS/$KILLS kills recovered)" || { echo "soak: FAIL"; exit 1; }
