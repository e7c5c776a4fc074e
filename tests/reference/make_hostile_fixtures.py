"""Hostile and broken checkpoints for tests/weights.rs (tests/fixtures/hostile/): files a
reader must refuse with a clear error before allocating what they declare.

    python3 tests/reference/make_hostile_fixtures.py

- zero_stride.pth: the case of the hardening issue: four 40000 x 40000 float32 tensors, each a
  zero-stride view of a one-element storage (154 KB on disk, 6.4 GB each if materialised).
- zero_stride_vit.pth: a ViT layout that is valid key for key and shape for shape (dim 20000,
  one block), every tensor a zero-stride view: ~19 GB declared by a file of a few KB.
- wrong_shape_vit.pth: a tiny, honest ViT whose attention projection has a wrong shape: refused from
  the shapes, before any tensor is read.
- tiny_vit.pth (zip), tiny_vit_legacy.pth (the pre-1.6 pickle format), tiny_checkpoint.pth
  (main_dino.py's nested layout) and tiny_vit.safetensors: a valid ViT of 16 dimensions, the
  seeds of the fuzzing harness (tests/fuzz.rs), small enough to mutate a million times.
"""
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hostile")


def vit(dim, hidden, patch=1, grid=1, make=None):
    make = make or (lambda *shape: torch.zeros(*shape))
    sd = {
        "cls_token": make(1, 1, dim),
        "pos_embed": make(1, grid * grid + 1, dim),
        "patch_embed.proj.weight": make(dim, 3, patch, patch),
        "patch_embed.proj.bias": make(dim),
        "norm.weight": make(dim),
        "norm.bias": make(dim),
    }
    b = "blocks.0."
    for name, shape in [
        ("norm1.weight", (dim,)), ("norm1.bias", (dim,)),
        ("attn.qkv.weight", (3 * dim, dim)), ("attn.qkv.bias", (3 * dim,)),
        ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
        ("norm2.weight", (dim,)), ("norm2.bias", (dim,)),
        ("mlp.fc1.weight", (hidden, dim)), ("mlp.fc1.bias", (hidden,)),
        ("mlp.fc2.weight", (dim, hidden)), ("mlp.fc2.bias", (dim,)),
    ]:
        sd[b + name] = make(*shape)
    return sd


def zero_stride(*shape):
    return torch.zeros(1).expand(*shape)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.save({f"t{i}": zero_stride(40000, 40000) for i in range(4)},
               os.path.join(OUT, "zero_stride.pth"))
    torch.save(vit(20000, 20000, make=zero_stride), os.path.join(OUT, "zero_stride_vit.pth"))
    sd = vit(16, 64, patch=4, grid=2)
    sd["blocks.0.attn.proj.weight"] = torch.zeros(16, 17)
    torch.save(sd, os.path.join(OUT, "wrong_shape_vit.pth"))
    g = torch.Generator().manual_seed(0)
    tiny = vit(16, 64, patch=4, grid=2, make=lambda *shape: torch.randn(*shape, generator=g))
    torch.save(tiny, os.path.join(OUT, "tiny_vit.pth"))
    torch.save(tiny, os.path.join(OUT, "tiny_vit_legacy.pth"), _use_new_zipfile_serialization=False)
    nested = {f"backbone.{k}": v for k, v in tiny.items()}
    torch.save(
        {
            "teacher": nested,
            "student": {f"module.{k}": v for k, v in nested.items()},
            "epoch": 1,
        },
        os.path.join(OUT, "tiny_checkpoint.pth"),
    )
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tiny.items()}, os.path.join(OUT, "tiny_vit.safetensors"))
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)), "bytes")


if __name__ == "__main__":
    main()
