#!/usr/bin/env python3
"""The PyTorch rows of the PAWS learning benchmark (bench/paws_fashion_mnist.sh).

--mode paws: suncet's PAWS (the official code paths of tests/reference/paws_official.py:
Wide ResNet, projection head, PAWS loss with sharpening and me-max, LARS-wrapped SGD, warm-up
cosine) on an unlabelled image folder and a labelled CSV (path,class), with suncet's CIFAR-10
view transforms (RandomResizedCrop, flip, colour distortion with solarize and equalize), then the
soft nearest-neighbour evaluation of snn_eval.py on a validation folder (the labelled images as
the memory, tau 0.1).

--mode supervised: the same backbone with a linear classifier trained with cross-entropy on the
labelled images alone (random crop with 2 px padding and flip, SGD momentum 0.9 Nesterov,
lr 0.1 cosine, weight decay 5e-4), the same number of iterations, top-1 on the validation
folder.

Prints one JSON line: {"mode", "top1", "train_s", "iterations"}.
"""

import argparse
import csv
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision import transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from paws_official import (  # noqa: E402
    WideResNet, init_model, init_opt, init_paws_loss, make_labels_matrix)

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def rgb(path):
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def folder(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    items = []
    for i, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, c))):
            items.append((os.path.join(root, c, f), i))
    return classes, items


def labelled_csv(path, classes):
    out = []
    with open(path) as f:
        for row in csv.reader(f):
            if row[0] == "path":
                continue
            out.append((row[0], classes.index(row[1])))
    return out


class Solarize:
    def __init__(self, p=0.2):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            return ImageOps.solarize(img, threshold=random.random() * 256)
        return img


def view(size, scale, s=0.5):
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=scale),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        Solarize(0.2),
        transforms.RandomEqualize(p=0.2),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD)])


PLAIN = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def embed(net, items, images=None):
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(items), 500):
            x = torch.stack([PLAIN(rgb(p)) for p, _ in items[i:i + 500]])
            out.append(net(x))
    net.train()
    return torch.cat(out)


def snn_top1(encoder, labelled, val, classes):
    zt = F.normalize(embed(encoder, labelled))
    zv = F.normalize(embed(encoder, val))
    onehot = F.one_hot(torch.tensor([c for _, c in labelled]), len(classes)).float()
    probs = F.softmax(zv @ zt.T / 0.1, dim=1) @ onehot
    pred = probs.argmax(1)
    return 100.0 * (pred == torch.tensor([c for _, c in val])).float().mean().item()


def paws(args, classes, unlabelled, labelled, val):
    enc = init_model(depth=args.depth, widen=args.widen, use_pred=False, output_dim=128)
    ipe = len(unlabelled) // args.u_batch
    iters = args.epochs * ipe
    enc, opt, sched = init_opt(enc, ipe, args.start_lr, args.lr, 0.9, False, args.warmup, args.epochs,
                               weight_decay=1e-6, final_lr=args.final_lr)
    loss_fn = init_paws_loss(multicrop=args.multicrop, tau=0.1, T=0.25, me_max=True)
    C, K = len(classes), args.imgs_per_class
    labels = torch.cat([make_labels_matrix(C, K, 0.1)] * 2)
    large, small = view(args.size, (0.75, 1.0)), view(args.small, (0.3, 0.75))
    by_class = [[p for p, c in labelled if c == k] for k in range(C)]
    t0 = time.time()
    for ep in range(args.epochs):
        order = list(range(len(unlabelled)))
        random.shuffle(order)
        for it in range(ipe):
            ims = [rgb(unlabelled[j][0]) for j in order[it * args.u_batch:(it + 1) * args.u_batch]]
            sup = [rgb(random.choice(by_class[k])) for _ in range(K) for k in range(C)]  # class-interleaved
            sviews = [torch.stack([large(im) for im in sup]) for _ in range(2)]
            uviews = [torch.stack([large(im) for im in ims]) for _ in range(2)]
            uviews += [torch.stack([small(im) for im in ims]) for _ in range(args.multicrop)]
            opt.zero_grad()
            h, z = enc(sviews + uviews, return_before_head=True)
            ns, u = 2 * C * K, args.u_batch
            tv = h[ns:].detach()
            tv = torch.cat([tv[u:2 * u], tv[:u]])
            ploss, me_max = loss_fn(anchor_views=z[ns:], anchor_supports=z[:ns], anchor_support_labels=labels,
                                    target_views=tv, target_supports=h[:ns].detach(),
                                    target_support_labels=labels)
            (ploss + me_max).backward()
            opt.step()
            sched.step()
            if it % 20 == 0:
                print(f"epoch {ep} it {it}/{ipe} loss {(ploss + me_max).item():.4f} "
                      f"({time.time() - t0:.0f} s)", file=sys.stderr)
    train_s = time.time() - t0
    return snn_top1(enc, labelled, val, classes), train_s, iters


def supervised(args, classes, labelled, val, iters):
    torch.manual_seed(args.seed)
    net = WideResNet(args.depth, args.widen)
    head = nn.Linear(64 * args.widen, len(classes))
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    aug = transforms.Compose([transforms.RandomCrop(args.size, padding=2), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    imgs = [(rgb(p), c) for p, c in labelled]
    t0 = time.time()
    for it in range(iters):
        batch = [random.choice(imgs) for _ in range(args.sup_batch)]
        x = torch.stack([aug(im) for im, _ in batch])
        y = torch.tensor([c for _, c in batch])
        loss = F.cross_entropy(head(net._forward_backbone(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 50 == 0:
            print(f"it {it}/{iters} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", file=sys.stderr)
    train_s = time.time() - t0
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(val), 500):
            x = torch.stack([PLAIN(rgb(p)) for p, _ in val[i:i + 500]])
            y = torch.tensor([c for _, c in val[i:i + 500]])
            correct += (head(net._forward_backbone(x)).argmax(1) == y).sum().item()
    return 100.0 * correct / len(val), train_s, iters


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["paws", "supervised"], required=True)
    ap.add_argument("--data", help="unlabelled image folder (paws)")
    ap.add_argument("--labels", required=True, help="labels.csv: path,class")
    ap.add_argument("--labels-root", required=True, help="the labelled folder (its class names)")
    ap.add_argument("--val", required=True)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--widen", type=int, default=2)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--small", type=int, default=14)
    ap.add_argument("--multicrop", type=int, default=2)
    ap.add_argument("--u-batch", type=int, default=64)
    ap.add_argument("--imgs-per-class", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--start-lr", type=float, default=0.8)
    ap.add_argument("--lr", type=float, default=3.2)
    ap.add_argument("--final-lr", type=float, default=0.032)
    ap.add_argument("--iterations", type=int, default=312, help="supervised: optimiser steps")
    ap.add_argument("--sup-batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    classes, _ = folder(args.labels_root)
    labelled = labelled_csv(args.labels, classes)
    _, val = folder(args.val)
    if args.mode == "paws":
        _, unlabelled = folder(args.data)
        top1, train_s, iters = paws(args, classes, unlabelled, labelled, val)
    else:
        top1, train_s, iters = supervised(args, classes, labelled, val, args.iterations)
    print(json.dumps(dict(mode=args.mode, top1=round(top1, 2), train_s=round(train_s, 1), iterations=iters)))


if __name__ == "__main__":
    main()
