#!/usr/bin/env python3
"""Reference numerics of DINO training steps, for tests/training_vs_pytorch.rs.

A tiny ViT (timm, official architecture) + DINOHead as student and teacher, fixed random crops
(2 global 32 px + 2 local 16 px, so the local crops interpolate the position embeddings), and
two full iterations of `main_dino.py`'s `train_one_epoch`: multi-crop forward, DINOLoss with
a warming-up teacher temperature, backward, per-tensor gradient clipping, the last layer
frozen in epoch 0, AdamW with per-iteration lr and weight decay on the regularised group, the
teacher EMA and the center update. Drop path is 0 (its randomness cannot be shared).

Writes tests/fixtures/train/step.safetensors: the initial weights, the crops, and after each
step the loss, head outputs, raw gradients of a few tensors, all student and teacher weights
and the center; step_bn.safetensors: the same with BatchNorm in the head;
step_bf16.safetensors: the same two iterations under bf16 autocast (mixed precision, the
official `--use_fp16` with bf16) with CUDA autocast's policy; step_bf16_bias_rounded: its first
iteration with the linear layers' bias added after the product is rounded to bf16 (as Burn
computes it). Run from the repository root:

    python3 tests/reference/make_train_fixtures.py
"""

import contextlib
import json
import math
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dino_official import (  # noqa: E402
    DINOHead, DINOLoss, cancel_gradients_last_layer, clip_gradients, cosine_scheduler, ema_update, get_params_groups)
from make_fixtures import interpolate_pos_encoding, make_vit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "train")

CFG = dict(dim=32, depth=2, heads=2, patch=8, img=32, out_dim=64, hidden=48, bottleneck=16)
BATCH = 2
EPOCHS, NITER = 3, 2  # schedules over 3 epochs of 2 iterations; we run epoch 0 it 1 and epoch 1 it 0
LR, MIN_LR, WARMUP_EPOCHS = 0.05, 1e-3, 1
WD, WD_END = 0.04, 0.4
MOMENTUM_TEACHER = 0.9
TEMP_WARMUP, TEMP, TEMP_WARMUP_EPOCHS = 0.04, 0.07, 2
CLIP = 0.05  # small, so that clipping really happens on this tiny model
FREEZE_LAST_LAYER = 1


class Net(nn.Module):
    """MultiCropWrapper(backbone, head) with the official forward."""

    def __init__(self, seed, use_bn=False):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = make_vit(CFG["dim"], CFG["depth"], CFG["heads"], CFG["patch"], img=CFG["img"])
        self.backbone.train()
        with torch.no_grad():
            for p in self.backbone.parameters():
                p.add_(0.05 * torch.randn_like(p))
        self.head = DINOHead(CFG["dim"], CFG["out_dim"], hidden=CFG["hidden"], bottleneck=CFG["bottleneck"],
                             use_bn=use_bn)

    def features(self, x):
        b, _, h, w = x.shape
        m = self.backbone
        t = m.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat((m.cls_token.expand(b, -1, -1), t), dim=1)
        t = t + interpolate_pos_encoding(m.pos_embed, h, w, CFG["patch"])
        for blk in m.blocks:
            t = blk(t)
        return m.norm(t)[:, 0]

    def forward(self, crops):
        sizes = [c.shape[-1] for c in crops]
        out, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and sizes[end] == sizes[start]:
                end += 1
            out.append(self.features(torch.cat(crops[start:end])))
            start = end
        return self.head(torch.cat(out))


