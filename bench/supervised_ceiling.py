#!/usr/bin/env python3
"""What the benchmark's ViT can reach at k-NN when it is trained WITH labels in the same budget.

The Fashion-MNIST learning benchmark (bench/fashion_mnist.sh) asks DINO to beat raw pixels at
20-NN. This script trains the same backbone (bench/dino_reference_train.py's Backbone: timm ViT,
CLS after the final norm) with a linear classifier and cross-entropy on the class labels, for the
same number of iterations and images (batch 32, 10 epochs of train_10000 by default), with the
global-crop augmentation of the DINO recipe minus colour (random resized crop scale (0.4, 1),
flip), AdamW with the same lr rule, warm-up and cosine. It saves the backbone in the official key
layout, so `dino knn` scores its CLS features exactly as it scores the DINO teachers: a
supervised ceiling for what any label-free method can give this model in this budget.

    python3 bench/supervised_ceiling.py --data /tmp/fmbench/data/train_10000 --out /tmp/sup \
        --embed-dim 192 --depth 4 --num-heads 3 --patch-size 7 --global-crop-size 28
    dino knn --train fm/train --val fm/val --resize none --heads 3 -w /tmp/sup/teacher_backbone.safetensors
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dino_reference_train import Backbone, image_folder_loader, save_backbone, start_run  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from dino_official import cosine_scheduler  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ImageFolder: one subfolder per class")
    ap.add_argument("--out", required=True)
    ap.add_argument("--embed-dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--num-heads", type=int, default=3)
    ap.add_argument("--patch-size", type=int, default=7)
    ap.add_argument("--global-crop-size", type=int, default=28)
    ap.add_argument("--global-crops-scale", type=float, nargs=2, default=(0.4, 1.0))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.0005, help="at batch 256; scaled by batch/256 as in DINO")
    ap.add_argument("--warmup-epochs", type=int, default=2)
    ap.add_argument("--min-lr", type=float, default=1e-6)
    ap.add_argument("--weight-decay", type=float, default=0.04)
    ap.add_argument("--drop-path-rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    start_run(args)
    augment = transforms.Compose([
        transforms.RandomResizedCrop(args.global_crop_size, scale=tuple(args.global_crops_scale),
                                     interpolation=Image.BICUBIC),
        transforms.RandomHorizontalFlip(p=0.5),
        transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    dataset, loader = image_folder_loader(args, augment)
    backbone = Backbone(args, args.drop_path_rate)
    classifier = nn.Linear(args.embed_dim, len(dataset.classes))
    params = list(backbone.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.AdamW(params, weight_decay=args.weight_decay)
    niter = len(loader)
    lr_schedule = cosine_scheduler(args.lr * args.batch_size / 256.0, args.min_lr, args.epochs, niter,
                                   warmup_epochs=args.warmup_epochs)

    log = open(os.path.join(args.out, "log.txt"), "w")
    start = time.time()
    for epoch in range(args.epochs):
        losses, correct, seen, t0 = [], 0, 0, time.time()
        for it_in_epoch, (images, labels) in enumerate(loader):
            for group in optimizer.param_groups:
                group["lr"] = lr_schedule[niter * epoch + it_in_epoch]
            logits = classifier(backbone(images))
            loss = F.cross_entropy(logits, labels)
            if not math.isfinite(loss.item()):
                sys.exit(f"loss is {loss.item()}, stopping")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        stats = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_top1": 100.0 * correct / seen,
                 "img_per_s": seen / (time.time() - t0)}
        log.write(json.dumps(stats) + "\n")
        log.flush()
        print(json.dumps(stats), flush=True)

    save_backbone(backbone, args.out, start)


if __name__ == "__main__":
    main()
