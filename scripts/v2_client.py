#!/usr/bin/env python3
"""Talks to a running oxserve with a standard KServe v2 client (Triton's `tritonclient[http]`):
server and model metadata, then inference on a raw tensor (JSON and binary data), compared with
onnxruntime on the same tensor, and an image through a BYTES input. With `--grpc`, the same over
gRPC (`tritonclient[grpc]`). Skips, saying why, when tritonclient (or numpy / onnxruntime) is not
installed.

    oxserve --start --model-store model-store --models mnist.mar
    python scripts/v2_client.py --url 127.0.0.1:8080 --grpc 127.0.0.1:7070 --model mnist \
        --onnx examples/digits/mnist.onnx --image examples/digits/digit_7.png
"""
import argparse
import sys

try:
    import numpy as np
    import tritonclient.http as http_client
except ImportError as error:
    print(f"skipped: {error.name} is not installed (pip install 'tritonclient[http]' numpy)")
    sys.exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8080")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--onnx", help="the model's ONNX graph, to compare with onnxruntime")
    parser.add_argument("--image", help="an image for a BYTES input (through the handler)")
    parser.add_argument("--grpc", help="also over gRPC, at this address (inference port)")
    args = parser.parse_args()

    client = http_client.InferenceServerClient(url=args.url)
    print("live:", client.is_server_live(), "ready:", client.is_server_ready())
    print("server:", client.get_server_metadata())
    metadata = client.get_model_metadata(args.model)
    print("model:", metadata)
    print("model ready:", client.is_model_ready(args.model))

    spec = metadata["inputs"][0]
    shape = [1 if dim < 0 else dim for dim in spec["shape"]]
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
             "UINT8": np.uint8, "FP16": np.float16}[spec["datatype"]]
    rng = np.random.default_rng(0)
    tensor = rng.standard_normal(shape).astype(dtype)
    expected = None
    if args.onnx:
        try:
            import onnxruntime
        except ImportError:
            print("onnxruntime is not installed: answers are not compared")
        else:
            session = onnxruntime.InferenceSession(args.onnx)
            expected = session.run(None, {spec["name"]: tensor})
    for binary in (False, True):
        infer_input = http_client.InferInput(spec["name"], shape, spec["datatype"])
        infer_input.set_data_from_numpy(tensor, binary_data=binary)
        outputs = [http_client.InferRequestedOutput(output["name"], binary_data=binary)
                   for output in metadata["outputs"]]
        result = client.infer(args.model, [infer_input], outputs=outputs, request_id="v2-client")
        for index, output in enumerate(metadata["outputs"]):
            got = result.as_numpy(output["name"])
            line = f"binary={binary} {output['name']} {got.dtype}{list(got.shape)}"
            if expected is not None:
                difference = float(np.max(np.abs(got - expected[index])))
                line += f" max |oxserve - onnxruntime| = {difference:.3g}"
                assert difference <= 1e-4, line
            print(line)
        assert result.get_response()["id"] == "v2-client"

    if args.image:
        with open(args.image, "rb") as file:
            image = np.array([file.read()], dtype=np.object_)
        infer_input = http_client.InferInput("image", [1], "BYTES")
        infer_input.set_data_from_numpy(image, binary_data=True)
        result = client.infer(args.model, [infer_input])
        print("image through BYTES:", result.get_response()["outputs"][0],
              "->", result.as_numpy("image"))
    if args.grpc:
        run_grpc(args, tensor, expected)
    print("ok")


def run_grpc(args, tensor, expected):
    """Metadata, the raw tensor and the image again, through tritonclient's gRPC client."""
    try:
        import tritonclient.grpc as grpc_client
    except ImportError as error:
        print(f"gRPC skipped: {error.name} is not installed (pip install 'tritonclient[grpc]')")
        return
    client = grpc_client.InferenceServerClient(url=args.grpc)
    print("gRPC live:", client.is_server_live(), "ready:", client.is_server_ready())
    metadata = client.get_model_metadata(args.model, as_json=True)
    print("gRPC model:", metadata)
    spec = metadata["inputs"][0]
    infer_input = grpc_client.InferInput(spec["name"], list(tensor.shape), spec["datatype"])
    infer_input.set_data_from_numpy(tensor)
    result = client.infer(args.model, [infer_input], request_id="v2-grpc")
    for index, output in enumerate(metadata["outputs"]):
        got = result.as_numpy(output["name"])
        line = f"gRPC {output['name']} {got.dtype}{list(got.shape)}"
        if expected is not None:
            difference = float(np.max(np.abs(got - expected[index])))
            line += f" max |oxserve - onnxruntime| = {difference:.3g}"
            assert difference <= 1e-4, line
        print(line)
    assert result.get_response(as_json=True)["id"] == "v2-grpc"
    if args.image:
        with open(args.image, "rb") as file:
            image = np.array([file.read()], dtype=np.object_)
        infer_input = grpc_client.InferInput("image", [1], "BYTES")
        infer_input.set_data_from_numpy(image)
        result = client.infer(args.model, [infer_input])
        print("gRPC image through BYTES ->", result.as_numpy("image"))


if __name__ == "__main__":
    main()
