#!/usr/bin/env python3
"""The official DINO recipe (main_dino.py) in PyTorch, for side-by-side learning benchmarks
against `dino train`: same data folder, same model sizes, same crops, same schedules, same
budget. Written from the official code: timm's VisionTransformer with the official position
embedding interpolation, DINOHead, MultiCropWrapper, DINOLoss, DataAugmentationDINO with
torchvision transforms, AdamW on the official parameter groups, per-tensor clipping, frozen
last layer, cosine schedules and the teacher EMA. One process (CPU or CUDA), or several under
`torchrun` as the official DDP run: gloo on the CPU (NCCL on CUDA), a DistributedSampler,
DistributedDataParallel on the student, the center's batch mean all-reduced; `--batch-size`
stays the global batch (the official `batch_size_per_gpu` is batch / ranks), as in `dino train`.

    torchrun --nproc_per_node 2 bench/dino_reference_train.py --threads 1 ...   # two ranks

Saves the teacher backbone as OUT/teacher_backbone.safetensors in the official key layout,
which `dino knn` / `dino attention` load directly.

    python3 bench/dino_reference_train.py --data /tmp/fmnist/train_10000 --out /tmp/ref \
        --embed-dim 128 --depth 6 --num-heads 4 --patch-size 4 --global-crop-size 28 \
        --local-crop-size 12 --local-crops-number 6 --out-dim 4096 --batch-size 128 --epochs 10
"""

import argparse
import json
import math
import os
import random
import sys
import time
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps
from torchvision import datasets, transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from dino_official import (  # noqa: E402,F401 (bench_reference imports DINOHead, DINOLoss, cosine_scheduler from here)
    DINOHead, DINOLoss, cancel_gradients_last_layer, clip_gradients, cosine_scheduler, ema_update, get_params_groups)
from make_fixtures import interpolate_pos_encoding  # noqa: E402


class GaussianBlur:
    def __init__(self, p=0.5, radius_min=0.1, radius_max=2.0):
        self.prob, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, img):
        if random.random() <= self.prob:
            return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))
        return img


class Solarization:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


