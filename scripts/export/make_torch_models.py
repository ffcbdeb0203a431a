#!/usr/bin/env python3
"""Makes PyTorch models as TorchServe users have them (random seeded weights, nothing downloaded).

    make_torch_models.py small OUT              tiny models for the conversion tests
    make_torch_models.py densenet161 OUT        the densenet161 tutorial's state_dict + labels
    make_torch_models.py fastrcnn OUT           the fast-rcnn tutorial's state_dict + labels
    make_torch_models.py answer KIND MODEL_PY WEIGHTS LABELS IMAGE
                                                PyTorch's eager answer with TorchServe's
                                                pre- and post-processing, as JSON on stdout

`small` writes to OUT: tiny_densenet/ (model.py subclassing torchvision's DenseNet as the
densenet161 example does, tiny_densenet.pth, index_to_name.json), tiny_densenet.pt (the same
model as TorchScript) and tiny_densenet.mar, an archive in torch-model-archiver's layout (files
at the root, MAR-INF/MANIFEST.json, a model-config.yaml). densenet161 and fastrcnn use the model
files in examples/torchserve/, with torchvision's architectures and torch.manual_seed(0) weights
saved as state_dicts under the file names the tutorials download. Labels come from torchvision's
weight metadata (shipped in its code, no download).

Needs torch and torchvision (scripts/export/requirements.txt); Pillow for `answer`.
"""
import importlib.util
import inspect
import json
import os
import sys
import zipfile

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

TINY_MODEL = '''from torchvision.models.densenet import DenseNet


class ImageClassifier(DenseNet):
    """A small DenseNet, built as TorchServe's densenet161 example builds its model."""

    def __init__(self):
        super().__init__(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)
'''

TINY_LABELS = {str(i): ["n0000000" + str(i), name] for i, name in enumerate(
    ["tabby", "tiger_cat", "Egyptian_cat", "lynx", "plastic_bag",
     "tench", "goldfish", "great_white_shark", "tiger_shark", "hammerhead"])}


def load_class(model_py):
    """The single class the model file defines, as TorchServe finds it."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(model_py)))
    name = os.path.splitext(os.path.basename(model_py))[0]
    spec = importlib.util.spec_from_file_location(name, model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if c.__module__ == module.__name__]
    assert len(classes) == 1, classes
    return classes[0]


def seeded(cls):
    torch.manual_seed(0)
    return cls().eval()


def write_json(path, value):
    with open(path, "w") as out:
        json.dump(value, out, indent=1)
        out.write("\n")


def torchserve_manifest(name, serialized, handler, model_file=None, config_file=None):
    """MAR-INF/MANIFEST.json as torch-model-archiver 0.12 writes it."""
    model = {"modelName": name, "serializedFile": serialized, "handler": handler}
    if model_file:
        model["modelFile"] = model_file
    model["modelVersion"] = "1.0"
    if config_file:
        model["configFile"] = config_file
    return {"createdOn": "07/12/2026 12:00:00", "runtime": "python", "model": model,
            "archiverVersion": "0.12.0"}


def small(out):
    folder = os.path.join(out, "tiny_densenet")
    os.makedirs(folder, exist_ok=True)
    model_py = os.path.join(folder, "model.py")
    with open(model_py, "w") as f:
        f.write(TINY_MODEL)
    model = seeded(load_class(model_py))
    with torch.no_grad():
        # Spread the classes apart so the top 5 do not hinge on rounding.
        model.classifier.weight.mul_(8.0)
        model.classifier.bias.copy_(torch.linspace(-1.0, 1.0, 10))
    weights = os.path.join(folder, "tiny_densenet.pth")
    torch.save(model.state_dict(), weights)
    write_json(os.path.join(folder, "index_to_name.json"), TINY_LABELS)
    torch.jit.trace(model, torch.rand(1, 3, 224, 224)).save(os.path.join(out, "tiny_densenet.pt"))
    config = "minWorkers: 1\nmaxWorkers: 1\nbatchSize: 2\nmaxBatchDelay: 20\n"
    manifest = torchserve_manifest("tiny_densenet", "tiny_densenet.pth", "image_classifier",
                                   "model.py", "model-config.yaml")
    with zipfile.ZipFile(os.path.join(out, "tiny_densenet.mar"), "w",
                         zipfile.ZIP_DEFLATED) as mar:
        mar.write(model_py, "model.py")
        mar.write(weights, "tiny_densenet.pth")
        mar.write(os.path.join(folder, "index_to_name.json"), "index_to_name.json")
        mar.writestr("model-config.yaml", config)
        mar.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest, indent=2))
    print(f"wrote tiny models to {out}")


def imagenet_labels():
    from torchvision.models import DenseNet161_Weights
    categories = DenseNet161_Weights.IMAGENET1K_V1.meta["categories"]
    return {str(i): name.replace(" ", "_") for i, name in enumerate(categories)}


def coco_labels():
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
    categories = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    return {str(i): name for i, name in enumerate(categories)}


def tutorial(out, folder, weights_name, labels):
    os.makedirs(out, exist_ok=True)
    model_py = os.path.join(ROOT, "examples", "torchserve", folder, "model.py")
    model = seeded(load_class(model_py))
    torch.save(model.state_dict(), os.path.join(out, weights_name))
    write_json(os.path.join(out, "index_to_name.json"), labels)
    print(f"wrote {os.path.join(out, weights_name)} (random weights, seed 0) and index_to_name.json")


def answer(kind, model_py, weights, labels_path, image_path):
    """TorchServe's default handler on one image, in PyTorch eager."""
    from PIL import Image
    from torchvision import transforms

    model = load_class(model_py)()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    with open(labels_path) as f:
        labels = json.load(f)
    name = lambda i: (lambda v: v[-1] if isinstance(v, list) else v)(labels[str(int(i))])
    image = Image.open(image_path)
    with torch.no_grad():
        if kind == "image_classifier":
            prep = transforms.Compose([
                transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
            scores = torch.softmax(model(prep(image.convert("RGB"))[None]), dim=1)[0]
            probs, classes = torch.topk(scores, 5)
            result = {name(c): float(p) for p, c in zip(probs, classes)}
        else:
            tensor = transforms.ToTensor()(image)
            found = model([tensor])[0]
            keep = found["scores"] >= 0.5
            result = [{name(label): [float(v) for v in box], "score": float(score)}
                      for box, label, score in zip(found["boxes"][keep], found["labels"][keep],
                                                   found["scores"][keep])]
    json.dump(result, sys.stdout, indent=1)
    print()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    command, args = sys.argv[1], sys.argv[2:]
    if command == "small":
        small(args[0])
    elif command == "densenet161":
        tutorial(args[0], "densenet_161", "densenet161-8d451a50.pth", imagenet_labels())
    elif command == "fastrcnn":
        tutorial(args[0], "fast-rcnn", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", coco_labels())
    elif command == "answer":
        answer(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
