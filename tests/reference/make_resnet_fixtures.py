#!/usr/bin/env python3
"""ResNet checkpoints in the official formats and their features, for tests/resnet_vs_pytorch.rs.

The network is suncet's src/resnet.py ResNet (torchvision's ResNet generalised by
width_per_group; the DINO ResNet-50 is torchvision's resnet50, the same network at width 64),
with bottleneck blocks, narrowed to width_per_group 8 and one block per stage (256 features) so
that the files stay small. Its BatchNorm statistics and affine parameters are drawn away from
(0, 1), so evaluation mode (running statistics) is what is compared.

Writes, under tests/fixtures/:
- weights/resnet_backbone.pth: the flat state dict, as dino_resnet50_pretrain.pth (the
  classifier `fc` replaced by the identity, so no `fc.*` keys);
- weights/resnet_dino_checkpoint.pth: main_dino.py's checkpoint.pth of a ResNet run: the
  student under `module.backbone.` (DDP), the teacher under `backbone.`, the DINO heads, the
  optimiser and `args`; the student's weights differ from the teacher's;
- weights/resnet_paws_checkpoint.pth.tar: suncet's paws_train.py checkpoint: `encoder` (DDP
  `module.` keys, with the projection head `fc.fc1`... and the prediction head `pred.*`)
  beside `opt` (SGD momentum buffers), `epoch`, `loss` and the run's settings;
- outputs/resnet_features.safetensors: the input batch (two 64 x 48 images, normalised) and
  the pooled features in evaluation mode of the teacher (= the backbone file), the student and
  the PAWS encoder's backbone, and the PAWS encoder's output with its heads (`paws_z`, what
  snn_eval.py classifies).

Run from the repository root:

    python3 tests/reference/make_resnet_fixtures.py
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dino_official import DINOHead  # noqa: E402
from paws_official import Bottleneck, ResNet, init_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")
LAYERS, WIDTH = [1, 1, 1, 1], 8


def make_resnet(seed):
    torch.manual_seed(seed)
    net = ResNet(Bottleneck, LAYERS, width_per_group=WIDTH)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(17)
    return net.eval()


def features(net, x):
    with torch.no_grad():
        return net._forward_backbone(x)


class Wrapper(torch.nn.Module):
    """main_dino.py's MultiCropWrapper: `backbone` and `head` (with `backbone.fc` = identity)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head


class DDPLike(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


def main():
    os.makedirs(os.path.join(FIX, "weights"), exist_ok=True)
    os.makedirs(os.path.join(FIX, "outputs"), exist_ok=True)
    teacher, student = make_resnet(1), make_resnet(2)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 64, 48, generator=g)
    out = {"input": x, "teacher": features(teacher, x), "student": features(student, x)}
    dim = out["teacher"].shape[1]

    # dino_resnet50_pretrain.pth: torchvision's state dict without the classifier
    torch.save(teacher.state_dict(), os.path.join(FIX, "weights", "resnet_backbone.pth"))

    # main_dino.py's checkpoint.pth
    t_wrap = Wrapper(teacher, DINOHead(dim, 32, hidden=32, bottleneck=16))
    s_wrap = DDPLike(Wrapper(student, DINOHead(dim, 32, hidden=32, bottleneck=16)))
    opt = torch.optim.SGD(s_wrap.module.head.parameters(), lr=0.1, momentum=0.9)
    s_wrap.module.head(torch.randn(2, dim)).pow(2).mean().backward()
    opt.step()
    args = argparse.Namespace(arch="resnet50", out_dim=32, optimizer="lars", lr=0.3, epochs=800)
    torch.save({"student": s_wrap.state_dict(), "teacher": t_wrap.state_dict(),
                "optimizer": opt.state_dict(), "epoch": 3, "args": args,
                "dino_loss": {"center": torch.zeros(1, 32)}, "fp16_scaler": None},
               os.path.join(FIX, "weights", "resnet_dino_checkpoint.pth"))

    # paws_train.py's checkpoint: the encoder is the teacher's backbone with PAWS heads
    enc = init_model(model_name="resnet", layers=LAYERS, width_per_group=WIDTH, use_pred=True,
                     output_dim=16)
    missing = enc.load_state_dict(teacher.state_dict(), strict=False)
    assert all(k.startswith(("fc.", "pred.")) for k in missing.missing_keys), missing
    enc = DDPLike(enc)
    popt = torch.optim.SGD(enc.parameters(), lr=0.1, momentum=0.9)
    enc.module._forward_head(enc.module._forward_backbone(torch.randn(4, 3, 32, 32))).sum().backward()
    popt.step()
    # the momentum buffers of two tensors are enough to show the optimiser is skipped
    state = popt.state_dict()
    state["state"] = {k: v for k, v in state["state"].items() if k < 2}
    torch.save({"encoder": enc.state_dict(), "opt": state, "epoch": 300, "unlabel_prob": 1.0,
                "loss": 2.5, "s_batch_size": 7, "u_batch_size": 64, "world_size": 64, "lr": 6.4,
                "temperature": 0.1, "amp": None},
               os.path.join(FIX, "weights", "resnet_paws_checkpoint.pth.tar"))
    # what snn_eval.py takes of the PAWS encoder: `encoder(imgs)` in evaluation mode, the
    # projection and prediction heads included (their BatchNorms on running statistics)
    with torch.no_grad():
        out["paws_z"] = enc.module.eval()(x)
    # the PAWS encoder's backbone features (the teacher's after one SGD step)
    fc, enc.module.fc = enc.module.fc, None
    out["paws"] = features(enc.module.eval(), x)
    enc.module.fc = fc
    assert not torch.allclose(out["paws"], out["teacher"])

    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(FIX, "outputs", "resnet_features.safetensors"),
              metadata={"reference": json.dumps(dict(layers=LAYERS, width_per_group=WIDTH, features=dim))})
    print("features", dim, "teacher", out["teacher"][0, :4].tolist())


if __name__ == "__main__":
    main()
