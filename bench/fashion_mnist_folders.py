#!/usr/bin/env python3
"""Converts Fashion-MNIST (Debian package `dataset-fashion-mnist`) to image folders in the
ImageFolder layout: OUT/train/<class>/NNNNN.png (60k) and OUT/val/<class>/NNNNN.png (10k).

    sudo apt-get install dataset-fashion-mnist
    python3 bench/fashion_mnist_folders.py /tmp/fashion-mnist [--train-subset N]

Only the standard library, numpy and Pillow are needed.
"""

import argparse
import gzip
import os

import numpy as np
from PIL import Image

SRC = "/usr/share/datasets/fashion-mnist"
CLASSES = ["0_tshirt", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal", "6_shirt",
           "7_sneaker", "8_bag", "9_ankle_boot"]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write(split, images, labels, out, limit=None):
    n = len(images) if limit is None else min(limit, len(images))
    for c in CLASSES:
        os.makedirs(os.path.join(out, split, c), exist_ok=True)
    for i in range(n):
        Image.fromarray(images[i], mode="L").save(os.path.join(out, split, CLASSES[labels[i]], f"{i:05d}.png"))
    print(f"{split}: {n} images")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--train-subset", type=int, default=None, help="also write train_N with the first N images")
    args = ap.parse_args()
    tr_x, tr_y = read_idx(f"{SRC}/train-images-idx3-ubyte.gz"), read_idx(f"{SRC}/train-labels-idx1-ubyte.gz")
    te_x, te_y = read_idx(f"{SRC}/t10k-images-idx3-ubyte.gz"), read_idx(f"{SRC}/t10k-labels-idx1-ubyte.gz")
    write("train", tr_x, tr_y, args.out)
    write("val", te_x, te_y, args.out)
    if args.train_subset:
        write(f"train_{args.train_subset}", tr_x, tr_y, args.out, args.train_subset)


if __name__ == "__main__":
    main()
