#!/usr/bin/env python3
"""Makes the tiny text fixtures: a BERT-like tokenizer.json and two random BERT graphs.

Written to tests/fixtures/ (a few KB each, committed for CI):
- tiny_tokenizer.json: WordPiece over a ~100-token vocabulary, BERT normaliser (lower case) and
  pre-tokeniser, `[CLS] $A [SEP]` template, truncation to 64 tokens; built with the Python `tokenizers` library.
- tiny_text_encoder.onnx: input_ids, attention_mask, token_type_ids (int64 [batch, sequence])
  -> last_hidden_state float32 [batch, sequence, 16]; max_position_embeddings 64.
- tiny_text_classifier.onnx: input_ids, attention_mask -> logits float32 [batch, 3].
- tiny_text_labels.json: index_to_name.json for the classifier.
- tiny_text_expected.json: per sentence, the Python tokenizer's ids, the mean-pooled L2-normalised
  embedding and the classifier's softmax, computed in ONNX Runtime from the ids, each sentence
  alone (no padding): the reference the Rust tests compare against.

    python scripts/export/make_text_fixtures.py

Needs torch, transformers, tokenizers, onnx, onnxruntime (nothing is downloaded).
"""
import json
import os

import numpy as np
import onnxruntime as ort
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, BertModel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

WORDS = (
    "the a an is was be to of and in on at for with it this that movie film book story good bad "
    "great terrible awful fine love hate like really very not no yes i you we they he she what "
    "who how why when where day night time world people rust server model text token short long "
    "sentence cat dog fast slow"
).split()
SENTENCES = [
    "The movie was great",
    "I really hate this terrible film",
    "a cat",
    "Why is the server so slow at night?",
    "Rust tokenizers are fast, and this sentence is longer than the others by far!",
]
MAX_POSITIONS = 64


def tokenizer() -> Tokenizer:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab += ["##s", "##ing", "##ed", "##er"]
    vocab += WORDS
    ids = {}
    for token in vocab:
        ids.setdefault(token, len(ids))
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    return tok


def export(model, names, output_names, path, vocab_size):
    ids = torch.randint(5, vocab_size, (2, 7))
    args = tuple(
        ids if name == "input_ids" else torch.ones_like(ids) if name == "attention_mask"
        else torch.zeros_like(ids)
        for name in names
    )
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    for name in output_names:
        axes[name] = {0: "batch", 1: "sequence"} if name == "last_hidden_state" else {0: "batch"}
    torch.onnx.export(
        model, args, path, dynamo=False, opset_version=17, input_names=names,
        output_names=output_names, dynamic_axes=axes,
    )


class Encoder(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


class Classifier(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


def main() -> None:
    torch.manual_seed(0)
    tok = tokenizer()
    tok_path = os.path.join(FIXTURES, "tiny_tokenizer.json")
    # The graphs' position table bounds the sequence: the server truncates to this.
    tok.enable_truncation(MAX_POSITIONS)
    tok.save(tok_path)
    vocab_size = tok.get_vocab_size()
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=MAX_POSITIONS, num_labels=3,
    )
    encoder_path = os.path.join(FIXTURES, "tiny_text_encoder.onnx")
    classifier_path = os.path.join(FIXTURES, "tiny_text_classifier.onnx")
    export(Encoder(BertModel(config).eval()), ["input_ids", "attention_mask", "token_type_ids"],
           ["last_hidden_state"], encoder_path, vocab_size)
    export(Classifier(BertForSequenceClassification(config).eval()),
           ["input_ids", "attention_mask"], ["logits"], classifier_path, vocab_size)
    with open(os.path.join(FIXTURES, "tiny_text_labels.json"), "w") as f:
        json.dump({"0": "negative", "1": "neutral", "2": "positive"}, f)

    encoder = ort.InferenceSession(encoder_path)
    classifier = ort.InferenceSession(classifier_path)
    expected = []
    for text in SENTENCES:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        mask = np.ones_like(ids)
        hidden = encoder.run(None, {"input_ids": ids, "attention_mask": mask,
                                    "token_type_ids": np.zeros_like(ids)})[0][0]
        mean = hidden.mean(axis=0)
        logits = classifier.run(None, {"input_ids": ids, "attention_mask": mask})[0][0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        expected.append({
            "text": text,
            "ids": ids[0].tolist(),
            "embedding": (mean / np.linalg.norm(mean)).tolist(),
            "probabilities": probs.tolist(),
        })
    with open(os.path.join(FIXTURES, "tiny_text_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    for path in (tok_path, encoder_path, classifier_path):
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
