#!/usr/bin/env python3
"""Where a GPU training step's time goes: sums the kernel tables CubeCL writes with
`--profile-kernels FILE` (one table per synchronisation: name, total time, launches, share)
over the whole file and prints the kernels by total time.

    dino-bench --mode train-step --device vulkan --batch 32 --iters 1 --warmup 1 --rounds 1 \\
        --reference off --profile-kernels kernels.txt
    python3 bench/kernel_profile.py kernels.txt --steps 2 [--top 30]

`--steps`: how many training steps the file covers (warm-up included), so that the table
shows milliseconds per step. Kernel names are shortened to their first 100 characters.
"""

import argparse
import collections
import re
import sys

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def millis(text):
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse(path):
    """{kernel: [total ms, launches]} over every table of the file."""
    totals = collections.defaultdict(lambda: [0.0, 0])
    rows = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip()
            if not (line.startswith("| ") and line.endswith(" |")):
                continue
            parts = line[2:-2].rsplit(" | ", 3)
            if len(parts) != 4:
                continue
            name, duration, count = parts[0].strip(), parts[1], parts[2].strip()
            if name in ("Name", "Total") or not count.isdigit():
                continue
            try:
                ms = millis(duration)
            except ValueError:
                continue
            totals[name][0] += ms
            totals[name][1] += int(count)
            rows += 1
    return totals, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--steps", type=int, default=1, help="training steps the file covers")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    totals, rows = parse(args.file)
    if not rows:
        sys.exit(f"{args.file}: no kernel table found (was the run on a GPU backend?)")
    total = sum(t for t, _ in totals.values())
    print(f"{len(totals)} kernels, {total / args.steps:.1f} ms of kernel time per step "
          f"({args.steps} step(s) in {args.file})")
    print(f"| {'kernel':<100} | {'ms/step':>8} | {'launches/step':>13} | {'share':>6} |")
    print(f"|{'-' * 102}|{'-' * 10}|{'-' * 15}|{'-' * 8}|")
    for name, (ms, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"| {name[:100]:<100} | {ms / args.steps:>8.2f} | {n / args.steps:>13.1f} | "
              f"{100 * ms / total:>5.1f}% |")


if __name__ == "__main__":
    main()
