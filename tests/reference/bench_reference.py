#!/usr/bin/env python3
"""Times the reference engines on the same ViT `dino bench` times.

PyTorch (eager, `inference_mode`) runs the official DINO ViT architecture (timm's
VisionTransformer with qkv bias and LayerNorm eps 1e-6, num_classes=0, CLS output);
ONNX Runtime runs the same model exported to ONNX. Both use `--threads` threads and the
same inputs. Prints one JSON line: a list of {engine, batch, median_ms, min_ms, mean_ms}.

    python3 tests/reference/bench_reference.py --arch vit_small --patch 16 --batch 1 8

With `--serve`, it builds the engines once, prints `{"ready": [engine names]}`, then answers
lines `ENGINE_INDEX BATCH ITERS` on stdin with a JSON list of times in ms: `dino bench` uses
this to interleave rounds of every engine, so that a machine's drifting speed (a VM's
neighbours, clock changes) does not favour whichever engine ran first.
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
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--mode", default="forward", choices=["forward", "train_step", "augment"],
                    help="forward: the ViT forward pass; train_step: one DINO iteration "
                         "(official head, 2 global + N local crops); augment: DataAugmentationDINO "
                         "on one image, one core")
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--local-crops", type=int, default=8)
    ap.add_argument("--out-dim", type=int, default=65536)
    ap.add_argument("--image", default="tests/fixtures/images/chelsea.png")
    ap.add_argument("--torch-device", default="cpu", choices=["cpu", "cuda"],
                    help="train_step: where PyTorch runs; on cuda it is timed twice, in strict fp32 "
                         "and with TF32 matmuls (PyTorch's own default for convolutions)")
    ap.add_argument("--precision", nargs="+", default=["f32"], choices=["f32", "bf16", "f16"],
                    help="train_step: also time torch.autocast (AMP) in these half precisions "
                         "(f16 with a GradScaler, as main_dino.py --use_fp16)")
    args = ap.parse_args()
    if args.serve:
        return serve(args)

    import numpy as np

    results = []
    for name, run in build_engines(args):
        for b in args.batch:
            x = np.random.default_rng(0).standard_normal((b, 3, args.size, args.size), dtype=np.float32)
            results.append(summarise(name, b, time_fn(lambda: run(x), args.warmup, args.iters)))
    print(json.dumps(results))


def build_engines(args):
    """(name, run(batch_array)) pairs: PyTorch eager, then ONNX Runtime when installed."""
    import numpy as np
    import torch
    import timm

    torch.set_num_threads(args.threads)
    dim, heads = DIMS[args.arch.replace("vit_", "")]
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=args.size, patch_size=args.patch, embed_dim=dim, depth=12, num_heads=heads,
        mlp_ratio=4, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=0,
    ).eval()

    def run_torch(x):
        with torch.inference_mode():
            model(torch.from_numpy(x))

    engines = [(f"PyTorch {torch.__version__.split('+')[0]} (eager)", run_torch)]
    if not args.no_onnx:
        try:
            import onnxruntime as ort
        except ImportError:
            print("onnxruntime not installed: skipped", file=sys.stderr)
            return engines
        tmp = tempfile.mkdtemp()
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
        engines.append((f"ONNX Runtime {ort.__version__}", lambda x: sess.run(None, {"x": x})))
    return engines


def build_train_step(args):
    """One iteration of main_dino.py's loop on random crops (reference implementation in
    bench/dino_reference_train.py), batch = the requested batch size."""
    import numpy as np
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
    import dino_reference_train as ref

    torch.set_num_threads(args.threads)
    dim, heads = DIMS[args.arch.replace("vit_", "")]
    a = argparse.Namespace(global_crop_size=args.global_size, patch_size=args.patch, embed_dim=dim, depth=12,
                           num_heads=heads)
    dev = torch.device(args.torch_device)
    student = ref.MultiCropWrapper(ref.Backbone(a, 0.1), ref.DINOHead(dim, args.out_dim, official_init=True)).to(dev)
    teacher = ref.MultiCropWrapper(ref.Backbone(a, 0.0), ref.DINOHead(dim, args.out_dim, official_init=True)).to(dev)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.04)
    loss_fn = ref.DINOLoss(args.out_dim, 2 + args.local_crops, 0.04, 0.04, 0, 1).to(dev)
    crops_cache = {}

    def step(batch, amp=None, scaler=None):
        """main_dino.py's iteration; `amp`: the autocast dtype (None: f32), `scaler`: its
        GradScaler (f16)."""
        b = batch.shape[0]
        if b not in crops_cache:
            crops_cache[b] = [torch.randn(b, 3, args.global_size, args.global_size, device=dev) for _ in range(2)] + \
                [torch.randn(b, 3, args.local_size, args.local_size, device=dev) for _ in range(args.local_crops)]
        crops = crops_cache[b]
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            t_out = teacher(crops[:2])
            s_out = student(crops)
            loss = loss_fn(s_out.float(), t_out.float(), 0)
        opt.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        for p in params:
            coef = 3.0 / (p.grad.norm(2) + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        with torch.no_grad():
            for pq, pk in zip(student.parameters(), teacher.parameters()):
                pk.mul_(0.996).add_(0.004 * pq.detach())
        if dev.type == "cuda":
            torch.cuda.synchronize()

    version = torch.__version__.split('+')[0]
    amp = []
    for p in args.precision:
        if p == "bf16":
            amp.append(("AMP bf16", lambda batch: step(batch, torch.bfloat16)))
        elif p == "f16":
            scaler = torch.amp.GradScaler(dev.type)
            amp.append(("AMP f16", lambda batch, s=scaler: step(batch, torch.float16, s)))
    if dev.type == "cpu":
        return [(f"PyTorch {version} (eager)", step)] + [(f"PyTorch {version} {n}", r) for n, r in amp]

    def with_tf32(on):
        def run(batch):
            torch.backends.cuda.matmul.allow_tf32 = on
            torch.backends.cudnn.allow_tf32 = on
            step(batch)
        return run

    gpu = torch.cuda.get_device_name(0)
    return [(f"PyTorch {version} CUDA fp32 ({gpu})", with_tf32(False)),
            (f"PyTorch {version} CUDA TF32 ({gpu})", with_tf32(True))] + \
        [(f"PyTorch {version} CUDA {n} ({gpu})", r) for n, r in amp]


def build_augment(args):
    """DataAugmentationDINO (torchvision, as main_dino.py) on one image, one thread."""
    import torch
    from PIL import Image

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
    import dino_reference_train as ref

    torch.set_num_threads(1)
    a = argparse.Namespace(global_crop_size=args.global_size, local_crop_size=args.local_size,
                           global_crops_scale=(0.4, 1.0), local_crops_scale=(0.05, 0.4),
                           local_crops_number=args.local_crops)
    aug = ref.DataAugmentationDINO(a)
    img = Image.open(args.image).convert("RGB")

    def run(batch):
        for _ in range(batch.shape[0]):
            aug(img)

    import torchvision

    return [(f"torchvision {torchvision.__version__.split('+')[0]} (1 core)", run)]


def serve(args):
    import numpy as np

    engines = {"forward": build_engines, "train_step": build_train_step, "augment": build_augment}[args.mode](args)
    print(json.dumps({"ready": [name for name, _ in engines]}), flush=True)
    inputs = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        idx, batch, iters = (int(v) for v in line.split())
        if batch not in inputs:
            size = args.size if args.mode == "forward" else 1
            inputs[batch] = np.random.default_rng(0).standard_normal(
                (batch, 3, size, size), dtype=np.float32)
        run = engines[idx][1]
        run(inputs[batch])  # one untimed call: caches warm after the other engines ran
        times = time_fn(lambda: run(inputs[batch]), 0, iters)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main()
