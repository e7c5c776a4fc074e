#!/usr/bin/env python3
"""Reference numerics of PAWS training steps, for tests/paws_vs_pytorch.rs.

A tiny Wide ResNet (depth 10, width 1: 64 features) with the official projection head and a
prediction head (so every path of the encoder runs), the PAWS loss with label smoothing,
sharpening, multi-crop targets and me-max, and two full iterations of suncet's paws_train.py
train_step in fp32: the support views and the large unlabelled views through the encoder as
one resolution group, the small crops as another (each group is its own BatchNorm batch),
swapped targets from the projections, backward, LARS-wrapped SGD (biases and BatchNorms
excluded from LARS and weight decay) with the warm-up cosine schedule.

The same for the ImageNet recipe's kind of backbone: suncet's src/resnet.py ResNet with
bottleneck blocks (stem, max pool, BatchNorm after every convolution, strided downsample
shortcuts), narrowed to width_per_group 16 and 2, 1, 1, 1 blocks (512 features) on 32 px
views. ResNet-50 itself (3, 4, 6, 3 blocks) repeats the same blocks; PyTorch's own float32
gradients of a network that deep are 1e-3..1e-2 off its float64 ones (BatchNorm backward
after BatchNorm backward), which would leave the comparison nothing to check.

Writes tests/fixtures/paws/step.safetensors (Wide ResNet) and step_resnet.safetensors
(ResNet): the initial weights (official keys), the inputs,
the labels matrix, and after each step the loss terms, the projections and predictions, raw
gradients of a few tensors, every weight and running statistic and a few momentum buffers,
computed in float64; and in its header, for each of those, how far PyTorch's float32 run is
from the float64 one (the yardstick of the Rust float32 run).
Run from the repository root:

    python3 tests/reference/make_paws_fixtures.py [wide_resnet|resnet|fine_tune|ranks]

ranks.safetensors: two iterations of the Wide ResNet run on two DDP ranks (AllGather of the
supports, AllReduce of the me-max mean, averaged gradients), emulated in one process.

fine_tune.safetensors: two iterations of snn_fine_tune.py's SuNCEt fine-tuning of a Wide ResNet
encoder (BatchNorms in eval mode, SuNCEt loss, SGD inside LARS) in the same form.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paws_official import (  # noqa: E402
    LARS, SGD, WarmupCosineSchedule, init_model, init_opt, init_paws_loss, init_suncet_loss, make_labels_matrix)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "paws")

MODELS = {
    "wide_resnet": dict(
        file="step.safetensors", config=dict(depth=10, widen=1, output_dim=16, use_pred_head=True),
        large=16, small=8,
        grads=["conv1.weight", "layer1.0.conv1.weight", "layer2.0.shortcut.0.weight", "bn1.weight",
               "fc.fc1.weight", "fc.fc3.bias", "fc.bn1.weight", "pred.fc1.weight", "pred.bn2.bias"]),
    # downsample.1 is a BatchNorm whose name has neither 'bn' nor 'bias': the official
    # init_opt leaves it in the LARS / weight-decay group, and so must the Rust run
    "resnet": dict(
        file="step_resnet.safetensors",
        config=dict(model_name="resnet", layers=[2, 1, 1, 1], width_per_group=16, output_dim=16,
                    use_pred_head=True),
        # inputs 11 put two max-pool candidates within float32 rounding of each other at step
        # 1, which sends that window's gradient another way in float32 than in float64
        large=32, small=16, input_seed=12,
        # the projection head's two 512 x 512 matrices (checked by the Wide ResNet fixture)
        # are left out of the per-step weights to keep the fixture small
        omit=["fc.fc1.weight", "fc.fc2.weight"],
        grads=["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
               "layer2.0.downsample.1.weight", "layer4.0.bn3.bias", "fc.fc3.weight", "fc.fc3.bias",
               "pred.fc1.weight"]),
}
CLASSES_PER_BATCH, IMGS_PER_CLASS, SUPERVISED_VIEWS = 3, 2, 2
U_BATCH, MULTICROP = 3, 2
TAU, SHARPEN, SMOOTHING = 0.1, 0.25, 0.1
EPOCHS, IPE, WARMUP = 3, 2, 1
# the official CIFAR-10 rates (0.8, 3.2, 0.032) divided by 40: at those, float32 rounding in
# BatchNorm's backward grows by 1% over two steps on the unscaled BatchNorm biases (PyTorch
# float32 against float64), too much for any comparison; here it stays below 4e-5
START_LR, LR, FINAL_LR, WD = 0.02, 0.08, 0.0008, 1e-4


def state(model):
    """Parameters and running statistics under their official keys (no step counters)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def run(dtype, model):
    """The two iterations in `dtype`: their inputs and everything the test compares."""
    cfg, LARGE, SMALL, GRADS = model["config"], model["large"], model["small"], model["grads"]
    torch.manual_seed(0)
    encoder = init_model(depth=cfg.get("depth", 28), widen=cfg.get("widen", 2), use_pred=cfg["use_pred_head"],
                         output_dim=cfg["output_dim"], model_name=cfg.get("model_name", "wide_resnet"),
                         width_per_group=cfg.get("width_per_group", 64), layers=cfg.get("layers", (3, 4, 6, 3)))
    with torch.no_grad():  # BatchNorm affine parameters away from (1, 0), so they matter
        for m in encoder.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
    init = state(encoder)
    encoder = encoder.to(dtype)
    encoder.train()
    paws = init_paws_loss(multicrop=MULTICROP, tau=TAU, T=SHARPEN, me_max=True)
    labels_matrix = make_labels_matrix(CLASSES_PER_BATCH, IMGS_PER_CLASS, smoothing=SMOOTHING)
    labels = torch.cat([labels_matrix for _ in range(SUPERVISED_VIEWS)])
    encoder, optimizer, scheduler = init_opt(encoder, IPE, START_LR, LR, 0.9, False, WARMUP, EPOCHS,
                                             weight_decay=WD, final_lr=FINAL_LR)
    num_support = SUPERVISED_VIEWS * IMGS_PER_CLASS * CLASSES_PER_BATCH
    inputs, results, steps = {}, {}, []
    g = torch.Generator().manual_seed(model.get("input_seed", 11))
    for step in range(2):
        simgs = [torch.randn(num_support // SUPERVISED_VIEWS, 3, LARGE, LARGE, generator=g)
                 for _ in range(SUPERVISED_VIEWS)]
        uimgs = [torch.randn(U_BATCH, 3, LARGE, LARGE, generator=g) for _ in range(2)]
        uimgs += [torch.randn(U_BATCH, 3, SMALL, SMALL, generator=g) for _ in range(MULTICROP)]
        imgs = simgs + uimgs
        s = f"step{step}."
        for i, x in enumerate(imgs):
            inputs[f"{s}input.{i}"] = x
        imgs = [x.to(dtype) for x in imgs]
        lab = labels.to(dtype)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad()
        h, z = encoder(imgs, return_before_head=True)
        anchor_supports, anchor_views = z[:num_support], z[num_support:]
        target_supports, target_views = h[:num_support].detach(), h[num_support:].detach()
        target_views = torch.cat([target_views[U_BATCH:2 * U_BATCH], target_views[:U_BATCH]], dim=0)
        ploss, me_max = paws(anchor_views=anchor_views, anchor_supports=anchor_supports,
                             anchor_support_labels=lab, target_views=target_views,
                             target_supports=target_supports, target_support_labels=lab)
        loss = ploss + me_max
        loss.backward()
        named = dict(encoder.named_parameters())
        for n in GRADS:
            results[f"{s}grad.{n}"] = named[n].grad.detach().clone()
        optimizer.step()
        scheduler.step()
        results[s + "loss"] = loss.detach().reshape(1)
        results[s + "xent"] = ploss.detach().reshape(1)
        results[s + "me_max"] = me_max.detach().reshape(1)
        results[s + "h"] = h.detach()
        results[s + "z"] = z.detach()
        for k, v in state(encoder).items():
            if k not in model.get("omit", []):
                results[f"{s}weights.{k}"] = v
        for n in ["conv1.weight", "pred.fc2.bias", "fc.bn1.weight"]:
            results[f"{s}momentum.{n}"] = optimizer.state[named[n]]["momentum_buffer"].clone()
        steps.append(dict(lr=lr, loss=loss.item(), xent=ploss.item(), me_max=me_max.item()))
    return init, labels, inputs, results, steps


FT = dict(depth=10, widen=1, output_dim=16, use_pred_head=True, classes_per_batch=3, images_per_class=2,
          supervised_views=2, size=16, temperature=0.1, epochs=3, iterations_per_epoch=2, warmup=1,
          start_lr=0.01, lr=0.04, final_lr=0.001, weight_decay=1e-4)
FT_GRADS = ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.shortcut.0.weight", "bn1.weight", "bn1.bias",
            "fc.fc1.weight", "fc.bn2.weight", "pred.fc1.weight", "pred.bn1.bias"]