class LARS(torch.optim.Optimizer):
    """utils.LARS of the official code (from Barlow Twins)."""

    def __init__(self, params, lr=0, weight_decay=0, momentum=0.9, eta=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim != 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.0, torch.where(
                        update_norm > 0, (g["eta"] * param_norm / update_norm), one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def official_names(state):
    """MultiCropWrapper state dict keys: backbone.* (timm = official), head.mlp.{0,2,4}.*,
    head.last_layer.weight_{g,v}."""
    return {k: v.detach().clone().contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}


def set_schedules(opt, it, lr_schedule, wd_schedule):
    for i, group in enumerate(opt.param_groups):
        group["lr"] = lr_schedule[it]
        if i == 0:
            group["weight_decay"] = wd_schedule[it]


# the raw gradients the fixtures keep (before clipping)
GRAD_KEYS = ["head.last_layer.weight_v", "head.mlp.0.weight", "backbone.blocks.0.attn.qkv.weight",
             "backbone.cls_token", "backbone.pos_embed", "backbone.norm.weight"]


def record_step(tensors, prefix, loss, student_output, teacher_output, grads):
    """A step's loss, head outputs and the raw gradients of GRAD_KEYS under `prefix`."""
    tensors[prefix + "loss"] = loss.detach().reshape(1)
    tensors[prefix + "student_output"] = student_output.detach()
    tensors[prefix + "teacher_output"] = teacher_output.detach()
    for n in GRAD_KEYS:
        tensors[prefix + "grad." + n] = grads[n]


def train_step(student, teacher, opt, loss_fn, crops, epoch, it, schedules, raw_grads=None, amp=None):
    """One iteration of `train_one_epoch`; returns the loss, both outputs and the gradient norms
    before clipping. `raw_grads`, a dict, receives the gradients before clipping. `amp`: the
    autocast dtype of the forward passes (the outputs widened to f32 for the loss, as CUDA
    autocast computes softmax in f32)."""
    lr_schedule, wd_schedule, momentum_schedule = schedules
    set_schedules(opt, it, lr_schedule, wd_schedule)
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        t_out = teacher(crops[:2])
        s_out = student(crops)
    t_out, s_out = t_out.float(), s_out.float()
    loss = loss_fn(s_out, t_out, epoch)
    opt.zero_grad()
    loss.backward()
    if raw_grads is not None:
        raw_grads.update({n: p.grad.detach().clone() for n, p in student.named_parameters()
                          if p.grad is not None})
    norms = clip_gradients(student, CLIP)
    cancel_gradients_last_layer(epoch, student, FREEZE_LAST_LAYER)
    opt.step()
    ema_update(student, teacher, momentum_schedule[it])
    return loss, s_out, t_out, norms


def main():
    os.makedirs(OUT, exist_ok=True)
    student = Net(seed=3)
    teacher = Net(seed=4)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    teacher.eval()  # no dropout anywhere; the official teacher has no drop path either

    optimizer = torch.optim.AdamW(get_params_groups(student))
    # LR is the already batch-scaled peak (lr x batch / 256 in main_dino.py)
    lr_schedule = cosine_scheduler(LR, MIN_LR, EPOCHS, NITER, warmup_epochs=WARMUP_EPOCHS)
    wd_schedule = cosine_scheduler(WD, WD_END, EPOCHS, NITER)
    momentum_schedule = cosine_scheduler(MOMENTUM_TEACHER, 1, EPOCHS, NITER)
    dino_loss = DINOLoss(CFG["out_dim"], 4, TEMP_WARMUP, TEMP, TEMP_WARMUP_EPOCHS, EPOCHS)

    g = torch.Generator().manual_seed(7)
    crops = [torch.randn(BATCH, 3, 32, 32, generator=g), torch.randn(BATCH, 3, 32, 32, generator=g),
             torch.randn(BATCH, 3, 16, 16, generator=g), torch.randn(BATCH, 3, 16, 16, generator=g)]

    tensors = {}
    for k, v in official_names(student.state_dict()).items():
        tensors[f"init.{k}"] = v
    for i, c in enumerate(crops):
        tensors[f"crop.{i}"] = c
    steps = []
    for step, (epoch, it_in_epoch) in enumerate([(0, 1), (1, 0)]):
        it = epoch * NITER + it_in_epoch
        grads = {}
        loss, student_output, teacher_output, norms = train_step(
            student, teacher, optimizer, dino_loss, crops, epoch, it,
            (lr_schedule, wd_schedule, momentum_schedule), raw_grads=grads)
        s = f"step{step}."
        record_step(tensors, s, loss, student_output, teacher_output, grads)
        for k, v in official_names(student.state_dict()).items():
            tensors[s + "student." + k] = v
        for k, v in official_names(teacher.state_dict()).items():
            tensors[s + "teacher." + k] = v
        tensors[s + "center"] = dino_loss.center.detach().clone()
        clipped = sum(1 for nrm in norms if CLIP / (nrm + 1e-6) < 1)
        steps.append(dict(epoch=epoch, iteration=it, lr=float(lr_schedule[it]), wd=float(wd_schedule[it]),
                          momentum=float(momentum_schedule[it]), teacher_temp=float(dino_loss.teacher_temp_schedule[epoch]),
                          loss=loss.item(), clipped_tensors=clipped))
        print(f"step {step}: loss {loss.item():.6f}, {clipped} of {len(norms)} gradients clipped")

    # the same two iterations with SGD (momentum 0.9) and LARS: final student weights
    for name in ("sgd", "lars"):
        st = Net(seed=3)
        st.load_state_dict({k[len("init."):]: v for k, v in tensors.items() if k.startswith("init.")})
        te = Net(seed=4)
        te.load_state_dict(st.state_dict())
        for p in te.parameters():
            p.requires_grad = False
        groups = get_params_groups(st)
        opt = torch.optim.SGD(groups, lr=0, momentum=0.9) if name == "sgd" else LARS(groups)
        loss_fn = DINOLoss(CFG["out_dim"], 4, TEMP_WARMUP, TEMP, TEMP_WARMUP_EPOCHS, EPOCHS)
        for step, (epoch, it_in_epoch) in enumerate([(0, 1), (1, 0)]):
            loss, _, _, _ = train_step(st, te, opt, loss_fn, crops, epoch, epoch * NITER + it_in_epoch,
                                    (lr_schedule, wd_schedule, momentum_schedule))
            tensors[f"{name}.step{step}.loss"] = loss.detach().reshape(1)
        for k, v in official_names(st.state_dict()).items():
            tensors[f"{name}.student.{k}"] = v
        print(f"{name}: final loss {loss.item():.6f}")

    from safetensors.torch import save_file

    meta = dict(config=CFG, batch=BATCH, epochs=EPOCHS, niter=NITER, lr=LR, min_lr=MIN_LR,
                warmup_epochs=WARMUP_EPOCHS, wd=WD, wd_end=WD_END, momentum_teacher=MOMENTUM_TEACHER,
                warmup_teacher_temp=TEMP_WARMUP, teacher_temp=TEMP, warmup_teacher_temp_epochs=TEMP_WARMUP_EPOCHS,
                clip_grad=CLIP, freeze_last_layer=FREEZE_LAST_LAYER, steps=steps,
                lr_schedule=lr_schedule.tolist(), wd_schedule=wd_schedule.tolist(),
                momentum_schedule=momentum_schedule.tolist(),
                teacher_temp_schedule=dino_loss.teacher_temp_schedule.tolist())
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "step.safetensors"),
              metadata={"reference": json.dumps(meta)})
    print("wrote", os.path.join(OUT, "step.safetensors"))
    bn_head_steps(crops, lr_schedule, wd_schedule, momentum_schedule, meta)
    init = {k[len("init."):]: v for k, v in tensors.items() if k.startswith("init.")}
    bf16_steps(init, crops, lr_schedule, wd_schedule, momentum_schedule, meta)
    bf16_steps(init, crops, lr_schedule, wd_schedule, momentum_schedule, meta, bias_rounded=True)


