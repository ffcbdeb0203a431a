#!/usr/bin/env python3
"""Generate the small ONNX models and golden data used by the Rust tests.

Everything is written to tests/fixtures/ (relative to the repository root).
Nothing is downloaded: the photo is skimage.data.chelsea(), which ships inside
scikit-image. Seeds are fixed, so reruns reproduce the same weights.

Run from anywhere:
  python scripts/export/make_fixtures.py
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper
from PIL import Image

OPSET = 17
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(REPO_ROOT, "tests", "fixtures")


def path(name: str) -> str:
    return os.path.join(FIX, name)


def ort_session(p: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])


def describe(p: str) -> ort.InferenceSession:
    """Load in onnxruntime and print the I/O signature."""
    sess = ort_session(p)
    print(f"{os.path.basename(p)} ({os.path.getsize(p)} bytes)")
    for i in sess.get_inputs():
        print(f"  input  {i.name}: {i.type} {i.shape}")
    for o in sess.get_outputs():
        print(f"  output {o.name}: {o.type} {o.shape}")
    return sess


def export(model, args, name, input_names, output_names, dynamic_axes):
    model.eval()
    p = path(name)
    torch.onnx.export(
        model,
        args,
        p,
        dynamo=False,
        opset_version=OPSET,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(p))
    return p


def check_close(sess, feeds, torch_out, name, tol=1e-4):
    outs = sess.run(None, feeds)
    if not isinstance(torch_out, (list, tuple)):
        torch_out = [torch_out]
    for o, t in zip(outs, torch_out):
        t = t.detach().numpy()
        assert o.shape == t.shape, (name, o.shape, t.shape)
        if np.issubdtype(t.dtype, np.integer):
            assert np.array_equal(o, t), name
        else:
            d = float(np.abs(o - t).max())
            assert d < tol, (name, d)
    print(f"  onnxruntime matches torch")


# --------------------------------------------------------------------------
# a/b. tiny MLP
# --------------------------------------------------------------------------
def make_tiny_mlp():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()

    x = torch.randn(2, 4)
    p = export(mlp, (x,), "tiny_mlp.onnx", ["input"], ["output"],
               {"input": {0: "batch"}, "output": {0: "batch"}})
    sess = describe(p)
    x5 = torch.randn(5, 4)
    check_close(sess, {"input": x5.numpy()}, mlp(x5), "tiny_mlp")

    x1 = torch.randn(1, 4)
    p = export(mlp, (x1,), "tiny_mlp_fixed.onnx", ["input"], ["output"], None)
    sess = describe(p)
    check_close(sess, {"input": x1.numpy()}, mlp(x1), "tiny_mlp_fixed")


# --------------------------------------------------------------------------
# c. two inputs / two outputs with different dtypes
# --------------------------------------------------------------------------
class TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor):
        return a + b.float(), torch.argmax(a, dim=1)


def make_two_inputs():
    torch.manual_seed(0)
    m = TwoInputs()
    a = torch.randn(2, 3)
    b = torch.randint(-5, 5, (2, 3), dtype=torch.int64)
    p = export(m, (a, b), "two_inputs.onnx", ["a", "b"], ["sum", "argmax"],
               {"a": {0: "batch"}, "b": {0: "batch"}, "sum": {0: "batch"}, "argmax": {0: "batch"}})
    sess = describe(p)
    a4 = torch.randn(4, 3)
    b4 = torch.randint(-5, 5, (4, 3), dtype=torch.int64)
    check_close(sess, {"a": a4.numpy(), "b": b4.numpy()}, m(a4, b4), "two_inputs")


# --------------------------------------------------------------------------
# d. tiny ResNet
# --------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 7, 2, 3, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        # One BasicBlock per stage keeps the file small (~0.3 MB).
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def randomize_bn(model: nn.Module) -> None:
    """Give every BatchNorm non-trivial affine params and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n) * 0.1)
                m.running_mean.copy_(torch.randn(n) * 0.2)
                m.running_var.copy_(torch.rand(n) * 1.0 + 0.5)


def make_tiny_resnet() -> str:
    torch.manual_seed(0)
    m = TinyResNet(10)
    randomize_bn(m)
    m.eval()
    x = torch.randn(1, 3, 224, 224)
    p = export(m, (x,), "tiny_resnet.onnx", ["input"], ["output"],
               {"input": {0: "batch"}, "output": {0: "batch"}})
    sess = describe(p)
    x2 = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        check_close(sess, {"input": x2.numpy()}, m(x2), "tiny_resnet")
    return p


