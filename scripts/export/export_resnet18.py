#!/usr/bin/env python3
"""Exports torchvision's ResNet-18 (random weights, fixed seed) to ONNX, on demand.

ResNet-18 is ~47 MB as ONNX, too large to commit, so the benchmark and manual tests export it
when needed and cache it (default: .cache/models/resnet18.onnx, git-ignored). Nothing is
downloaded: weights=None, initialised with torch.manual_seed(0), so every export is the same
graph with the same weights. The compute is identical to a trained ResNet-18.

    python scripts/export/export_resnet18.py [--output PATH]

Needs torch and torchvision (scripts/export/requirements.txt).
"""
import argparse
import os

import torch
import torchvision

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(ROOT, ".cache", "models", "resnet18.onnx"))
    args = parser.parse_args()
    if os.path.isfile(args.output):
        print(f"{args.output} exists; delete it to export again")
        return
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    example = torch.randn(1, 3, 224, 224)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    partial = args.output + ".partial"
    torch.onnx.export(
        model,
        (example,),
        partial,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    os.replace(partial, args.output)
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
