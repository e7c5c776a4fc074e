#!/usr/bin/env python3
"""Writes the model of the browser benchmark: a ViT-S/16 (the official DINO architecture:
timm VisionTransformer, qkv bias, LayerNorm eps 1e-6, no classifier, CLS output) with seeded
random weights, as ONNX (for ONNX Runtime Web) and as safetensors in the official layout (for
dino-web), so both engines run the same network on the same input.

    python3 bench/web/make_model.py OUT_DIR
"""
import os
import sys
from functools import partial

import torch
import timm
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "bench/web/model"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
model = timm.models.vision_transformer.VisionTransformer(
    img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True,
    norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=0,
).eval()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "vit_small16.safetensors"))
x = torch.randn(1, 3, 224, 224)
torch.onnx.export(model, (x,), os.path.join(out, "vit_small16.onnx"), input_names=["x"],
                  output_names=["cls"], opset_version=17, dynamo=False)
print(f"wrote {out}/vit_small16.safetensors and {out}/vit_small16.onnx")
# the architecture of the paper's attention figures (ViT-S/8), for bench/web/vits8.mjs
s8 = timm.models.vision_transformer.VisionTransformer(
    img_size=224, patch_size=8, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True,
    norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=0,
).eval()
save_file({k: v.contiguous() for k, v in s8.state_dict().items()}, os.path.join(out, "vit_small8.safetensors"))
print(f"wrote {out}/vit_small8.safetensors")
