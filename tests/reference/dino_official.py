"""The pieces of the official `main_dino.py` / `utils.py` that the reference scripts share:
DINOHead, DINOLoss and the cosine schedules. One copy, written from the official code, used
by the fixture generators (tests/reference/) and the learning benchmark (bench/)."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class DINOHead(nn.Module):
    """MLP (`nlayers` Linear layers with GELU) -> L2-normalise -> weight-normalised Linear
    without bias, g fixed to 1 when `norm_last_layer` (the official default).

    `official_init` applies the official trunc_normal(0.02) init to the MLP; the fixtures keep
    PyTorch's default init (their random streams were drawn that way)."""

    def __init__(self, in_dim, out_dim, hidden=2048, bottleneck=256, nlayers=3, norm_last_layer=True,
                 official_init=False, use_bn=False):
        super().__init__()
        bn = [nn.BatchNorm1d(hidden)] if use_bn else []
        layers = [nn.Linear(in_dim, hidden), *bn, nn.GELU()]
        for _ in range(nlayers - 2):
            bn = [nn.BatchNorm1d(hidden)] if use_bn else []
            layers += [nn.Linear(hidden, hidden), *bn, nn.GELU()]
        layers.append(nn.Linear(hidden, bottleneck))
        self.mlp = nn.Sequential(*layers)
        if official_init:
            self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher output of the two global crops
    and the student output of every other crop; the center is an EMA (0.9) of the batch mean."""

    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs,
                 student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp, self.center_momentum, self.ncrops = student_temp, center_momentum, ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
            np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp))

    def forward(self, student_output, teacher_output, epoch):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        temp = self.teacher_temp_schedule[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1).detach().chunk(2)
        total, n = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                total += torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
                n += 1
        total /= n
        with torch.no_grad():
            batch_center = teacher_output.sum(0, keepdim=True) / len(teacher_output)
            self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)
        return total


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """`utils.cosine_scheduler`: linear warm-up, then cosine, one value per iteration."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup_schedule, schedule))


def get_params_groups(model):
    """`utils.get_params_groups`: no weight decay on biases and 1-D tensors."""
    regularized, not_regularized = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (not_regularized if name.endswith(".bias") or len(p.shape) == 1 else regularized).append(p)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


def clip_gradients(model, clip):
    """`utils.clip_gradients`: each gradient tensor to norm `clip`; returns the norms before."""
    norms = []
    for p in model.parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


def cancel_gradients_last_layer(epoch, model, freeze_last_layer):
    """`utils.cancel_gradients_last_layer`."""
    if epoch >= freeze_last_layer:
        return
    for n, p in model.named_parameters():
        if "last_layer" in n:
            p.grad = None


@torch.no_grad()
def ema_update(student, teacher, m):
    """The teacher's EMA of `train_one_epoch`: parameters only (buffers are not averaged)."""
    for param_q, param_k in zip(student.parameters(), teacher.parameters()):
        param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
