"""TorchServe's image pre-processing, timed on this machine: the reference for oxserve's.

What `ts/torch_handler/vision_handler.py` + `image_classifier.py` run on every request: PIL opens
the bytes, then torchvision's Resize(256), CenterCrop(224), ToTensor() and Normalize(ImageNet mean
and std). The bench harness (`bench/run.sh`) calls this with the JPEG it sends to the server and
compares the time and the tensor with oxserve's; CI never needs it.

    python torchvision_preprocess.py IMAGE ITERATIONS TENSOR_OUT

Prints one JSON object (median and p90 in ms, versions) and writes the float32 CHW tensor,
little-endian, to TENSOR_OUT. It also times Pillow's decode alone (open + load: libjpeg-turbo at
full size), the floor for any pipeline that must reproduce these pixels.
"""
import io
import json
import sys
import time

import PIL
from PIL import Image, features
import torchvision
from torchvision import transforms


def main():
    path, iterations, tensor_out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    data = open(path, "rb").read()
    pipeline = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )

    def run():
        return pipeline(Image.open(io.BytesIO(data)))

    for _ in range(min(10, iterations)):
        run()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        tensor = run()
        times.append((time.perf_counter() - started) * 1000.0)
    times.sort()
    decode_times = []
    for _ in range(iterations):
        started = time.perf_counter()
        Image.open(io.BytesIO(data)).load()
        decode_times.append((time.perf_counter() - started) * 1000.0)
    decode_times.sort()
    with open(tensor_out, "wb") as out:
        out.write(tensor.contiguous().numpy().astype("<f4").tobytes())
    print(
        json.dumps(
            {
                "iterations": iterations,
                "p50_ms": times[len(times) // 2],
                "p90_ms": times[min(len(times) - 1, len(times) * 9 // 10)],
                "decode_p50_ms": decode_times[len(decode_times) // 2],
                "shape": list(tensor.shape),
                "pillow": PIL.__version__,
                "libjpeg_turbo": features.version("libjpeg_turbo"),
                "torchvision": torchvision.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
