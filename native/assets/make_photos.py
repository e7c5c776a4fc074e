#!/usr/bin/env python3
"""Builds the photos `dino train` uses when no --data is given (embedded in the binary).

Real photos that install offline: scikit-image's sample data (PyPI `scikit-image`) and the
OpenCV sample images (Debian `opencv-doc`). Each is resized to at most 320 px on its long
side and saved as JPEG (quality 88). Run from the repository root:

    apt-get download opencv-doc && dpkg -x opencv-doc_*.deb /tmp/ocvdoc
    python3 native/assets/make_photos.py /tmp/ocvdoc/usr/share/doc/opencv-doc/examples/data
"""

import os
import sys

import skimage
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "photos")
SKIMAGE = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
OPENCV = ["apple.jpg", "orange.jpg", "fruits.jpg", "butterfly.jpg", "building.jpg", "home.jpg",
          "squirrel_cls.jpg", "HappyFish.jpg", "smarties.png", "aero1.jpg", "leuvenA.jpg",
          "board.jpg", "basketball1.png", "rubberwhale1.png", "starry_night.jpg"]


def main():
    opencv_dir = sys.argv[1]
    sk = os.path.join(os.path.dirname(skimage.__file__), "data")
    os.makedirs(OUT, exist_ok=True)
    sources = [os.path.join(sk, f) for f in SKIMAGE] + [os.path.join(opencv_dir, f) for f in OPENCV]
    for src in sources:
        img = Image.open(src).convert("RGB")
        img.thumbnail((320, 320), Image.BICUBIC)
        name = os.path.splitext(os.path.basename(src))[0].lower() + ".jpg"
        img.save(os.path.join(OUT, name), quality=88)
        print(name, img.size)


if __name__ == "__main__":
    main()
