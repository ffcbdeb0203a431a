#!/usr/bin/env python3
"""Writes the handmade seeds of fuzz/corpus/ (valid inputs, a few KB at most); the image seeds
are copies of committed fixtures. Run from the repository root: python3 fuzz/make_corpus.py"""
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

CORPUS = Path("fuzz/corpus")


def seed(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


# config.properties
seed("properties", "docker.properties", Path("docker/config.properties").read_bytes())
seed("properties", "keys.properties",
     "# comment\ninference_address=http://0.0.0.0:9080\nmanagement_address: http://127.0.0.1:9081\n"
     "metrics_address=https://[::1]:9082/\nprivate_key_file=key.pem\ncertificate_file=cert.pem\n"
     "job_queue_size 5\nload_models=a.mar,\\\n  b.mar\nmax_request_parts=4\n"
     "enable_model_api=true\nallowed_urls=https://.*\\\\.example\\\\.com/.*,file\\://.*\n"
     "token_expiration_min=0.5\nmetrics_mode=prometheus\nnote=caf\\u00e9 \\t\\n\\\\\n"
     'models={"noop": {"1.0": {"defaultVersion": true, "marName": "noop.mar", "minWorkers": 1, '
     '"maxWorkers": 2, "batchSize": 4, "maxBatchDelay": 50}}}\n')

# snapshots (TorchServe's form, as src/snapshot/tests.rs)
snapshot_json = json.dumps({
    "name": "20200331062429525-snapshot.cfg", "modelCount": 2, "created": 1585635869526,
    "models": {"noop": {"1.11": {"defaultVersion": True, "marName": "noop.mar", "minWorkers": 1,
                                 "maxWorkers": 1, "batchSize": 1, "maxBatchDelay": 100,
                                 "responseTimeout": 120, "startupTimeout": 120,
                                 "runtimeType": "python"},
                        "2.0": {"defaultVersion": False, "marName": "noop_v2.mar",
                                "minWorkers": 2, "maxWorkers": 3, "batchSize": 4,
                                "maxBatchDelay": 50, "runtimeType": "python"}}}},
    indent=2)
escaped = snapshot_json.replace("\n", "\\n").replace(":", "\\:")
seed("snapshot", "torchserve.cfg",
     "#Saving snapshot\n#Tue Mar 31 06:24:29 UTC 2020\ninference_address=https\\://127.0.0.1\\:8443\n"
     "load_models=noop.mar\nmodel_store=../models\nmodel_snapshot=" + escaped + "\n")
seed("snapshot", "empty-models.cfg",
     'model_snapshot={"name"\\: "x-startup.cfg", "modelCount"\\: 0, "created"\\: 0, "models"\\: {}}\n')

# model-config.yaml
model_config = ("minWorkers: 1\nmaxWorkers: 4\nbatchSize: 8\nmaxBatchDelay: 50\nresponseTimeout: 120\n"
                "deviceType: gpu\ndeviceIds: [0, 1]\nparallelLevel: 1\njobQueueSize: 10\n"
                "handler:\n  threshold: 0.5\n  labels: [a, b]\n")
seed("model_config", "full.yaml", model_config)
seed("model_config", "small.yaml", "batchSize: 2\nmaxBatchDelay: 10\n")

# handler configs
mnist = Path("examples/digits/mnist_handler.json").read_bytes()
seed("handler_config", "mnist_handler.json", mnist)
seed("handler_config", "classifier.yaml",
     "version: 1\nhandler: image_classifier\nimage:\n  color: rgb\n  resize: 256\n  center_crop: 224\n"
     "  mean: [0.485, 0.456, 0.406]\n  std: [0.229, 0.224, 0.225]\nclassify:\n  top_k: 3\n")
seed("handler_config", "tensor.json", '{"version": 1, "handler": "tensor"}')

# archives: a zip (.mar) and a tgz, each with a manifest, handler config and model-config.yaml
signature = {"inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 28, 28]}],
             "outputs": [{"name": "output", "dtype": "float32", "shape": ["batch", 10]}]}
manifest = json.dumps({
    "createdOn": "07/12/2026 12:00:00", "runtime": "python",
    "model": {"modelName": "digits", "serializedFile": "model.onnx", "handler": "image_classifier",
              "modelVersion": "1.0", "configFile": "model-config.yaml"},
    "archiverVersion": "0.1.0",
    "oxserve": {"formatVersion": 1, "handlerConfig": "MAR-INF/handler.json",
                "signature": signature}}, indent=2)
members = {"MAR-INF/MANIFEST.json": manifest, "MAR-INF/handler.json": mnist,
           "model-config.yaml": "batchSize: 2\n", "model.onnx": b"not a graph",
           "index_to_name.json": '{"0": "zero", "1": "one"}'}
buffer = io.BytesIO()
with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
    for name, data in members.items():
        archive.writestr(name, data)
seed("archive", "digits.mar", buffer.getvalue())
buffer = io.BytesIO()
with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
    for name, data in members.items():
        data = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo("digits/" + name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
seed("archive", "digits.tar.gz", buffer.getvalue())

# a torch-model-archiver archive for `oxserve-archiver convert`: state_dict, model file, custom
# handler, requirements, a folder of extra files
manifest = json.dumps({
    "createdOn": "07/12/2026 12:00:00", "runtime": "python",
    "model": {"modelName": "mnist", "serializedFile": "mnist_cnn.pt", "handler": "mnist_handler.py",
              "modelFile": "mnist.py", "modelVersion": "1.0", "requirementsFile": "requirements.txt",
              "configFile": "model-config.yaml"},
    "archiverVersion": "0.12.0"}, indent=2)
members = {"MAR-INF/MANIFEST.json": manifest, "mnist_cnn.pt": b"PK\x03\x04 not a state_dict",
           "mnist.py": "class Net: pass\n",
           "mnist_handler.py": "class MNISTDigitClassifier(ImageClassifier): pass\n",
           "requirements.txt": "torch\n", "model-config.yaml": "batchSize: 2\n",
           "assets/index_to_name.json": '{"0": "zero"}', "helpers.py": "x = 1\n"}
buffer = io.BytesIO()
with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
    for name, data in members.items():
        archive.writestr(name, data)
seed("archive", "torchserve-mnist.mar", buffer.getvalue())

# JSON tensor requests
seed("tensor_request", "nested.json", '{"x": [[1.0, 2.5, -3], [0, 0, 1e3]]}')
seed("tensor_request", "bare-list.json", "[[1, 2, 3]]")
seed("tensor_request", "shape-data.json",
     '{"inputs": {"ids": {"shape": [1, 3], "data": [1, 2, 3]}, "mask": [[true, false, 1]], '
     '"pixels": [[0, 255], [7, 8]]}}')

# KServe v2 infer bodies: first line the Inference-Header-Content-Length (empty: none), then the body
seed("v2_request", "json.txt", "\n" + json.dumps({"id": "1", "inputs": [
    {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [[1.0, 2.5, -3], [0, 0, 1e3]]}],
    "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}))
v2_header = json.dumps({"inputs": [
    {"name": "ids", "datatype": "INT64", "shape": [1, 2], "parameters": {"binary_data_size": 16}},
    {"name": "mask", "datatype": "BOOL", "shape": [1, 2], "data": [True, False]},
    {"name": "pixels", "datatype": "UINT8", "shape": [2, 2], "parameters": {"binary_data_size": 4}}],
    "parameters": {"binary_data_output": True}})
seed("v2_request", "binary.txt", (f"{len(v2_header)}\n{v2_header}").encode()
     + (7).to_bytes(8, "little") + (9).to_bytes(8, "little") + bytes([0, 255, 7, 8]))
# text requests: first line the Content-Type, then the body
seed("text_request", "raw.txt", "text/plain\nThe movie was great")
seed("text_request", "data.json", 'application/json\n{"data": "Why is the server so slow?"}')
seed("text_request", "list.json", 'application/json\n{"text": ["a cat", "I really hate this film", "\u00e9t\u00e9 \u6771\u4eac"]}')

# inference bodies: first line the Content-Type, then the body
multipart = ("--XyZ\r\nContent-Disposition: form-data; name=\"data\"; filename=\"a.json\"\r\n"
             "Content-Type: application/json\r\n\r\n{\"x\": [[1, 2, 3]]}\r\n"
             "--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nignored\r\n--XyZ--\r\n")
seed("multipart", "form-data.txt", "multipart/form-data; boundary=XyZ\n" + multipart)
seed("multipart", "urlencoded.txt", "application/x-www-form-urlencoded\ndata=abc&body=%00%FF&x=1")
seed("multipart", "raw.txt", "application/octet-stream\n\x89PNG raw bytes")

# images: committed fixtures (PNG, baseline/progressive/restart JPEGs), and base64 text of one
for source in ["examples/digits/digit_3.png", "tests/fixtures/jpeg/grey_33x17.jpg",
               "tests/fixtures/jpeg/progressive_45x30.jpg",
               "tests/fixtures/jpeg/restart_rows_51x39.jpg",
               "tests/fixtures/jpeg/ycc420_120x80_q50.jpg", "tests/fixtures/jpeg/grey_33x17.png"]:
    target = CORPUS / "image" / Path(source).name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
import base64
seed("image", "digit_7.b64", base64.b64encode(Path("examples/digits/digit_7.png").read_bytes()))

# gRPC PredictionsRequest messages (protobuf wire format: field 1 model_name, 2 model_version,
# 3 the input map's entries, 4 sequence_id)
def varint(number):
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def field(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def entry(key, value):
    return field(3, field(1, key.encode()) + field(2, value))


digit = Path("examples/digits/digit_3.png").read_bytes()
seed("grpc_predictions", "digit.pb", field(1, b"mnist") + entry("data", digit))
seed("grpc_predictions", "versioned-body.pb",
     field(1, b"mnist") + field(2, b"2.0") + entry("body", b"\x89PNG") + field(4, b"seq-1"))
seed("grpc_predictions", "no-data.pb", field(1, b"mnist") + entry("other", b"x") + entry("data", b""))

# KServe v2 gRPC ModelInferRequest messages (1 model_name, 5 inputs: 1 name, 2 datatype, 3 shape
# (packed int64), 5 contents (6 fp32_contents, packed); 7 raw_input_contents)
import struct


def packed_varints(numbers):
    return b"".join(varint(number) for number in numbers)


def tensor(name, datatype, shape, contents=b""):
    body = field(1, name.encode()) + field(2, datatype.encode()) + field(3, packed_varints(shape))
    return field(5, body + (field(5, contents) if contents else b""))


floats = struct.pack("<3f", 1.0, 2.0, 3.0)
seed("grpc_model_infer", "typed-fp32.pb", field(1, b"m") + tensor("x", "FP32", [1, 3], field(6, floats)))
seed("grpc_model_infer", "raw-fp32.pb", field(1, b"m") + tensor("x", "FP32", [1, 3]) + field(7, floats))
seed("grpc_model_infer", "raw-several.pb",
     field(1, b"m") + tensor("ids", "INT64", [1, 2]) + tensor("mask", "BOOL", [1, 2])
     + tensor("pixels", "UINT8", [2, 2]) + field(7, struct.pack("<2q", 5, 6))
     + field(7, b"\x01\x00") + field(7, b"\x01\x02\x03\x04"))