def run_fine_tune(dtype):
    """Two iterations of snn_fine_tune.py's train_step: every BatchNorm in eval mode (as its
    init_model sets them), the SuNCEt loss on the support views, SGD inside LARS with the
    warm-up cosine schedule."""
    c = FT
    torch.manual_seed(3)
    encoder = init_model(depth=c["depth"], widen=c["widen"], use_pred=c["use_pred_head"], output_dim=c["output_dim"])
    with torch.no_grad():  # a trained encoder's BatchNorms: affine and statistics away from (1, 0, 0, 1)
        for m in encoder.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
                m.running_mean.add_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.mul_(1 + 0.5 * torch.rand_like(m.running_var))
    init = state(encoder)
    encoder = encoder.to(dtype)
    for m in encoder.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.eval()
    suncet = init_suncet_loss(c["classes_per_batch"], c["images_per_class"] * c["supervised_views"], c["temperature"])
    labels_matrix = make_labels_matrix(c["classes_per_batch"], c["images_per_class"], smoothing=0.0)
    labels = torch.cat([labels_matrix for _ in range(c["supervised_views"])]).to(dtype)
    param_groups = [
        {'params': (p for n, p in encoder.named_parameters() if ('bias' not in n) and ('bn' not in n))},
        {'params': (p for n, p in encoder.named_parameters() if ('bias' in n) or ('bn' in n)),
         'LARS_exclude': True, 'weight_decay': 0}]
    optimizer = SGD(param_groups, momentum=0.9, nesterov=False, weight_decay=c["weight_decay"], lr=c["lr"])
    ipe = c["iterations_per_epoch"]
    scheduler = WarmupCosineSchedule(optimizer, warmup_steps=c["warmup"] * ipe, start_lr=c["start_lr"],
                                     ref_lr=c["lr"], final_lr=c["final_lr"], T_max=c["epochs"] * ipe)
    optimizer = LARS(optimizer, trust_coefficient=0.001)
    n = c["classes_per_batch"] * c["images_per_class"]
    g = torch.Generator().manual_seed(5)
    inputs, results, steps = {}, {}, []
    for step in range(2):
        views = [torch.randn(n, 3, c["size"], c["size"], generator=g) for _ in range(c["supervised_views"])]
        s = f"step{step}."
        inputs[s + "input"] = torch.cat(views)
        imgs = torch.cat(views).to(dtype)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad()
        z = encoder(imgs)
        loss = suncet(z, labels)
        loss.backward()
        named = dict(encoder.named_parameters())
        for name in FT_GRADS:
            results[f"{s}grad.{name}"] = named[name].grad.detach().clone()
        optimizer.step()
        scheduler.step()
        results[s + "loss"] = loss.detach().reshape(1)
        results[s + "z"] = z.detach()
        for k, v in state(encoder).items():
            results[f"{s}weights.{k}"] = v
        steps.append(dict(lr=lr, loss=loss.item()))
    return init, labels, inputs, results, steps


