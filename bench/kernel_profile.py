#!/usr/bin/env python3
"""Where a GPU training step's time goes: sums the kernel timings CubeCL writes with
`--profile-kernels FILE` over the whole file and prints the kernels by total time.

    dino-bench --mode train-step --device vulkan --batch 32 --iters 1 --warmup 1 --rounds 1 \\
        --reference off --profile-kernels kernels.txt
    python3 bench/kernel_profile.py kernels.txt --steps 2 [--top 30]

CubeCL 0.11 writes one line per timed launch, `| <duration> | <kernel name>` (or `| not
measured | <name>`), and a summary table (`| Name | Duration | Num Computed | Ratio |`) only
when a caller synchronises through `sync_buffers`, which Burn's training step does not: the
launch lines are what is summed; the tables are read only from a file without launch lines
(they summarise the same launches).

`--steps`: how many training steps the file covers (warm-up included), so that the table
shows milliseconds per step. Kernel names longer than 100 characters keep their first 85 and
their last 12 (the hash that tells apart the variants of one kernel, e.g. CubeCL's matmuls).
"""

import argparse
import collections
import re
import sys

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LAUNCH = re.compile(r"\| ([0-9.]+(?:ns|µs|us|ms|s))\s* \| (.+)")


def millis(text):
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def short(name, width=100):
    return name if len(name) <= width else f"{name[:85]} ... {name[-12:]}"


def parse(path):
    """({kernel: [total ms, launches]}, rows read, launches not measured) of the file."""
    launches = collections.defaultdict(lambda: [0.0, 0])
    tables = collections.defaultdict(lambda: [0.0, 0])
    n_launches = n_tables = unmeasured = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip()
            m = LAUNCH.fullmatch(line)
            if m:
                name = m.group(2).strip()
                launches[name][0] += millis(m.group(1))
                launches[name][1] += 1
                n_launches += 1
                continue
            if line.startswith("| not measured "):
                unmeasured += 1
                continue
            if not (line.startswith("| ") and line.endswith(" |")):
                continue
            # a summary table's row: name | duration | launches | share
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
            tables[name][0] += ms
            tables[name][1] += int(count)
            n_tables += 1
    if n_launches:
        return launches, n_launches, unmeasured
    return tables, n_tables, unmeasured


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--steps", type=int, default=1, help="training steps the file covers")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    totals, rows, unmeasured = parse(args.file)
    if not rows:
        sys.exit(f"{args.file}: no kernel timings found (was the run on a GPU backend?)")
    if unmeasured:
        print(f"({unmeasured} launches were not measured by the device and are left out)")
    total = sum(t for t, _ in totals.values())
    print(f"{len(totals)} kernels, {total / args.steps:.1f} ms of kernel time per step "
          f"({args.steps} step(s) in {args.file})")
    print(f"| {'kernel':<100} | {'ms/step':>8} | {'launches/step':>13} | {'share':>6} |")
    print(f"|{'-' * 102}|{'-' * 10}|{'-' * 15}|{'-' * 8}|")
    for name, (ms, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"| {short(name):<100} | {ms / args.steps:>8.2f} | {n / args.steps:>13.1f} | "
              f"{100 * ms / total:>5.1f}% |")


if __name__ == "__main__":
    main()
