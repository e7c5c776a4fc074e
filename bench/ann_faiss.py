#!/usr/bin/env python3
"""FAISS beside dino-rs's approximate search (run by `dino-bench-ann`, which writes the
descriptors and the exact ground truth to DIR): HNSW (flat f32, fp16 and 8-bit scalar
quantised storage) with the same M / efConstruction / ef as USearch, the exact flat inner
product index, and what dino runs by default built from FAISS's parts (`pca-hnsw-i8`: the
graph on the top --graph-dims principal components, L2 there, its --candidates x k proposals
re-ranked exactly on the full rows: `PCA{g},HNSW{m}_SQ8,RFlat`). Prints one JSON line per index: recall@k, build time, time per query, the
time of a full self-search, memory (resident growth) and file size.

    python3 bench/ann_faiss.py DIR --k 10 --m 16 --ef-construction 128 --ef-search 64
"""
import argparse, json, os, time

import numpy as np
import faiss


def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--ef-search", type=int, default=64)
    ap.add_argument("--full", type=int, default=1)
    ap.add_argument("--exact-full-max", type=int, default=200000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--graph-dims", type=int, default=128)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--variants", default=os.environ.get("FAISS_VARIANTS", "hnsw-f32,hnsw-f16,hnsw-i8,pca-hnsw-i8,flat"))
    a = ap.parse_args()
    if a.threads:
        faiss.omp_set_num_threads(a.threads)
    rows = np.load(os.path.join(a.dir, "rows.npy"))
    queries = np.load(os.path.join(a.dir, "queries.npy"))
    truth = np.load(os.path.join(a.dir, "truth.npy"))
    n, d = rows.shape
    k = a.k
    q = rows[queries]

    def measure(name, make, hnsw):
        before = rss()
        t = time.perf_counter()
        index = make()
        params = faiss.ParameterSpace()
        if hnsw:
            params.set_index_parameter(index, "efConstruction", a.ef_construction)
        if not index.is_trained:  # the scalar quantisers learn each dimension's range, PCA its axes
            index.train(rows[:min(n, 100000)])
        index.add(rows)
        build = time.perf_counter() - t
        memory = rss() - before
        if hnsw:
            params.set_index_parameter(index, "efSearch", max(a.ef_search, k + 1))
        t = time.perf_counter()
        _, found = index.search(q, k + 1)
        query_ms = (time.perf_counter() - t) * 1e3 / len(q)
        hit = 0
        for i, f in enumerate(found):
            f = [x for x in f if x != queries[i]][:k]
            hit += len(set(f) & set(truth[i].tolist()))
        full = None
        if a.full and (hnsw or n <= a.exact_full_max):
            t = time.perf_counter()
            for s in range(0, n, 65536):
                index.search(rows[s:s + 65536], k + 1)
            full = time.perf_counter() - t + build
        path = os.path.join(a.dir, "faiss.index")
        faiss.write_index(index, path)
        size = os.path.getsize(path) / 1e6
        os.remove(path)
        print(json.dumps({
            "library": "FAISS %s %s" % (faiss.__version__, name),
            "n": int(n), "recall": hit / truth.size, "build_s": build,
            "query_ms": query_ms, "full_s": full, "memory_mb": memory / 1e6,
            "file_mb": size,
        }), flush=True)
        del index

    ip = faiss.METRIC_INNER_PRODUCT
    for v in a.variants.split(","):
        if v == "hnsw-f32":
            measure("HNSW f32", lambda: faiss.IndexHNSWFlat(d, a.m, ip), True)
        elif v == "hnsw-f16":
            measure("HNSW f16", lambda: faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, a.m, ip), True)
        elif v == "hnsw-i8":
            measure("HNSW i8", lambda: faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, a.m, ip), True)
        elif v == "pca-hnsw-i8":
            def pca_graph():
                index = faiss.index_factory(d, "PCA%d,HNSW%d_SQ8,RFlat" % (a.graph_dims, a.m))
                index.k_factor = a.candidates
                return index
            measure("HNSW i8 on PCA-%d, %d rescored" % (a.graph_dims, a.candidates * k), pca_graph, True)
        elif v == "flat" and n <= a.exact_full_max:
            measure("exact flat", lambda: faiss.IndexFlatIP(d), False)


if __name__ == "__main__":
    main()
