#!/usr/bin/env python3
"""Generate the JPEG decoder's references: JPEGs in many layouts, each with
the pixels Pillow (libjpeg-turbo, its default islow IDCT and fancy upsampling) decodes from it.

Writes to tests/fixtures/jpeg/ (relative to the repository root):

  <name>.jpg    made by Pillow from chelsea.png (the committed photo), resized to odd sizes
  <name>.png    Pillow's decode of <name>.jpg (lossless, so the exact pixels TorchServe sees)

Layouts: 4:4:4, 4:2:2 and 4:2:0 chroma at sizes that are not multiples of the MCU, grey, restart
markers every 3 MCUs and every MCU row, an optimised-Huffman file, high-frequency noise at
quality 100 (long codes, large coefficients), and a progressive file (which the fast decoder
leaves to the general one). Nothing is downloaded; reruns with the same Pillow give the same
files.

Run from anywhere:
  python scripts/export/make_jpeg_fixtures.py
"""

import os

import numpy as np
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "jpeg")


def main():
    os.makedirs(OUT, exist_ok=True)
    photo = Image.open(os.path.join(ROOT, "tests", "fixtures", "chelsea.png")).convert("RGB")
    noise = np.random.default_rng(0).integers(0, 256, (29, 43, 3), dtype=np.uint8)
    cases = {
        "ycc444_37x23": (photo.resize((37, 23)), dict(quality=90, subsampling=0)),
        "ycc422_37x23": (photo.resize((37, 23)), dict(quality=90, subsampling=1)),
        "ycc420_37x23": (photo.resize((37, 23)), dict(quality=90, subsampling=2)),
        "ycc420_5x9": (photo.resize((5, 9)), dict(quality=75, subsampling=2)),
        "ycc420_120x80_q50": (photo.resize((120, 80)), dict(quality=50, subsampling=2)),
        "grey_33x17": (photo.convert("L").resize((33, 17)), dict(quality=75)),
        "restart_blocks_64x48": (photo.resize((64, 48)), dict(quality=85, restart_marker_blocks=3)),
        "restart_rows_51x39": (photo.resize((51, 39)), dict(quality=85, subsampling=2, restart_marker_rows=1)),
        "optimised_45x30": (photo.resize((45, 30)), dict(quality=90, optimize=True)),
        "noise444_43x29_q100": (Image.fromarray(noise), dict(quality=100, subsampling=0)),
        "noise420_43x29_q100": (Image.fromarray(noise), dict(quality=100, subsampling=2)),
        "progressive_45x30": (photo.resize((45, 30)), dict(quality=90, progressive=True)),
    }
    for name, (image, options) in cases.items():
        path = os.path.join(OUT, name + ".jpg")
        image.save(path, "JPEG", **options)
        decoded = Image.open(path)
        decoded.load()
        decoded.save(os.path.join(OUT, name + ".png"))
        print(f"{name}: {decoded.mode} {decoded.size}, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