class DataAugmentationDINO:
    def __init__(self, args):
        flip_and_color_jitter = transforms.Compose([
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ])
        normalize = transforms.Compose([
            transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        g, l = args.global_crop_size, args.local_crop_size
        r = dict(radius_min=args.blur_radius[0], radius_max=args.blur_radius[1])
        self.global1 = transforms.Compose([
            transforms.RandomResizedCrop(g, scale=tuple(args.global_crops_scale), interpolation=Image.BICUBIC),
            flip_and_color_jitter, GaussianBlur(1.0, **r), normalize])
        self.global2 = transforms.Compose([
            transforms.RandomResizedCrop(g, scale=tuple(args.global_crops_scale), interpolation=Image.BICUBIC),
            flip_and_color_jitter, GaussianBlur(0.1, **r), Solarization(0.2), normalize])
        self.n_local = args.local_crops_number
        self.local = transforms.Compose([
            transforms.RandomResizedCrop(l, scale=tuple(args.local_crops_scale), interpolation=Image.BICUBIC),
            flip_and_color_jitter, GaussianBlur(p=0.5, **r), normalize])

    def __call__(self, image):
        return [self.global1(image), self.global2(image)] + [self.local(image) for _ in range(self.n_local)]


class Backbone(nn.Module):
    """The official ViT forward (CLS after the final norm) on timm's modules."""

    def __init__(self, args, drop_path_rate):
        super().__init__()
        import timm

        self.vit = timm.models.vision_transformer.VisionTransformer(
            img_size=args.global_crop_size, patch_size=args.patch_size, embed_dim=args.embed_dim,
            depth=args.depth, num_heads=args.num_heads, mlp_ratio=4, qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0, drop_path_rate=drop_path_rate)
        for p in (self.vit.pos_embed, self.vit.cls_token):
            nn.init.trunc_normal_(p, std=0.02)
        self.patch = args.patch_size

    def forward(self, x):
        b, _, h, w = x.shape
        m = self.vit
        t = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((m.cls_token.expand(b, -1, -1), t), dim=1)
        t = t + interpolate_pos_encoding(m.pos_embed, h, w, self.patch)
        for blk in m.blocks:
            t = blk(t)
        return m.norm(t)[:, 0]


class DistributedDINOLoss(DINOLoss):
    """The official `update_center` across ranks: the batch mean of every rank's teacher output."""

    def forward(self, student_output, teacher_output, epoch):
        center = self.center
        loss = super().forward(student_output, teacher_output, epoch)
        with torch.no_grad():
            batch_center = teacher_output.sum(0, keepdim=True)
            dist.all_reduce(batch_center)
            batch_center = batch_center / (len(teacher_output) * dist.get_world_size())
            self.center = center * self.center_momentum + batch_center * (1 - self.center_momentum)
        return loss


@torch.no_grad()
def teacher_entropies(teacher_output, dino_loss, epoch):
    """dino-rs's collapse diagnostics: mean entropy of the teacher targets and entropy of their
    batch mean (before the center update, as the loss sees them)."""
    logits = (teacher_output - dino_loss.center) / dino_loss.teacher_temp_schedule[epoch]
    p = F.softmax(logits, dim=-1)
    per_image = -(p * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    mean = p.mean(0)
    return per_image.item(), -(mean * mean.clamp_min(1e-30).log()).sum().item()


class MultiCropWrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        idx_crops = torch.cumsum(torch.unique_consecutive(
            torch.tensor([inp.shape[-1] for inp in x]), return_counts=True)[1], 0)
        start, output = 0, []
        for end in idx_crops:
            output.append(self.backbone(torch.cat(x[start:end])))
            start = end
        return self.head(torch.cat(output))


def start_run(args):
    """Seeds, thread count and output folder, as every bench training script starts."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)


def image_folder_loader(args, transform, world=1):
    """The training folder (ImageFolder, RGB) and its shuffled, drop-last loader; with several
    ranks, this rank's share of each batch (DistributedSampler, as main_dino.py)."""
    dataset = datasets.ImageFolder(args.data, transform=transform,
                                   loader=lambda p: Image.open(p).convert("RGB"))
    sampler = None
    if world > 1:
        if args.batch_size % world:
            sys.exit(f"--batch-size {args.batch_size} does not split over {world} ranks")
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=args.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size // world,
                                         shuffle=sampler is None, sampler=sampler,
                                         num_workers=args.workers, drop_last=True,
                                         persistent_workers=args.workers > 0)
    return dataset, loader


def save_backbone(backbone, out, start):
    """Writes OUT/teacher_backbone.safetensors in the official key layout (what `dino knn` reads)."""
    from safetensors.torch import save_file

    state = {k.removeprefix("vit."): v.contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, os.path.join(out, "teacher_backbone.safetensors"))
    print(f"trained in {time.time() - start:.0f} s; wrote {out}/teacher_backbone.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--out-dim", type=int, default=4096)
    ap.add_argument("--head-hidden-dim", type=int, default=512)
    ap.add_argument("--head-bottleneck-dim", type=int, default=128)
    ap.add_argument("--norm-last-layer", type=lambda s: s.lower() == "true", default=True)
    ap.add_argument("--momentum-teacher", type=float, default=0.996)
    ap.add_argument("--warmup-teacher-temp", type=float, default=0.04)
    ap.add_argument("--teacher-temp", type=float, default=0.04)
    ap.add_argument("--warmup-teacher-temp-epochs", type=int, default=0)
    ap.add_argument("--weight-decay", type=float, default=0.04)
    ap.add_argument("--weight-decay-end", type=float, default=0.4)
    ap.add_argument("--clip-grad", type=float, default=3.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--freeze-last-layer", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.0005)
    ap.add_argument("--warmup-epochs", type=int, default=10)
    ap.add_argument("--min-lr", type=float, default=1e-6)
    ap.add_argument("--drop-path-rate", type=float, default=0.1)
    ap.add_argument("--global-crops-scale", type=float, nargs=2, default=(0.4, 1.0))
    ap.add_argument("--local-crops-number", type=int, default=8)
    ap.add_argument("--local-crops-scale", type=float, nargs=2, default=(0.05, 0.4))
    ap.add_argument("--global-crop-size", type=int, default=224)
    ap.add_argument("--local-crop-size", type=int, default=96)
    ap.add_argument("--blur-radius", type=float, nargs=2, default=(0.1, 2.0),
                    help="range of the Gaussian blur radius (official: 0.1 2.0, for 224 px crops)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (TF32 off: strict fp32 like dino-rs)")
    args = ap.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        if args.device == "cuda":
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    rank0 = world == 1 or dist.get_rank() == 0
    start_run(args)
    _, loader = image_folder_loader(args, DataAugmentationDINO(args), world)
    student = MultiCropWrapper(Backbone(args, args.drop_path_rate), DINOHead(
        args.embed_dim, args.out_dim, hidden=args.head_hidden_dim, bottleneck=args.head_bottleneck_dim,
        norm_last_layer=args.norm_last_layer, official_init=True))
    teacher = MultiCropWrapper(Backbone(args, 0.0), DINOHead(
        args.embed_dim, args.out_dim, hidden=args.head_hidden_dim, bottleneck=args.head_bottleneck_dim,
        official_init=True))
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    student, teacher = student.to(dev), teacher.to(dev)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    student_without_ddp = student
    if world > 1:
        student = nn.parallel.DistributedDataParallel(student)
    optimizer = torch.optim.AdamW(get_params_groups(student_without_ddp))
    niter = len(loader)
    lr_schedule = cosine_scheduler(args.lr * args.batch_size / 256.0, args.min_lr, args.epochs, niter,
                                   warmup_epochs=args.warmup_epochs)
    wd_schedule = cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, niter)
    momentum_schedule = cosine_scheduler(args.momentum_teacher, 1, args.epochs, niter)
    dino_loss = (DistributedDINOLoss if world > 1 else DINOLoss)(args.out_dim, args.local_crops_number + 2, args.warmup_teacher_temp,
                         args.teacher_temp, args.warmup_teacher_temp_epochs, args.epochs).to(dev)

    log = open(os.path.join(args.out, "log.txt" if rank0 else os.devnull), "w")
    start = time.time()
    for epoch in range(args.epochs):
        if world > 1:
            loader.sampler.set_epoch(epoch)
        losses, entropies, t0 = [], [], time.time()
        for it_in_epoch, (images, _) in enumerate(loader):
            it = niter * epoch + it_in_epoch
            for i, group in enumerate(optimizer.param_groups):
                group["lr"] = lr_schedule[it]
                if i == 0:
                    group["weight_decay"] = wd_schedule[it]
            images = [im.to(dev, non_blocking=True) for im in images]
            teacher_output = teacher(images[:2])
            student_output = student(images)
            entropies.append(teacher_entropies(teacher_output, dino_loss, epoch))
            loss = dino_loss(student_output, teacher_output, epoch)
            if not math.isfinite(loss.item()):
                sys.exit(f"loss is {loss.item()}, stopping")
            optimizer.zero_grad()
            loss.backward()
            if args.clip_grad:
                clip_gradients(student_without_ddp, args.clip_grad)
            cancel_gradients_last_layer(epoch, student_without_ddp, args.freeze_last_layer)
            optimizer.step()
            ema_update(student_without_ddp, teacher, momentum_schedule[it])
            losses.append(loss.item())
        stats = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                 "teacher_entropy": float(np.mean([e[0] for e in entropies])),
                 "batch_entropy": float(np.mean([e[1] for e in entropies])),
                 "img_per_s": niter * args.batch_size / (time.time() - t0), "world_size": world}
        log.write(json.dumps(stats) + "\n")
        log.flush()
        if rank0:
            print(json.dumps(stats), flush=True)

    if rank0:
        save_backbone(teacher.backbone, args.out, start)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
