#!/usr/bin/env python3
"""Train a small MNIST-style CNN on scikit-learn's bundled digits and export it to ONNX.

Outputs (relative to the repository root):
  examples/digits/mnist.onnx        the trained model (raw logits, no softmax)
  examples/digits/digit_<k>.png     one 28x28 grayscale held-out sample per class k
  examples/digits/README.md         description of the above

The network follows the architecture of TorchServe's MNIST example
(two 3x3 convs, max-pool, dropout, two linear layers), but the exported graph
returns raw logits instead of log_softmax.

Nothing is downloaded: the data is sklearn.datasets.load_digits(), which ships
inside scikit-learn.

Run from anywhere:
  python scripts/export/train_digits.py
"""

import os
import random
import sys

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
EPOCHS = 12
BATCH_SIZE = 32
LR = 1e-3
MEAN = 0.1307
STD = 0.3081

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO_ROOT, "examples", "digits")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


class DigitNet(nn.Module):
    """MNIST CNN (same layer layout as TorchServe's MNIST example), returns logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = nn.Dropout(0.25)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(9216, 128)
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, 10)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.pool(x)
        x = self.dropout1(x)
        x = self.flatten(x)
        x = self.relu(self.fc1(x))
        x = self.dropout2(x)
        return self.fc2(x)


def render_28x28(img8: np.ndarray) -> np.ndarray:
    """Render one 8x8 digit (values 0..16) as a 28x28 uint8 image, white ink on black.

    This is exactly the image the server would receive as a grayscale PNG.
    """
    scaled = np.floor(img8.astype(np.float64) * 255.0 / 16.0 + 0.5)
    u8 = np.clip(scaled, 0, 255).astype(np.uint8)
    big = Image.fromarray(u8).resize((28, 28), Image.BILINEAR)
    return np.asarray(big, dtype=np.uint8)


def to_model_input(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N,28,28] -> float32 [N,1,28,28], (x/255 - mean)/std (same as the server)."""
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return torch.from_numpy(x[:, None, :, :].astype(np.float32))


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + 256]) for i in range(0, len(x), 256)])


def main() -> int:
    torch.set_num_threads(1)
    seed_everything(SEED)
    os.makedirs(OUT_DIR, exist_ok=True)

    digits = load_digits()
    images8 = digits.images  # [1797, 8, 8], float, 0..16
    labels = digits.target.astype(np.int64)
    rendered = np.stack([render_28x28(im) for im in images8])  # [1797, 28, 28] uint8

    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        idx, test_size=0.2, random_state=0, stratify=labels
    )
    x_train, y_train = to_model_input(rendered[train_idx]), torch.from_numpy(labels[train_idx])
    x_test, y_test = to_model_input(rendered[test_idx]), torch.from_numpy(labels[test_idx])
    print(f"train: {len(train_idx)} samples, test: {len(test_idx)} samples")

    model = DigitNet()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    gen = torch.Generator().manual_seed(SEED)

    for epoch in range(1, EPOCHS + 1):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for i in range(0, len(perm), BATCH_SIZE):
            b = perm[i : i + BATCH_SIZE]
            opt.zero_grad()
            loss = loss_fn(model(x_train[b]), y_train[b])
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        sched.step()
        acc = (predict(model, x_test).argmax(1) == y_test).float().mean().item()
        print(f"epoch {epoch}: train loss {total / len(perm):.4f}, held-out acc {acc:.4f}")

    model.eval()
    logits = predict(model, x_test)
    pred = logits.argmax(1)
    correct = int((pred == y_test).sum())
    acc = correct / len(y_test)
    print(f"held-out accuracy: {acc:.4f} ({correct}/{len(y_test)})")

    # ---- ONNX export -------------------------------------------------------
    onnx_path = os.path.join(OUT_DIR, "mnist.onnx")
    torch.onnx.export(
        model,
        (x_test[:1],),
        onnx_path,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        do_constant_folding=True,
    )
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes)")

    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(onnx_path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    for i in sess.get_inputs():
        print(f"  input  {i.name}: {i.type} {i.shape}")
    for o in sess.get_outputs():
        print(f"  output {o.name}: {o.type} {o.shape}")
    ort_logits = sess.run(["output"], {"input": x_test.numpy()})[0]
    max_diff = float(np.abs(ort_logits - logits.numpy()).max())
    ort_acc = float((ort_logits.argmax(1) == y_test.numpy()).mean())
    print(f"onnxruntime vs torch max abs diff: {max_diff:.3e} (ort accuracy {ort_acc:.4f})")
    if max_diff >= 1e-4:
        print("ERROR: onnxruntime output differs from torch", file=sys.stderr)
        return 1

    # ---- sample PNGs --------------------------------------------------------
    picked = {}
    for pos, ds_index in enumerate(test_idx):
        label = int(labels[ds_index])
        if label not in picked and int(pred[pos]) == label and int(ort_logits[pos].argmax()) == label:
            picked[label] = (pos, int(ds_index))
    for label in range(10):
        pos, ds_index = picked[label]
        png_path = os.path.join(OUT_DIR, f"digit_{label}.png")
        Image.fromarray(rendered[ds_index]).save(png_path)
        # Round-trip check: the PNG decodes to exactly the pixels the model was evaluated on.
        back = np.asarray(Image.open(png_path).convert("L"))
        assert np.array_equal(back, rendered[ds_index])
        print(
            f"digit_{label}.png <- test position {pos} "
            f"(load_digits index {ds_index}), logits argmax {int(ort_logits[pos].argmax())}"
        )

    write_readme(acc, correct, len(y_test), picked)
    return 0


def write_readme(acc: float, correct: int, total: int, picked: dict) -> None:
    rows = "\n".join(
        f"| `digit_{k}.png` | {k} | {picked[k][1]} |" for k in range(10)
    )
    text = f"""# Digits example (MNIST-style CNN)

`mnist.onnx` is a small convolutional network with the same layer layout as
TorchServe's MNIST example (Conv2d(1,32,3) → ReLU → Conv2d(32,64,3) → ReLU →
MaxPool2d(2) → Dropout → Flatten → Linear(9216,128) → ReLU → Dropout →
Linear(128,10)). It outputs **raw logits** (no log_softmax) for the 10 digit
classes. It was trained from scratch on scikit-learn's bundled `load_digits`
data set (1797 8x8 images; a copy of the test set of the UCI ML hand-written
digits data set), so nothing had to be downloaded. Each 8x8 image (values
0..16) was rendered as a 28x28 grayscale image (scaled to 0..255, upscaled with
PIL bilinear, white ink on black like MNIST), and training used exactly those
pixels. On a stratified 20% held-out split (random_state=0) the model reaches
**{acc * 100:.2f}% accuracy ({correct}/{total})**. ONNX Runtime output was checked
against PyTorch (max abs difference < 1e-4).

- Input: `input`, float32 `[batch, 1, 28, 28]` (dynamic batch).
- Output: `output`, float32 `[batch, 10]` logits.
- Preprocessing: decode as 28x28 grayscale (8-bit), divide by 255, then
  normalize with mean 0.1307 and std 0.3081: `(pixel/255 - 0.1307) / 0.3081`.

The `digit_<k>.png` files are 28x28 grayscale PNGs of held-out samples (not seen
during training) that the model classifies correctly:

| file | label | `load_digits` index |
|------|-------|---------------------|
{rows}

To regenerate everything here (CPU only, well under a minute of training;
needs the packages in `scripts/export/requirements.txt`):

```
python scripts/export/train_digits.py
```
"""
    with open(os.path.join(OUT_DIR, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