# --------------------------------------------------------------------------
# e. tiny segmenter (output named "out", like torchvision's dict key)
# --------------------------------------------------------------------------
class TinySegmenter(nn.Module):
    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        # Spatial size is fixed at 224x224 (only the batch axis is dynamic).
        y = self.classifier(self.body(x))
        return F.interpolate(y, size=(224, 224), mode="bilinear", align_corners=False)


def make_tiny_segmenter():
    torch.manual_seed(0)
    m = TinySegmenter(4).eval()
    x = torch.randn(1, 3, 224, 224)
    p = export(m, (x,), "tiny_segmenter.onnx", ["input"], ["out"],
               {"input": {0: "batch"}, "out": {0: "batch"}})
    # The TorchScript exporter cannot infer Resize's output dims through the
    # dynamic batch axis and names them 'Resizeout_dim_*'. Declare the real
    # output shape [batch, 4, 224, 224] explicitly.
    mp = onnx.load(p)
    dims = mp.graph.output[0].type.tensor_type.shape.dim
    for d, v in zip(dims, ["batch", 4, 224, 224]):
        d.Clear()
        if isinstance(v, str):
            d.dim_param = v
        else:
            d.dim_value = v
    onnx.checker.check_model(mp, full_check=True)
    onnx.save(mp, p)
    sess = describe(p)
    x2 = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        check_close(sess, {"input": x2.numpy()}, m(x2), "tiny_segmenter")


# --------------------------------------------------------------------------
# f. model with an unknown operator
# --------------------------------------------------------------------------
def make_invalid_op():
    node = helper.make_node("NoSuchOp", ["input"], ["output"], name="bogus")
    graph = helper.make_graph(
        [node],
        "invalid_op",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="oxserve-fixtures"
    )
    model.ir_version = 8
    p = path("invalid_op.onnx")
    onnx.save(model, p)
    # The protobuf itself round-trips fine ...
    onnx.load(p)
    # ... but ONNX Runtime must refuse to build a session.
    try:
        ort_session(p)
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"invalid_op.onnx ({os.path.getsize(p)} bytes)")
        print(f"  onnxruntime refused it as expected: {type(e).__name__}: {msg}")
    else:
        raise AssertionError("onnxruntime unexpectedly accepted invalid_op.onnx")


# --------------------------------------------------------------------------
# g. preprocessing golden data (TorchServe image_classifier transforms)
# --------------------------------------------------------------------------
def torchserve_image_transform():
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])


def make_chelsea(resnet_path: str):
    from skimage import data

    arr = data.chelsea()  # uint8 [300, 451, 3]
    assert arr.dtype == np.uint8 and arr.shape == (300, 451, 3), arr.shape
    img = Image.fromarray(arr)
    jpg, png = path("chelsea.jpg"), path("chelsea.png")
    img.save(jpg, format="JPEG", quality=90)
    img.save(png, format="PNG", optimize=True)

    tf = torchserve_image_transform()
    for src, dst in [(jpg, "chelsea_preprocessed.f32"), (png, "chelsea_png_preprocessed.f32")]:
        with Image.open(src) as im:
            im = im.convert("RGB")
            t = tf(im)
        assert t.shape == (3, 224, 224) and t.dtype == torch.float32
        t.numpy().astype("<f4").tofile(path(dst))
        print(f"{dst}: from {os.path.basename(src)} {im.size[0]}x{im.size[1]} "
              f"-> [3,224,224] float32, mean {t.mean().item():.6f}, "
              f"min {t.min().item():.4f}, max {t.max().item():.4f}")

    x = np.fromfile(path("chelsea_preprocessed.f32"), dtype="<f4").reshape(1, 3, 224, 224)
    logits = ort_session(resnet_path).run(["output"], {"input": x})[0][0]
    with open(path("chelsea_tiny_resnet_logits.json"), "w") as f:
        json.dump([float(v) for v in logits], f, indent=1)
        f.write("\n")
    print(f"chelsea_tiny_resnet_logits.json: argmax {int(logits.argmax())}, "
          f"{[round(float(v), 4) for v in logits]}")


def main() -> int:
    torch.set_num_threads(1)
    os.makedirs(FIX, exist_ok=True)
    make_tiny_mlp()
    make_two_inputs()
    resnet = make_tiny_resnet()
    make_tiny_segmenter()
    make_invalid_op()
    make_chelsea(resnet)
    total = sum(os.path.getsize(path(f)) for f in os.listdir(FIX))
    print(f"total size of tests/fixtures: {total} bytes")
    assert os.path.getsize(path("tiny_resnet.onnx")) < 2 * 1024 * 1024
    assert os.path.getsize(path("tiny_segmenter.onnx")) < 1024 * 1024
    assert total < 3 * 1024 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