def run_ranks(dtype, world=2):
    """Two iterations of paws_train.py on `world` DDP ranks, emulated in one process: each rank
    runs its own forward (its own BatchNorm batches) on its own unlabelled and support images;
    AllGather of the supports is a concatenation in rank order (its backward, an all-reduce of
    the gradients and the rank's slice, is what one graph over every rank's loss gives);
    AllReduce of the mean sharpened prediction keeps the identity backward of the official
    autograd function (the value is the mean over ranks, the gradient goes to the rank's own);
    the labels matrix is make_labels_matrix(world_size=2, unique_classes=False): its extra
    columns carry the smoothing's off value, as the official one does; DDP averages the
    gradients. Running statistics are not compared (each rank keeps its own)."""
    cfg = MODELS["wide_resnet"]["config"]
    LARGE, SMALL = 16, 8
    torch.manual_seed(0)
    encoder = init_model(depth=cfg["depth"], widen=cfg["widen"], use_pred=cfg["use_pred_head"],
                         output_dim=cfg["output_dim"])
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
    init = state(encoder)
    encoder = encoder.to(dtype)
    encoder.train()
    C, K, V = CLASSES_PER_BATCH, IMGS_PER_CLASS, SUPERVISED_VIEWS
    local = C * K
    off = SMOOTHING / C
    labels_matrix = torch.zeros(local * world, C * world) + off
    for i in range(C):
        labels_matrix[i::C, i] = 1. - SMOOTHING + off
    labels = torch.cat([labels_matrix for _ in range(V)]).to(dtype)
    encoder, optimizer, scheduler = init_opt(encoder, IPE, START_LR, LR, 0.9, False, WARMUP, EPOCHS,
                                             weight_decay=WD, final_lr=FINAL_LR)
    softmax = torch.nn.Softmax(dim=1)

    def sharpen(p):
        sp = p ** (1. / SHARPEN)
        return sp / torch.sum(sp, dim=1, keepdim=True)

    def snn(q, sup, lab):
        return softmax(torch.nn.functional.normalize(q) @ torch.nn.functional.normalize(sup).T / TAU) @ lab

    ns = V * local
    inputs, results, steps = {}, {}, []
    g = torch.Generator().manual_seed(21)
    for step in range(2):
        s = f"step{step}."
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad()
        outs = []
        for r in range(world):
            simgs = [torch.randn(local, 3, LARGE, LARGE, generator=g) for _ in range(V)]
            uimgs = [torch.randn(U_BATCH, 3, LARGE, LARGE, generator=g) for _ in range(2)]
            uimgs += [torch.randn(U_BATCH, 3, SMALL, SMALL, generator=g) for _ in range(MULTICROP)]
            for i, x in enumerate(simgs + uimgs):
                inputs[f"{s}rank{r}.input.{i}"] = x
            h, z = encoder([x.to(dtype) for x in simgs + uimgs], return_before_head=True)
            outs.append((h, z))
        anchor_supports = torch.cat([z[:ns] for _, z in outs])
        target_supports = torch.cat([h[:ns] for h, _ in outs]).detach()
        per_rank, m = [], []
        for h, z in outs:
            tv = h[ns:].detach()
            tv = torch.cat([tv[U_BATCH:2 * U_BATCH], tv[:U_BATCH]], dim=0)
            probs = snn(z[ns:], anchor_supports, labels)
            with torch.no_grad():
                t = sharpen(snn(tv, target_supports, labels))
                mc = 0.5 * (t[:U_BATCH] + t[U_BATCH:])
                t = torch.cat([t, *[mc for _ in range(MULTICROP)]], dim=0)
                t[t < 1e-4] *= 0
            per_rank.append((probs, t))
            m.append(torch.mean(sharpen(probs), dim=0))
        mean_m = sum(x.detach() for x in m) / world
        total, xents, rloss = 0., [], None
        for (probs, t), m_r in zip(per_rank, m):
            xent = torch.mean(torch.sum(torch.log(probs ** (-t)), dim=1))
            avg = m_r + (mean_m - m_r).detach()  # AllReduce: the mean, identity backward
            rl = -torch.sum(torch.log(avg ** (-avg)))
            total = total + xent + rl
            xents.append(xent.detach())
            rloss = rl.detach()
        total.backward()
        named = dict(encoder.named_parameters())
        for p in encoder.parameters():  # DistributedDataParallel: the mean over the ranks
            p.grad /= world
        for n in GRADS_RANKS:
            results[f"{s}grad.{n}"] = named[n].grad.detach().clone()
        optimizer.step()
        scheduler.step()
        xent = sum(xents) / world
        results[s + "xent"] = xent.reshape(1)
        results[s + "me_max"] = rloss.reshape(1)
        results[s + "loss"] = (xent + rloss).reshape(1)
        results[s + "z"] = torch.cat([z for _, z in outs]).detach()
        for k, v in state(encoder).items():
            if "running" not in k:
                results[f"{s}weights.{k}"] = v
        steps.append(dict(lr=lr, loss=(xent + rloss).item()))
    return init, labels, inputs, results, steps


