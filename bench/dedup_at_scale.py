#!/usr/bin/env python3
"""`dino dedup` end to end on a collection of a million images' descriptors, on a machine
that cannot compute a million images' features in a day: the synthetic DINO-like
descriptors of `dino-bench-ann` are written into the feature index of a folder of N empty
image files, under the signature `dino dedup` gives that model and settings, so the run
reuses every row (as a second run over an indexed folder does) and does the rest for real:
reads the index (mapped), builds or updates the HNSW index, searches every image's
neighbours, groups the pairs and writes the reports. Prints wall time and peak memory
(sampled from /proc: resident, anonymous, and file pages of the mapped index).

    cargo build --release -p dino-native -p dino-bench
    python3 bench/dedup_at_scale.py --n 1000000 --work /tmp/dedup-scale -- --search hnsw

Arguments after `--` go to `dino dedup`. The descriptors are 1536-d (the issue's width);
the model only signs the index (its own descriptor is narrower, and nothing is computed).
"""
import argparse, json, os, shutil, struct, subprocess, sys, time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_signature(store):
    with open(store, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return json.loads(header["__metadata__"]["dino.index"])["signature"]


def write_store(path, signature, entries, rows):
    n, d = rows.shape
    files = json.dumps(entries, separators=(",", ":")).encode()
    data = n * d * 4
    header = {
        "__metadata__": {"dino.index": json.dumps({"signature": signature})},
        "features": {"dtype": "F32", "shape": [n, d], "data_offsets": [0, data]},
        "entries": {"dtype": "U8", "shape": [len(files)], "data_offsets": [data, data + len(files)]},
    }
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for s in range(0, n, 65536):
            f.write(np.ascontiguousarray(rows[s:s + 65536], dtype="<f4").tobytes())
        f.write(files)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000000)
    ap.add_argument("--work", default="/tmp/dedup-scale")
    ap.add_argument("--dino", default=os.path.join(ROOT, "target/release/dino"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "target/release/dino-bench-ann"))
    ap.add_argument("--weights", default=os.path.join(ROOT, "tests/fixtures/weights/s16_backbone.pth"))
    ap.add_argument("rest", nargs="*")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    w = os.path.abspath(a.work)
    # the signature dino gives these weights and settings, from a run over two photos
    probe = os.path.join(w, "probe")
    shutil.rmtree(probe, ignore_errors=True)
    os.makedirs(probe)
    photos = sorted(os.listdir(os.path.join(ROOT, "native/assets/photos")))[:2]
    for p in photos:
        shutil.copy(os.path.join(ROOT, "native/assets/photos", p), probe)
    probe_store = os.path.join(w, "probe.safetensors")
    subprocess.run([a.dino, "dedup", probe, "-w", a.weights, "--index-file", probe_store,
                    "--out", os.path.join(w, "probe-out"), "--show", "0"] + a.rest,
                   check=True, stdout=subprocess.DEVNULL)
    signature = read_signature(probe_store)
    # the descriptors
    rows_path = os.path.join(w, "rows-%d.npy" % a.n)
    if not os.path.exists(rows_path):
        subprocess.run([a.bench, "--sizes", str(a.n), "--write-rows", rows_path], check=True)
    rows = np.load(rows_path, mmap_mode="r")
    # the folder: N empty image files, 1000 a subfolder
    folder = os.path.join(w, "images")
    t = time.time()
    entries = []
    for i in range(a.n):
        sub = os.path.join(folder, "%04d" % (i // 1000))
        if i % 1000 == 0:
            os.makedirs(sub, exist_ok=True)
        p = os.path.join(sub, "%07d.jpg" % i)
        if not os.path.exists(p):
            open(p, "wb").close()
        st = os.stat(p)
        entries.append({"path": p, "size": st.st_size, "modified_ns": st.st_mtime_ns})
    store = os.path.join(w, "index.safetensors")
    write_store(store, signature, entries, rows)
    print("folder of %d files and its feature index in %.0f s" % (a.n, time.time() - t), file=sys.stderr)
    out = os.path.join(w, "out")
    cmd = [a.dino, "dedup", folder, "-w", a.weights, "--index-file", store,
           "--out", out, "--show", "0"] + a.rest
    print(" ".join(cmd), file=sys.stderr)
    # peak memory, sampled: all resident, anonymous (what the process allocated) and file
    # pages (the mapped feature index, which the system can drop and read again)
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    t = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    log = []
    import threading
    reader = threading.Thread(target=lambda: log.extend(proc.stderr))
    reader.start()
    while proc.poll() is None:
        try:
            for line in open("/proc/%d/status" % proc.pid):
                key = line.split(":")[0]
                if key in peak:
                    peak[key] = max(peak[key], int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.5)
    reader.join()
    wall = time.time() - t
    sys.stderr.write("".join(log)[-6000:])
    if proc.returncode != 0:
        sys.exit("dino dedup failed")
    report = json.load(open(os.path.join(out, "report.json")))
    print(json.dumps({
        "images": report["images"], "wall_s": round(wall, 1),
        "seconds": report["seconds"], "search": report["search"], "pairs": report["pairs"],
        "peak_mb": {k: round(v / 1024) for k, v in peak.items()},
    }))


if __name__ == "__main__":
    main()
