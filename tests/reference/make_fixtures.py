#!/usr/bin/env python3
"""Writes the reference fixtures the Rust tests compare against.

The spec is the official DINO code (facebookresearch/dino): its ViT is timm's
VisionTransformer with qkv bias and LayerNorm eps 1e-6, its position embeddings
are interpolated by `interpolate_pos_encoding` (bicubic, scale_factor with the
+0.1 trick), its attention maps and masks come from `visualize_attention.py`.
This script builds small random models with timm, cross-checks them against a
Hugging Face `ViTModel` holding the same weights, saves them in every checkpoint
layout real users have, and writes reference outputs on real photos at sizes
that force position-embedding interpolation.

Run from the repository root (needs torch, torchvision, timm, transformers,
safetensors, scikit-image, pillow, numpy from PyPI):

    python3 tests/reference/make_fixtures.py

Everything lands in tests/fixtures/ and is committed, so CI never needs Python.
"""

import argparse
import json
import math
import os
import shutil
from functools import partial

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from dino_official import DINOHead  # noqa: F401 (re-exported for the other scripts)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- models ----

def make_vit(dim, depth, heads, patch, img=224):
    import timm

    return timm.models.vision_transformer.VisionTransformer(
        img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0,
    ).eval()


def randomize(model, seed):
    """Weights far from init so that attention is peaked and every path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name in ("pos_embed", "cls_token"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                gain = 2.0 if "qkv" in name else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return model


class MultiCropWrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head


class DDPLike(nn.Module):
    """Stands in for DistributedDataParallel: only its `module.` key prefix matters."""

    def __init__(self, module):
        super().__init__()
        self.module = module


# ------------------------------------------------------ official forward ----

def interpolate_pos_encoding(pos_embed, height, width, patch):
    """`VisionTransformer.interpolate_pos_encoding` of the official code."""
    npatch = (height // patch) * (width // patch)
    n = pos_embed.shape[1] - 1
    if npatch == n and height == width:
        return pos_embed
    cls_pos = pos_embed[:, 0]
    patch_pos = pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    h0 = height // patch + 0.1
    w0 = width // patch + 0.1
    side = int(math.sqrt(n))
    patch_pos = F.interpolate(
        patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=(h0 / math.sqrt(n), w0 / math.sqrt(n)),
        mode="bicubic",
    )
    assert int(h0) == patch_pos.shape[-2] and int(w0) == patch_pos.shape[-1]
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((cls_pos.unsqueeze(0), patch_pos), dim=1)


def last_block_attention(blk, x):
    """`Attention.forward`'s softmax probabilities (official code path)."""
    b, n, c = x.shape
    attn = blk.attn
    h = attn.num_heads
    qkv = attn.qkv(blk.norm1(x)).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    return ((q @ k.transpose(-2, -1)) * (c // h) ** -0.5).softmax(dim=-1)


@torch.no_grad()
def reference_forward(model, x, patch):
    """Returns normed CLS, normed patch tokens, per-block normed outputs, last attention."""
    b, _, height, width = x.shape
    t = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    t = torch.cat((model.cls_token.expand(b, -1, -1), t), dim=1)
    t = t + interpolate_pos_encoding(model.pos_embed, height, width, patch)
    layers = []
    attn = None
    for i, blk in enumerate(model.blocks):
        if i == len(model.blocks) - 1:
            attn = last_block_attention(blk, t)
        t = blk(t)
        layers.append(model.norm(t))
    out = layers[-1]
    return out[:, 0], out[:, 1:], layers, attn


def threshold_masks(attn_cls, threshold):
    """visualize_attention.py: keep the smallest set of patches holding `threshold` of the mass."""
    val, idx = torch.sort(attn_cls)
    val = val / torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(attn_cls.shape[0]):
        th[head] = th[head][idx2[head]]
    margin = (cumval - (1 - threshold)).abs().min().item()
    return th, margin


# ------------------------------------------------------------ transforms ----

def load_rgb(path):
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def preprocess(img, resize, patch):
    """The CLI's --resize modes, with torchvision on PIL (the official transforms)."""
    from torchvision import transforms as T

    bicubic = T.InterpolationMode.BICUBIC
    if resize == "eval":
        img = T.CenterCrop(224)(T.Resize(256, interpolation=bicubic)(img))
    elif resize != "none":
        h, w = (int(v) for v in resize.split("x"))
        img = T.Resize((h, w), interpolation=bicubic)(img)
    arr = np.asarray(img)
    # visualize_attention.py crops to a multiple of the patch size (top-left)
    h = arr.shape[0] - arr.shape[0] % patch
    w = arr.shape[1] - arr.shape[1] % patch
    arr = np.ascontiguousarray(arr[:h, :w])
    x = torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0
    x = T.Normalize(MEAN, STD)(x)
    return arr, x.unsqueeze(0)


# ---------------------------------------------------------- checkpoints ----

def to_hf(state, depth):
    """Official/timm key layout -> Hugging Face ViTModel layout."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    for i in range(depth):
        s = f"blocks.{i}."
        h = f"encoder.layer.{i}."
        dim = state[s + "attn.proj.weight"].shape[0]
        for j, name in enumerate(("query", "key", "value")):
            out[h + f"attention.attention.{name}.weight"] = state[s + "attn.qkv.weight"][j * dim:(j + 1) * dim]
            out[h + f"attention.attention.{name}.bias"] = state[s + "attn.qkv.bias"][j * dim:(j + 1) * dim]
        pairs = {
            "attention.output.dense": "attn.proj", "layernorm_before": "norm1",
            "layernorm_after": "norm2", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
        }
        for hk, tk in pairs.items():
            out[h + hk + ".weight"] = state[s + tk + ".weight"]
            out[h + hk + ".bias"] = state[s + tk + ".bias"]
    return {k: v.contiguous().clone() for k, v in out.items()}


@torch.no_grad()
def write_hf_checkpoint(model, cfg, x, path):
    """Writes the published HF layout (as on facebook/dino-vits16) and checks that
    transformers loads it into a ViTModel, an independent implementation, that agrees
    with the official forward at the native size."""
    import tempfile

    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTModel

    hf_cfg = ViTConfig(
        hidden_size=cfg["dim"], num_hidden_layers=cfg["depth"], num_attention_heads=cfg["heads"],
        intermediate_size=4 * cfg["dim"], hidden_act="gelu", layer_norm_eps=1e-6,
        image_size=224, patch_size=cfg["patch"], qkv_bias=True,
    )
    save_file(to_hf(model.state_dict(), cfg["depth"]), path, metadata={"format": "pt"})
    with tempfile.TemporaryDirectory() as tmp:
        hf_cfg.save_pretrained(tmp)
        shutil.copy(path, os.path.join(tmp, "model.safetensors"))
        hf, info = ViTModel.from_pretrained(tmp, add_pooling_layer=False, attn_implementation="eager",
                                            output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    out = hf.eval()(pixel_values=x, output_attentions=True)
    cls, _, _, attn = reference_forward(model, x, cfg["patch"])
    err_cls = (out.last_hidden_state[:, 0] - cls).abs().max().item()
    err_attn = (out.attentions[-1] - attn).abs().max().item()
    assert err_cls < 1e-4 and err_attn < 1e-5, (err_cls, err_attn)
    print(f"  transformers ViTModel agrees: cls {err_cls:.2e}, attention {err_attn:.2e}")


def save_full_checkpoint(teacher_backbone, student_backbone, cfg, path, seed):
    """The dict main_dino.py saves as checkpoint.pth (student wrapped in DDP)."""
    import argparse as ap

    torch.manual_seed(seed)
    out_dim = 64
    teacher = MultiCropWrapper(teacher_backbone, DINOHead(cfg["dim"], out_dim, hidden=64, bottleneck=32))
    student = DDPLike(MultiCropWrapper(student_backbone, DINOHead(cfg["dim"], out_dim, hidden=64, bottleneck=32)))
    # real AdamW state, kept small: only the head's parameters are in this optimizer
    params = [p for p in student.module.head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(2, 3, 224, 224)
    loss = student.module.head(student.module.backbone(x)).pow(2).mean()
    loss.backward()
    optimizer.step()
    args = ap.Namespace(arch="vit_small", patch_size=cfg["patch"], out_dim=out_dim, norm_last_layer=True,
                        momentum_teacher=0.996, epochs=100, lr=0.0005, data_path="/path/to/imagenet")
    return {
        "student": student.state_dict(), "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(), "epoch": 7, "args": args,
        "dino_loss": {"center": torch.zeros(1, out_dim)}, "fp16_scaler": None,
    }


# ----------------------------------------------------------------- main ----

MODELS = {
    # heads = dim / 64: detected from the tensors with no override
    "s16": dict(dim=128, depth=2, heads=2, patch=16, seed=1),
    # patch 8 and 3 heads of 16: needs --heads 3
    "p8": dict(dim=48, depth=2, heads=3, patch=8, seed=2),
}

CASES = [
    # name, model, image, resize, threshold
    ("s16_chelsea_eval", "s16", "chelsea.png", "eval", 0.6),
    ("s16_chelsea_none", "s16", "chelsea.png", "none", 0.6),
    ("s16_coffee_320x240", "s16", "coffee.png", "320x240", 0.5),
    ("p8_coffee_none", "p8", "coffee.png", "none", 0.6),
    ("p8_rocket_eval", "p8", "rocket.jpg", "eval", 0.6),
]

BATCH = ("s16_batch_eval", "s16", ["chelsea.png", "coffee.png", "rocket.jpg"], "eval")


def save_npy(name, arr):
    np.save(os.path.join(FIX, name), arr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    import skimage

    os.makedirs(os.path.join(FIX, "images"), exist_ok=True)
    os.makedirs(os.path.join(FIX, "inputs"), exist_ok=True)
    os.makedirs(os.path.join(FIX, "weights"), exist_ok=True)
    os.makedirs(os.path.join(FIX, "outputs"), exist_ok=True)
    skdata = os.path.join(os.path.dirname(skimage.__file__), "data")
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "camera.png"):
        shutil.copy(os.path.join(skdata, name), os.path.join(FIX, "images", name))
    write_decode_fixtures()
    write_augment_fixtures()

    models = {}
    manifest = {"models": {}, "cases": [], "batch": None}
    for key, cfg in MODELS.items():
        print(f"model {key}: {cfg}")
        torch.manual_seed(cfg["seed"])
        model = randomize(make_vit(cfg["dim"], cfg["depth"], cfg["heads"], cfg["patch"]), cfg["seed"])
        models[key] = model
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        backbone = os.path.join(FIX, "weights", f"{key}_backbone.pth")
        if key == "p8":
            # the legacy (pre-1.6) container some old checkpoints use
            torch.save(state, backbone, _use_new_zipfile_serialization=False)
        else:
            torch.save(state, backbone)
        files = {"backbone_pth": f"weights/{key}_backbone.pth"}
        if key == "s16":
            x = preprocess(load_rgb(os.path.join(FIX, "images", "chelsea.png")), "eval", cfg["patch"])[1]
            write_hf_checkpoint(model, cfg, x, os.path.join(FIX, "weights", "s16_hf.safetensors"))
            files["hf_safetensors"] = "weights/s16_hf.safetensors"
            # the teacher is the model above; the student differs, so picking the wrong one shows
            student = randomize(make_vit(cfg["dim"], cfg["depth"], cfg["heads"], cfg["patch"]), 99)
            ckpt = save_full_checkpoint(model, student, cfg, None, cfg["seed"])
            torch.save(ckpt, os.path.join(FIX, "weights", "s16_full_checkpoint.pth"))
            files["full_checkpoint_pth"] = "weights/s16_full_checkpoint.pth"
            sx = preprocess(load_rgb(os.path.join(FIX, "images", "chelsea.png")), "eval", cfg["patch"])[1]
            save_npy("outputs/s16_student_chelsea_eval_cls.npy", reference_forward(student, sx, 16)[0][0].numpy())
        manifest["models"][key] = {**cfg, "files": files}

    for name, key, image, resize, threshold in CASES:
        cfg = MODELS[key]
        arr, x = preprocess(load_rgb(os.path.join(FIX, "images", image)), resize, cfg["patch"])
        Image.fromarray(arr).save(os.path.join(FIX, "inputs", f"{name}.png"))
        cls, patches, layers, attn = reference_forward(models[key], x, cfg["patch"])
        gh, gw = arr.shape[0] // cfg["patch"], arr.shape[1] // cfg["patch"]
        attn_cls = attn[0, :, 0, 1:]
        masks, margin = threshold_masks(attn_cls, threshold)
        assert margin > 1e-5, f"{name}: a patch sits on the mask threshold ({margin}); pick another case"
        save_npy(f"outputs/{name}_cls.npy", cls[0].numpy())
        save_npy(f"outputs/{name}_attention.npy", attn_cls.reshape(-1, gh, gw).numpy())
        save_npy(f"outputs/{name}_masks.npy", masks.reshape(-1, gh, gw).numpy().astype(np.uint8))
        save_npy(f"outputs/{name}_intermediate_cls.npy", np.stack([l[0, 0].numpy() for l in layers]))
        entry = dict(name=name, model=key, image=image, resize=resize, threshold=threshold,
                     height=arr.shape[0], width=arr.shape[1], grid=[gh, gw], mask_margin=margin)
        if name == "s16_chelsea_none":
            save_npy(f"outputs/{name}_patch_tokens.npy", patches[0].numpy())
            entry["patch_tokens"] = True
        manifest["cases"].append(entry)
        print(f"  case {name}: input {arr.shape[0]}x{arr.shape[1]}, grid {gh}x{gw}, mask margin {margin:.2e}")

    name, key, images, resize = BATCH
    xs = [preprocess(load_rgb(os.path.join(FIX, "images", im)), resize, 16)[1] for im in images]
    feats = reference_forward(models[key], torch.cat(xs), 16)[0].numpy()
    save_npy(f"outputs/{name}_cls.npy", feats)
    manifest["batch"] = dict(name=name, model=key, images=images, resize=resize)

    with open(os.path.join(FIX, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print("fixtures written to", FIX)


def write_decode_fixtures():
    """Real-photo variants in the formats and pixel layouts the decoder must handle."""
    src = Image.open(os.path.join(FIX, "images", "chelsea.png")).convert("RGB").resize((96, 64), Image.BICUBIC)
    d = os.path.join(FIX, "images", "formats")
    os.makedirs(d, exist_ok=True)
    src.save(os.path.join(d, "rgb.png"))
    src.save(os.path.join(d, "rgb.jpg"), quality=92)
    src.save(os.path.join(d, "rgb.webp"), lossless=True)
    src.convert("L").save(os.path.join(d, "grey.png"))
    rgba = src.copy()
    rgba.putalpha(128)
    rgba.save(os.path.join(d, "rgba.png"))
    write_png16(os.path.join(d, "rgb16.png"), np.asarray(src).astype(np.uint16) * 257)
    frames = [src, src.transpose(Image.FLIP_LEFT_RIGHT)]
    frames[0].save(os.path.join(d, "anim.gif"), save_all=True, append_images=frames[1:], duration=100)
    np.save(os.path.join(d, "rgb.npy"), np.asarray(src))


AUGMENT_OPS = [
    # name, torchvision/PIL call on the source image (the ops of DataAugmentationDINO)
    ("brightness_1.3", lambda F, im: F.adjust_brightness(im, 1.3)),
    ("brightness_0.7", lambda F, im: F.adjust_brightness(im, 0.7)),
    ("contrast_1.35", lambda F, im: F.adjust_contrast(im, 1.35)),
    ("contrast_0.65", lambda F, im: F.adjust_contrast(im, 0.65)),
    ("saturation_1.2", lambda F, im: F.adjust_saturation(im, 1.2)),
    ("saturation_0.8", lambda F, im: F.adjust_saturation(im, 0.8)),
    ("hue_0.07", lambda F, im: F.adjust_hue(im, 0.07)),
    ("hue_-0.08", lambda F, im: F.adjust_hue(im, -0.08)),
    ("grayscale", lambda F, im: F.rgb_to_grayscale(im, num_output_channels=3)),
    ("solarize", lambda F, im: __import__("PIL.ImageOps").ImageOps.solarize(im)),
    ("blur_0.7", lambda F, im: im.filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(radius=0.7))),
    ("blur_1.9", lambda F, im: im.filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(radius=1.9))),
    ("flip", lambda F, im: F.hflip(im)),
    ("resized_crop_10_20_50_70_48", lambda F, im: F.resized_crop(
        im, 10, 20, 50, 70, [48, 48], interpolation=__import__("torchvision").transforms.InterpolationMode.BICUBIC)),
]


def write_augment_fixtures():
    """Each augmentation op of DataAugmentationDINO with fixed parameters, on a real photo."""
    from torchvision.transforms import functional as F

    d = os.path.join(FIX, "augment")
    os.makedirs(d, exist_ok=True)
    src = Image.open(os.path.join(FIX, "images", "coffee.png")).convert("RGB").crop((150, 80, 246, 160))
    src.save(os.path.join(d, "source.png"))
    for name, op in AUGMENT_OPS:
        out = op(F, src)
        assert out.mode == "RGB", (name, out.mode)
        out.save(os.path.join(d, f"{name}.png"))


def write_png16(path, rgb16):
    """A 16-bit RGB PNG (Pillow cannot write one): IHDR bit depth 16, colour type 2."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w, _ = rgb16.shape
    raw = b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


if __name__ == "__main__":
    main()
