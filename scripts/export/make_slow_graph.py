#!/usr/bin/env python3
"""Writes tests/fixtures/slow_matmul.onnx: a graph whose run time the caller controls.

Input `n` (int64 [1]) builds an n x n matrix of 1e-4, multiplies it by itself 20 times (20
separate MatMul nodes, so ONNX Runtime's run termination can stop it between nodes) and returns
the sum as `output` (float32 [1]). n=100 runs in ~10 ms, n=800 in ~0.3 s, n=1600 in ~2.5 s on
two cores; a negative n makes ONNX Runtime fail at run time. Used by the timeout, full-queue and
model-error tests. Needs only the `onnx` package.
"""
import os

import onnx
from onnx import TensorProto, helper

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

nodes = [
    helper.make_node("Concat", ["n", "n"], ["shape"], axis=0),
    helper.make_node(
        "ConstantOfShape", ["shape"], ["m0"],
        value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1e-4]),
    ),
]
previous = "m0"
for index in range(20):
    nodes.append(helper.make_node("MatMul", [previous, "m0"], [f"m{index + 1}"]))
    previous = f"m{index + 1}"
nodes.append(helper.make_node("ReduceSum", [previous], ["total"], keepdims=0))
nodes.append(helper.make_node("Reshape", ["total", "one"], ["output"]))
graph = helper.make_graph(
    nodes,
    "slow_matmul",
    [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])],
    initializer=[helper.make_tensor("one", TensorProto.INT64, [1], [1])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model, full_check=True)
onnx.save(model, os.path.join(ROOT, "tests", "fixtures", "slow_matmul.onnx"))
print("wrote tests/fixtures/slow_matmul.onnx")
