"""``POST /v1/embeddings`` for the loopback OpenAI server (``tests/fakes/openai_server.py``).

Vectors are deterministic: each lower-cased word is hashed to a coordinate and a sign, and
the sum is normalised, so texts sharing words are close and unrelated texts are not. The
request is checked as the real API checks it: ``input`` a string or an array of at most 2048
non-empty strings, each at most 8192 tokens, at most 300,000 tokens in all; ``dimensions``
only for ``text-embedding-3`` models; ``encoding_format`` ``float`` or ``base64`` (the
``openai`` client asks for base64 unless told otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
# The models the fake serves, with their native dimension.
EMBEDDING_MODELS: Mapping[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_WORD = re.compile(r"\w+")


def fake_vector(text: str, dimension: int) -> list[float]:
    """The unit vector the fake returns for ``text``."""
    vector = [0.0] * dimension
    for word in _WORD.findall(text.lower()) or [text]:
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % dimension
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _invalid_input() -> tuple[int, dict[str, Any]]:
    return 400, _error(
        "'$.input' is invalid. Please check the API reference: "
        "https://platform.openai.com/docs/api-reference."
    )


def _error(message: str, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


def embeddings_answer(
    body: Any, models: Mapping[str, int], count_tokens: Callable[[str], int]
) -> tuple[int, dict[str, Any]]:
    """The status and JSON body the real API gives a ``/v1/embeddings`` request ``body``.

    Args:
        body: the parsed request body.
        models: the served models and their native dimension.
        count_tokens: the tokens of one input.
    """
    if not isinstance(body, dict) or "input" not in body or "model" not in body:
        return 400, _error("you must provide a model parameter and an input")
    model = body["model"]
    if model not in models:
        return 404, _error(
            f"The model `{model}` does not exist or you do not have access to it.",
            "model_not_found",
        )
    texts = body["input"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or len(texts) > MAX_INPUTS:
        return _invalid_input()
    if not all(isinstance(t, str) and t for t in texts):
        return _invalid_input()
    tokens = [count_tokens(t) for t in texts]
    if (longest := max(tokens)) > MAX_INPUT_TOKENS:
        return 400, _error(
            f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you "
            f"requested {longest} tokens ({longest} in your prompt; 0 for the completion). "
            "Please reduce your prompt; or completion length."
        )
    if sum(tokens) > MAX_REQUEST_TOKENS:
        return 400, _error(
            f"Requested {sum(tokens)} tokens, max {MAX_REQUEST_TOKENS} tokens per request"
        )
    dimension = models[model]
    if "dimensions" in body:
        if not str(model).startswith("text-embedding-3"):
            return 400, _error("This model does not support specifying dimensions.")
        dimension = int(body["dimensions"])
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return 400, _error(f"Invalid value for 'encoding_format': '{encoding}'.")
    data = []
    for index, text in enumerate(texts):
        vector = fake_vector(text, dimension)
        embedding: Any = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{dimension}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}
    return 200, {"object": "list", "data": data, "model": model, "usage": usage}
