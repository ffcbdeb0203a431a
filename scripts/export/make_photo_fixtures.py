#!/usr/bin/env python3
"""Generate the pre-processing parity fixtures: small photos in every layout a request may carry,
each with what TorchServe's transforms make of it on Pillow's decode.

Writes to tests/fixtures/photos/ (relative to the repository root):

  <name>.jpg|png     made by Pillow from chelsea.png (the committed photo)
  <name>.ref.png     Pillow's decode, `convert("RGB")`, torchvision `Resize(64)` + `CenterCrop(56)`
                     (the 8-bit image that `ToTensor` + `Normalize` turn into the tensor)

Pillow's `Image.open` does not apply EXIF orientation and neither does TorchServe's handler, so the
EXIF-rotated photo's reference is not rotated. A small resize keeps the references a few KB; the
ImageNet sizes (256/224) are covered by chelsea_preprocessed.f32. Reruns with the same Pillow and
torchvision give the same files.

Run from anywhere:
  python scripts/export/make_photo_fixtures.py
"""

import io
import os

import numpy as np
from PIL import Image
from torchvision import transforms

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "photos")
RESIZE, CROP = 64, 56


def exif_rotated(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display.
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=85, exif=exif.tobytes())
    return out.getvalue()


def with_alpha(photo):
    rgba = photo.convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, photo.width, dtype=np.uint8), (photo.height, 1))
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def main():
    os.makedirs(OUT, exist_ok=True)
    chelsea = Image.open(os.path.join(ROOT, "tests", "fixtures", "chelsea.png")).convert("RGB")
    photo = chelsea.resize((120, 80), Image.LANCZOS)
    tall = chelsea.resize((60, 90), Image.LANCZOS)
    cases = {
        "ycc420.jpg": (photo, dict(format="JPEG", quality=85, subsampling=2)),
        "ycc422.jpg": (photo, dict(format="JPEG", quality=85, subsampling=1)),
        "ycc444.jpg": (photo, dict(format="JPEG", quality=85, subsampling=0)),
        "grey.jpg": (photo.convert("L"), dict(format="JPEG", quality=85)),
        "progressive.jpg": (photo, dict(format="JPEG", quality=85, progressive=True)),
        "cmyk.jpg": (photo.convert("CMYK"), dict(format="JPEG", quality=90)),
        "tall420.jpg": (tall, dict(format="JPEG", quality=85, subsampling=2)),
        "alpha.png": (with_alpha(photo), dict(format="PNG")),
        "palette.png": (photo.convert("P", palette=Image.ADAPTIVE, colors=64), dict(format="PNG")),
        "grey8.png": (photo.convert("L"), dict(format="PNG")),
    }
    transform = transforms.Compose([transforms.Resize(RESIZE), transforms.CenterCrop(CROP)])
    files = {}
    for name, (image, options) in cases.items():
        out = io.BytesIO()
        image.save(out, **options)
        files[name] = out.getvalue()
    files["exif_rotated.jpg"] = exif_rotated(photo)
    for name, data in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        # TorchServe's vision handler: Image.open(io.BytesIO(data)), then convert("RGB").
        decoded = Image.open(io.BytesIO(data)).convert("RGB")
        reference = transform(decoded)
        stem = name.rsplit(".", 1)[0]
        reference.save(os.path.join(OUT, stem + ".ref.png"))
        print(f"{name}: {Image.open(io.BytesIO(data)).mode} {decoded.size}, {len(data)} bytes")


if __name__ == "__main__":
    main()