def official_attention_f32_softmax(self, x, attn_mask=None, is_causal=False):
    """The official `Attention.forward` (scores, softmax, product; timm's fused kernel keeps
    the probabilities in f32 and would not round them), with the softmax in f32 as CUDA
    autocast computes it (CPU autocast would keep it in bf16)."""
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)).float() * self.scale
    attn = attn.softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


def with_cuda_autocast_policy(net):
    """Where CPU autocast differs from the CUDA autocast the official code trains under: the
    attention softmax and the head's L2 norm in f32 (CUDA autocast's f32 ops)."""
    for blk in net.backbone.blocks:
        blk.attn.forward = types.MethodType(official_attention_f32_softmax, blk.attn)
    head = net.head
    head.forward = lambda x: head.last_layer(F.normalize(head.mlp(x).float(), dim=-1, p=2))
    return net


@contextlib.contextmanager
def bias_added_after_rounding():
    """Autocast's linear layers as Burn computes them in bf16: the product rounded to bf16,
    then the bf16 bias added (a second rounding), where PyTorch adds the bias to the f32
    accumulator and rounds once. Everything else unchanged."""
    orig = nn.Linear.forward

    def forward(self, x):
        if not torch.is_autocast_enabled("cpu"):
            return orig(self, x)
        with torch.autocast("cpu", enabled=False):
            out = x.bfloat16() @ self.weight.bfloat16().t()
            return out if self.bias is None else out + self.bias.bfloat16()

    nn.Linear.forward = forward
    try:
        yield
    finally:
        nn.Linear.forward = orig


