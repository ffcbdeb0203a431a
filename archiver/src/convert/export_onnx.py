"""oxserve-archiver's PyTorch-to-ONNX step, run in the user's own Python (the archiver embeds it).

Reads a JSON job (argv[1]) written by the archiver, loads the model as TorchServe does (an eager
model: the single torch.nn.Module subclass of the model file plus a state_dict; or a TorchScript
archive), exports it with torch.onnx.export and a dynamic batch axis, then runs PyTorch on a
random input and saves that input and PyTorch's outputs as raw little-endian files, so that the
archiver can run the exported graph in ONNX Runtime on the same input and compare. Writes a JSON
report (argv[2]). Progress goes to stderr; a failure is one line on stderr and exit status 2.
Exit status 3 means torch is not importable.
"""

import importlib.util
import inspect
import json
import os
import re
import sys
import threading
import time
import warnings

PREFIX = "oxserve-archiver:"


def say(message):
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def fail(message):
    print(f"{PREFIX} error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


try:
    import torch
except ImportError:
    sys.exit(3)

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "bool": torch.bool,
}
NAMES = {value: key for key, value in DTYPES.items()}


def model_class(model_file):
    """The single class defined in the model file, as TorchServe's list_classes_from_module
    finds it; among several, the single torch.nn.Module subclass."""
    folder = os.path.dirname(os.path.abspath(model_file))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = os.path.splitext(os.path.basename(model_file))[0]
    spec = importlib.util.spec_from_file_location(module_name, model_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's code: report whatever it raises
        fail(f"cannot import {model_file}: {type(error).__name__}: {error}")
    defined = [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if member.__module__ == module.__name__
    ]
    modules = [cls for cls in defined if issubclass(cls, torch.nn.Module)]
    if len(defined) == 1 and modules:
        return defined[0]
    if len(modules) == 1:
        return modules[0]
    names = ", ".join(cls.__name__ for cls in modules) or "none"
    fail(
        f"{model_file} must define exactly one torch.nn.Module subclass, as TorchServe expects; "
        f"it defines {len(modules)} ({names})"
    )


def load_model(job):
    serialized = job["serialized_file"]
    if job["model_file"]:
        cls = model_class(job["model_file"])
        say(f"building {cls.__name__} from {os.path.basename(job['model_file'])}")
        try:
            model = cls()
        except Exception as error:
            fail(f"{cls.__name__}() failed: {type(error).__name__}: {error}")
        try:
            state = torch.load(serialized, map_location="cpu", weights_only=True)
        except Exception as error:
            fail(
                f"cannot read {os.path.basename(serialized)} as a state_dict: "
                f"{type(error).__name__}: {error}"
            )
        if isinstance(state, torch.nn.Module):
            state = state.state_dict()
        try:
            model.load_state_dict(state)
        except Exception as error:
            fail(f"the weights do not fit {cls.__name__}: {error}")
        return model.eval(), "eager"
    try:
        model = torch.jit.load(serialized, map_location="cpu")
    except Exception as error:
        fail(
            f"{os.path.basename(serialized)} is not a TorchScript archive ({type(error).__name__}); "
            "a state_dict needs its model class: add --model-file model.py"
        )
    return model.eval(), "torchscript"


def flatten(value, name):
    """(names, tensors) of a model's output: a tensor, a tuple/list of them, or a dict."""
    if isinstance(value, torch.Tensor):
        return [name], [value]
    if isinstance(value, dict):
        names, tensors = [], []
        for key, item in value.items():
            sub_names, sub_tensors = flatten(item, str(key))
            names += sub_names
            tensors += sub_tensors
        return names, tensors
    if isinstance(value, (list, tuple)):
        names, tensors = [], []
        for index, item in enumerate(value):
            sub_names, sub_tensors = flatten(item, f"{name}_{index}")
            names += sub_names
            tensors += sub_tensors
        return names, tensors
    fail(f"the model returned a {type(value).__name__}, which an ONNX graph cannot hold")


class Flat(torch.nn.Module):
    """Calls the model as TorchServe's handler does and returns its outputs as a flat tuple."""

    def __init__(self, model, image_list):
        super().__init__()
        self.model = model
        self.image_list = image_list

    def forward(self, *inputs):
        if self.image_list:
            # torchvision detectors take a list of [C, H, W] images and answer one dict each.
            out = self.model([inputs[0]])[0]
        else:
            out = self.model(*inputs)
        return tuple(flatten(out, "output")[1])


def random_inputs(specs, shapes, seed):
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec, shape in zip(specs, shapes):
        dtype = DTYPES[spec["dtype"]]
        if dtype.is_floating_point:
            if spec.get("unit_range"):
                tensor = torch.rand(shape, generator=generator)
            else:
                tensor = torch.randn(shape, generator=generator)
            tensor = tensor.to(dtype)
        elif dtype == torch.bool:
            tensor = torch.randint(0, 2, shape, generator=generator).bool()
        else:
            tensor = torch.randint(0, 2, shape, generator=generator).to(dtype)
        tensors.append(tensor)
    return tensors


def save(tensor, path):
    tensor = tensor.detach().contiguous().cpu()
    data = tensor.numpy().tobytes() if tensor.numel() else b""
    if sys.byteorder != "little" and tensor.element_size() > 1:
        data = tensor.numpy().byteswap().tobytes()
    with open(path, "wb") as out:
        out.write(data)
    return {"dtype": NAMES.get(tensor.dtype, str(tensor.dtype)), "shape": list(tensor.shape)}


class Ticker:
    """Prints how long the export has been running, every few seconds, on stderr."""

    def __init__(self, what):
        self.what = what
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.started = time.monotonic()

    def run(self):
        while not self.done.wait(10):
            say(f"  still {self.what} ({time.monotonic() - self.started:.0f} s)")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def first_line(error):
    """The first line of an exception's message, without terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def export(wrapper, example, job, input_names, output_names):
    """torch.onnx.export with the TorchScript-based exporter, then the dynamo one if it fails."""
    dynamic_axes = {}
    for spec in job["inputs"]:
        dynamic_axes[spec["name"]] = {int(axis): sym for axis, sym in spec["dynamic"].items()}
    for name in output_names:
        dynamic_axes[name] = {0: job["output_axis"]}
    attempts = [("torchscript", job["opset"])]
    if job["allow_dynamo"]:
        attempts.append(("dynamo", max(job["opset"], 18)))
    errors = []
    for exporter, opset in attempts:
        say(f"exporting ONNX (opset {opset}, {exporter} exporter); a large model takes a minute")
        try:
            with Ticker("exporting"), warnings.catch_warnings():
                if not job["verbose"]:
                    warnings.simplefilter("ignore")
                kwargs = dict(
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamic_axes=dynamic_axes,
                )
                if exporter == "torchscript":
                    torch.onnx.export(wrapper, tuple(example), job["output"], dynamo=False, **kwargs)
                else:
                    torch.onnx.export(
                        wrapper, tuple(example), job["output"], dynamo=True, external_data=False,
                        **kwargs,
                    )
            return exporter, opset
        except Exception as error:
            errors.append(f"{exporter}: {first_line(error)}")
            if job["verbose"]:
                say(f"  the {exporter} exporter failed: {error}")
    fail("torch.onnx.export failed (" + "; ".join(errors) + ")")


def main():
    with open(sys.argv[1]) as handle:
        job = json.load(handle)
    torch.manual_seed(job["seed"])
    started = time.monotonic()
    say(f"loading {os.path.basename(job['serialized_file'])} with PyTorch {torch.__version__}")
    model, kind = load_model(job)
    wrapper = Flat(model, job["image_list"]).eval()
    specs = job["inputs"]
    input_names = [spec["name"] for spec in specs]
    example = random_inputs(specs, [spec["shape"] for spec in specs], job["seed"])
    with torch.no_grad():
        try:
            probe = model([example[0]])[0] if job["image_list"] else model(*example)
        except Exception as error:
            shapes = ", ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in specs)
            fail(
                f"the model does not run on the example input ({shapes}): "
                f"{first_line(error)}; "
                "give its input with --input-shape and --input-dtype"
            )
    output_names, _ = flatten(probe, "output")
    if job["output_names"]:
        if len(job["output_names"]) != len(output_names):
            fail(
                f"--output-names names {len(job['output_names'])} outputs, "
                f"but the model returns {len(output_names)} ({', '.join(output_names)})"
            )
        output_names = job["output_names"]
    if len(set(output_names)) != len(output_names):
        output_names = [f"output_{index}" for index in range(len(output_names))]
    # A TorchScript module cannot be traced from inside another module: export it directly.
    target = model if kind == "torchscript" and not job["image_list"] else wrapper
    exporter, opset = export(target, example, job, input_names, output_names)
    export_seconds = time.monotonic() - started

    say("checking the graph against PyTorch on a random input")
    check = random_inputs(specs, job["check_shapes"], job["seed"] + 1)
    with torch.no_grad():
        outputs = wrapper(*check)
    work = job["work_dir"]
    report = {
        "torch_version": torch.__version__,
        "source": kind,
        "exporter": exporter,
        "opset": opset,
        "export_seconds": export_seconds,
        "inputs": [],
        "outputs": [],
    }
    for index, (name, tensor) in enumerate(zip(input_names, check)):
        path = os.path.join(work, f"input_{index}.bin")
        report["inputs"].append(dict(name=name, file=path, **save(tensor, path)))
    for index, (name, tensor) in enumerate(zip(output_names, outputs)):
        path = os.path.join(work, f"output_{index}.bin")
        report["outputs"].append(dict(name=name, file=path, **save(tensor, path)))
    with open(sys.argv[2], "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main()
