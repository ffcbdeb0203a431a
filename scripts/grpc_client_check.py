#!/usr/bin/env python3
"""TorchServe's Python gRPC flow against oxserve: stubs generated with grpc_tools.protoc (as
TorchServe's docs/grpc_api.md does, here from oxserve's copies in proto/), then register, infer
and unregister over gRPC, each answer compared with the REST answer to the same request.

    python3 scripts/grpc_client_check.py [--oxserve target/debug/oxserve]

Starts its own oxserve on free ports over a temporary store holding model-store/mnist.mar, and
stops it at the end. Skips (exit 0, with the reason) when grpcio-tools is not installed:
`pip install grpcio-tools`. Exits 1 when an answer differs."""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rest(url, method="GET", body=None):
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def generate_stubs(out):
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    protos = ["inference.proto", "management.proto", "google/rpc/status.proto"]
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(["grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
                        f"--python_out={out}", f"--grpc_python_out={out}", *protos])
    if code != 0:
        sys.exit(f"grpc_tools.protoc failed ({code})")
    sys.path.insert(0, str(out))


def start_server(binary, work):
    store = work / "model-store"
    store.mkdir()
    (store / "mnist.mar").write_bytes((ROOT / "model-store/mnist.mar").read_bytes())
    ports = {key: free_port() for key in ["inference", "management", "metrics", "grpc_inference",
                                          "grpc_management"]}
    (work / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{ports['inference']}\n"
        f"management_address=http://127.0.0.1:{ports['management']}\n"
        f"metrics_address=http://127.0.0.1:{ports['metrics']}\n"
        f"grpc_inference_port={ports['grpc_inference']}\n"
        f"grpc_management_port={ports['grpc_management']}\n"
        f"model_store={store}\nenable_model_api=true\ndisable_token_authorization=true\n")
    command = [binary, "--foreground", "--ncs", "--ts-config", "config.properties"]
    # The ONNX Runtime scripts/install-onnxruntime.sh put in this checkout, when there is one.
    library = ROOT / ".onnxruntime/lib/libonnxruntime.so"
    if library.exists():
        command += ["--ort-library", str(library)]
    server = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL,
                              stderr=open(work / "oxserve.log", "w"))
    for _ in range(600):
        try:
            if rest(f"http://127.0.0.1:{ports['inference']}/ping")[0] == 200:
                return server, ports
        except OSError:
            pass
        time.sleep(0.05)
    server.kill()
    sys.exit("oxserve did not start:\n" + (work / "oxserve.log").read_text()[-2000:])


def check(what, same):
    print(f"{'ok  ' if same else 'FAIL'} {what}")
    return same


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--oxserve", default=str(ROOT / "target/debug/oxserve"))
    args = parser.parse_args()
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError as error:
        print(f"skipped: {error.name} is not installed (pip install grpcio-tools)")
        return 0
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        generate_stubs(work / "stubs")
        import grpc
        import inference_pb2
        import inference_pb2_grpc
        import management_pb2
        import management_pb2_grpc

        server, ports = start_server(args.oxserve, work)
        try:
            inference = inference_pb2_grpc.InferenceAPIsServiceStub(
                grpc.insecure_channel(f"localhost:{ports['grpc_inference']}"))
            management = management_pb2_grpc.ManagementAPIsServiceStub(
                grpc.insecure_channel(f"localhost:{ports['grpc_management']}"))
            rest_url = f"http://127.0.0.1:{ports['inference']}"
            ok = True
            # register, as ts_scripts/torchserve_grpc_client.py does
            answer = management.RegisterModel(management_pb2.RegisterModelRequest(
                url="mnist.mar", initial_workers=1, synchronous=True, model_name="mnist"))
            ok &= check(f"RegisterModel: {answer.msg}", "registered with 1 initial workers"
                        in answer.msg)
            health = json.loads(inference.Ping(inference_pb2.google_dot_protobuf_dot_empty__pb2
                                               .Empty()).health)
            ok &= check(f"Ping: {health}", health == {"status": "Healthy"})
            for digit in range(10):
                data = (ROOT / f"examples/digits/digit_{digit}.png").read_bytes()
                answer = inference.Predictions(inference_pb2.PredictionsRequest(
                    model_name="mnist", input={"data": data}))
                status, body = rest(f"{rest_url}/predictions/mnist", "POST", data)
                ok &= check(f"Predictions digit_{digit}.png == REST ({status})",
                            status == 200 and answer.prediction == body)
            try:
                inference.Predictions(inference_pb2.PredictionsRequest(
                    model_name="nope", input={"data": b"x"}))
                ok &= check("unknown model refused", False)
            except grpc.RpcError as error:
                ok &= check(f"unknown model: {error.code()} {error.details()}",
                            error.code() == grpc.StatusCode.NOT_FOUND)
            listed = json.loads(management.ListModels(management_pb2.ListModelsRequest()).msg)
            ok &= check(f"ListModels: {listed}", listed["models"][0]["modelName"] == "mnist")
            answer = management.UnregisterModel(
                management_pb2.UnregisterModelRequest(model_name="mnist"))
            ok &= check(f"UnregisterModel: {answer.msg}", answer.msg == 'Model "mnist" unregistered')
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    print("all answers as expected" if ok else "some answers differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
