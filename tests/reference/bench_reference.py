#!/usr/bin/env python3
"""Times the reference engines on the same ViT `dino bench` times.

PyTorch (eager, `inference_mode`) runs the official DINO ViT architecture (timm's
VisionTransformer with qkv bias and LayerNorm eps 1e-6, num_classes=0, CLS output);
ONNX Runtime runs the same model exported to ONNX. Both use `--threads` threads and the
same inputs. Prints one JSON line: a list of {engine, batch, median_ms, min_ms, mean_ms}.

    python3 tests/reference/bench_reference.py --arch vit_small --patch 16 --batch 1 8
"""

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial

DIMS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


def summarise(engine, batch, times):
    times = sorted(times)
    return {
        "engine": engine, "batch": batch, "median_ms": times[len(times) // 2],
        "min_ms": times[0], "mean_ms": sum(times) / len(times),
    }


def time_fn(fn, warmup, iters):
    out = []
    for i in range(warmup + iters):
        t = time.perf_counter()
        fn()
        if i >= warmup:
            out.append((time.perf_counter() - t) * 1e3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="vit_small")
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-onnx", action="store_true")
    args = ap.parse_args()

    import torch
    import timm

    torch.set_num_threads(args.threads)
    dim, heads = DIMS[args.arch.replace("vit_", "")]
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=args.size, patch_size=args.patch, embed_dim=dim, depth=12, num_heads=heads,
        mlp_ratio=4, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=0,
    ).eval()
    results = []
    versions = {"torch": torch.__version__}
    for b in args.batch:
        x = torch.randn(b, 3, args.size, args.size)
        with torch.inference_mode():
            t = time_fn(lambda: model(x), args.warmup, args.iters)
        results.append(summarise(f"PyTorch {torch.__version__.split('+')[0]} (eager)", b, t))

    if not args.no_onnx:
        try:
            import onnxruntime as ort
        except ImportError:
            ort = None
            print("onnxruntime not installed: skipped", file=sys.stderr)
        if ort is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "vit.onnx")
                x = torch.randn(1, 3, args.size, args.size)
                torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["cls"],
                                  dynamic_axes={"x": {0: "batch"}, "cls": {0: "batch"}},
                                  opset_version=17, dynamo=False)
                so = ort.SessionOptions()
                so.intra_op_num_threads = args.threads
                so.inter_op_num_threads = 1
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                for b in args.batch:
                    xb = torch.randn(b, 3, args.size, args.size).numpy()
                    t = time_fn(lambda: sess.run(None, {"x": xb}), args.warmup, args.iters)
                    results.append(summarise(f"ONNX Runtime {ort.__version__}", b, t))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