GRADS_RANKS = ["conv1.weight", "layer1.0.conv1.weight", "bn1.weight", "fc.fc1.weight", "fc.bn1.weight",
               "pred.fc1.weight", "pred.bn2.bias"]


def write_ranks():
    save("ranks.safetensors", run_ranks,
         lambda i, st: f"2 ranks, step {i}: lr {st['lr']:.4f} loss {st['loss']:.6f}",
         dict(config=MODELS["wide_resnet"]["config"], world=2, classes_per_batch=CLASSES_PER_BATCH,
              images_per_class=IMGS_PER_CLASS, supervised_views=SUPERVISED_VIEWS, unsupervised_batch=U_BATCH,
              multicrop=MULTICROP, large=16, small=8, tau=TAU, sharpen=SHARPEN, label_smoothing=SMOOTHING,
              epochs=EPOCHS, iterations_per_epoch=IPE, warmup=WARMUP, start_lr=START_LR, lr=LR,
              final_lr=FINAL_LR, weight_decay=WD))


def write_fine_tune():
    save("fine_tune.safetensors", run_fine_tune,
         lambda i, st: f"fine-tune step {i}: lr {st['lr']:.4f} loss {st['loss']:.6f}", dict(FT))


def save(file, run_fn, step_line, meta):
    """Runs `run_fn` in float64 and in float32 and writes OUT/file. The reference is the
    float64 run (stored as float32); the float32 run of the same code gives, per tensor, how far
    PyTorch's own float32 arithmetic is from it: the test holds the Rust float32 run to a small
    multiple of that (BatchNorm's backward subtracts nearly equal sums, so gradients through it
    carry 1e-4-level rounding in any float32 implementation). `meta` gets the steps and those
    errors."""
    init, labels, inputs, truth, steps = run_fn(torch.float64)
    _, _, _, f32, _ = run_fn(torch.float32)
    f32_error = {k: ((f32[k].double() - v).norm() / v.norm().clamp_min(1e-30)).item() for k, v in truth.items()}
    f32_abs = {k: (f32[k].double() - v).abs().max().item() for k, v in truth.items()}
    tensors = {f"init.{k}": v.float() for k, v in init.items()}
    tensors["labels"] = labels.float()
    tensors.update({k: v.float() for k, v in inputs.items()})
    tensors.update({k: v.float() for k, v in truth.items()})
    for i, st in enumerate(steps):
        print(step_line(i, st))
    worst = sorted(f32_error.items(), key=lambda kv: -kv[1])[:3]
    print("PyTorch float32 against float64, worst relative errors:", worst)
    from safetensors.torch import save_file
    meta = dict(meta, steps=steps, f32_error=f32_error, f32_abs_error=f32_abs)
    path = os.path.join(OUT, file)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"reference": json.dumps(meta)})
    print("wrote", path)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in sys.argv[1:] or [*MODELS, "fine_tune", "ranks"]:
        if name == "fine_tune":
            write_fine_tune()
        elif name == "ranks":
            write_ranks()
        else:
            write(MODELS[name])


def write(model):
    save(model["file"], lambda dtype: run(dtype, model),
         lambda i, st: f"step {i}: lr {st['lr']:.4f} loss {st['loss']:.6f} (xent {st['xent']:.6f}, "
                       f"me-max {st['me_max']:.6f})",
         dict(config=model["config"], omitted_weights=model.get("omit", []),
              classes_per_batch=CLASSES_PER_BATCH, images_per_class=IMGS_PER_CLASS,
              supervised_views=SUPERVISED_VIEWS, unsupervised_batch=U_BATCH, multicrop=MULTICROP,
              large=model["large"], small=model["small"], tau=TAU, sharpen=SHARPEN,
              label_smoothing=SMOOTHING, epochs=EPOCHS, iterations_per_epoch=IPE, warmup=WARMUP,
              start_lr=START_LR, lr=LR, final_lr=FINAL_LR, weight_decay=WD))


if __name__ == "__main__":
    main()
