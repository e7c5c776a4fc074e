#!/usr/bin/env python3
"""How well a model's attention masks cover an object: imgaug's quokka photo and its polygon
mask (the imgaug wheel from PyPI), `dino attention` at short side 480 with the 60%-mass masks,
then per head the Jaccard index of the mask against the object (on the patch grid; a patch is
object when the polygon covers more than half of it) and the share of attention mass on the
object (chance = the object's share of the grid).

    python3 bench/quokka_jaccard.py target/release/dino www/assets/default-model.safetensors [MORE...]
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
from PIL import Image, ImageDraw


def quokka(tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "imgaug==0.4.0", "-d", tmp],
                   check=True)
    with zipfile.ZipFile(glob.glob(os.path.join(tmp, "imgaug-*.whl"))[0]) as z:
        z.extract("imgaug/quokka.jpg", tmp)
        ann = json.loads(z.read("imgaug/quokka_annotations.json"))
    return os.path.join(tmp, "imgaug/quokka.jpg"), [(p["x"], p["y"]) for p in ann["polygons"][0]["keypoints"]]


def main():
    dino, models = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        photo, poly = quokka(tmp)
        w, h = Image.open(photo).size
        full = Image.new("L", (w, h), 0)
        ImageDraw.Draw(full).polygon(poly, fill=255)
        s = 480 / min(w, h)
        obj = np.asarray(full.resize((round(w * s), round(h * s)), Image.BILINEAR)) / 255.0
        for m in models:
            out = os.path.join(tmp, "out")
            subprocess.run([dino, "attention", "-w", m, "--resize", "480", "--threshold", "0.6", photo, "-o", out],
                           check=True, capture_output=True)
            masks, att = np.load(f"{out}/masks.npy").astype(bool), np.load(f"{out}/attention.npy")
            heads, gh, gw = masks.shape
            patch = obj.shape[0] // gh  # the prepared image is the resized one cropped to whole patches
            gt = obj[:gh * patch, :gw * patch].reshape(gh, patch, gw, patch).mean((1, 3)) > 0.5
            jac = [(mk & gt).sum() / max((mk | gt).sum(), 1) for mk in masks]
            att = att.reshape(heads, gh, gw)
            mass = (att * gt).sum((1, 2)) / att.sum((1, 2))
            print(f"{os.path.basename(m)}: object = {gt.mean():.2f} of the {gh}x{gw} grid; "
                  f"Jaccard per head {', '.join(f'{j:.3f}' for j in jac)} (best {max(jac):.3f}); "
                  f"attention mass on the object per head {', '.join(f'{x:.2f}' for x in mass)}")


if __name__ == "__main__":
    main()