def bf16_steps(init, crops, lr_schedule, wd_schedule, momentum_schedule, meta, bias_rounded=False):
    """The two AdamW iterations of step.safetensors (same initial weights and crops) under
    bf16 autocast: the products (linear layers, patch convolution, attention) in bf16 with f32
    accumulation, their results rounded to bf16; LayerNorm, softmax, GELU's input, the L2 norm
    and the loss in f32; f32 master weights and AdamW state. Writes train/step_bf16.safetensors,
    or with `bias_rounded` the first iteration under [`bias_added_after_rounding`] to
    train/step_bf16_bias_rounded.safetensors."""
    from safetensors.torch import save_file

    student, teacher = Net(seed=3), Net(seed=4)
    student.load_state_dict(init)
    teacher.load_state_dict(init)
    for p in teacher.parameters():
        p.requires_grad = False
    with_cuda_autocast_policy(student)
    with_cuda_autocast_policy(teacher)
    opt = torch.optim.AdamW(get_params_groups(student))
    loss_fn = DINOLoss(CFG["out_dim"], 4, TEMP_WARMUP, TEMP, TEMP_WARMUP_EPOCHS, EPOCHS)
    tensors = {}
    steps = [(0, 1)] if bias_rounded else [(0, 1), (1, 0)]
    for step, (epoch, it_in_epoch) in enumerate(steps):
        grads = {}
        with bias_added_after_rounding() if bias_rounded else contextlib.nullcontext():
            loss, s_out, t_out, _ = train_step(student, teacher, opt, loss_fn, crops, epoch,
                                               epoch * NITER + it_in_epoch,
                                               (lr_schedule, wd_schedule, momentum_schedule),
                                               raw_grads=grads, amp=torch.bfloat16)
        s = f"step{step}."
        record_step(tensors, s, loss, s_out, t_out, grads)
        tensors[s + "center"] = loss_fn.center.detach().clone()
        print(f"bf16 step {step}{' (bias after rounding)' if bias_rounded else ''}: loss {loss.item():.6f}")
    if not bias_rounded:
        for who, net in (("student", student), ("teacher", teacher)):
            for k, v in official_names(net.state_dict()).items():
                tensors[f"{who}.{k}"] = v
    name = "step_bf16_bias_rounded" if bias_rounded else "step_bf16"
    path = os.path.join(OUT, name + ".safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              metadata={"reference": json.dumps(dict(meta, autocast="bfloat16", torch=torch.__version__))})
    print("wrote", path)


def bn_head_steps(crops, lr_schedule, wd_schedule, momentum_schedule, meta):
    """`use_bn_in_head`: the same two AdamW iterations with BatchNorm in both heads. As in
    main_dino.py the teacher stays in train mode (batch statistics; its running statistics move
    with its own forward passes and are not averaged). Writes train/step_bn.safetensors."""
    from safetensors.torch import save_file

    student = Net(seed=5, use_bn=True)
    teacher = Net(seed=6, use_bn=True)
    with torch.no_grad():  # BatchNorm affine parameters away from (1, 0), so they matter
        for m in student.head.mlp:
            if isinstance(m, nn.BatchNorm1d):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    opt = torch.optim.AdamW(get_params_groups(student))
    loss_fn = DINOLoss(CFG["out_dim"], 4, TEMP_WARMUP, TEMP, TEMP_WARMUP_EPOCHS, EPOCHS)
    tensors = {f"init.{k}": v for k, v in official_names(student.state_dict()).items()}
    tensors.update({f"crop.{i}": c for i, c in enumerate(crops)})
    for step, (epoch, it_in_epoch) in enumerate([(0, 1), (1, 0)]):
        loss, s_out, t_out, _ = train_step(student, teacher, opt, loss_fn, crops, epoch,
                                           epoch * NITER + it_in_epoch,
                                           (lr_schedule, wd_schedule, momentum_schedule))
        s = f"step{step}."
        tensors[s + "loss"] = loss.detach().reshape(1)
        tensors[s + "teacher_output"] = t_out.detach()
        tensors[s + "student_output"] = s_out.detach()
        for who, net in (("student", student), ("teacher", teacher)):
            for k, v in official_names(net.state_dict()).items():
                tensors[f"{s}{who}.{k}"] = v
        tensors[s + "center"] = loss_fn.center.detach().clone()
        print(f"bn head step {step}: loss {loss.item():.6f}")
    path = os.path.join(OUT, "step_bn.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"reference": json.dumps(meta)})
    print("wrote", path)


if __name__ == "__main__":
    main()
