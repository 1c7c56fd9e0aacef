"""Token counting for OpenAI-compatible models, offline.

Counts use the BPE tables bundled in ``bpe_openai`` (``o200k_base`` and ``cl100k_base``),
so nothing is downloaded at run time and no cache directory is read or written.

Which table a model uses:

* ``o200k_base``: the ``gpt-4o``, ``gpt-4.1``, ``gpt-4.5``, ``gpt-5``, ``o1``/``o3``/``o4``
  and ``gpt-oss`` families (exact counts).
* ``cl100k_base``: ``gpt-4`` / ``gpt-4-turbo``, ``gpt-3.5`` and the ``text-embedding``
  models (exact counts).
* Anything else (``llama3``, ``mistral``, ``qwen2.5`` served by Ollama, vLLM...): an
  *estimate*, the ``o200k_base`` count times a per-model calibration factor. The factor
  starts at 1.0 and learns from what the server reports: after each completion whose usage
  gives ``prompt_tokens``, the ratio of the server's count to our own count of that prompt
  is folded into an exponential moving average (weight :data:`CALIBRATION_ALPHA`), clamped
  to [:data:`CALIBRATION_MIN`, :data:`CALIBRATION_MAX`]. Such tokenizers are named with a
  ``~est`` suffix (``"o200k_base~est"``) so stored counts say they were estimates.

A vendor prefix such as OpenRouter's ``openai/gpt-4o`` is ignored when choosing the table.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import warnings
from collections.abc import Sequence
from functools import cache
from typing import Any, Final

with warnings.catch_warnings():
    # bpe_openai 0.1.x reads its bundled tables with importlib.resources.open_binary, which
    # warns DeprecationWarning on import; nothing for us to act on (data is read offline).
    warnings.filterwarnings("ignore", "open_binary is deprecated", DeprecationWarning)
    from bpe_openai import _bindings

from core.types import ChatMessage

_log = logging.getLogger(__name__)

O200K: Final = "o200k_base"
CL100K: Final = "cl100k_base"
ESTIMATE_SUFFIX: Final = "~est"

MESSAGE_OVERHEAD: Final = 4
"""Tokens the chat format adds per message.

OpenAI's chat format wraps each message as ``<|start|>{role}<|message|>{content}<|end|>``:
three marker tokens plus one for the role name. Llama-3 and ChatML templates add 4-5, so
4 is a fair figure for every server.
"""

REPLY_PRIMING: Final = 3
"""Tokens the server adds once per prompt to start the assistant's reply."""

CALIBRATION_ALPHA: Final = 0.3
CALIBRATION_MIN: Final = 0.5
CALIBRATION_MAX: Final = 3.0
CALIBRATION_MIN_SAMPLE: Final = 16
"""Prompts with fewer content tokens than this are too noisy to calibrate from."""

OFFLOAD_CHARS: Final = 16_384
"""Texts at least this long are counted in a worker thread, off the event loop."""

_O200K_MODEL = re.compile(
    r"^(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o[1-9](?:$|-)|codex-mini)"
)
_CL100K_MODEL = re.compile(r"^(?:gpt-4|gpt-3\.5|gpt-35|text-embedding-)")


def _bare(model: str) -> str:
    """``"openai/gpt-4o"`` -> ``"gpt-4o"``; lower-cased."""
    return model.rsplit("/", 1)[-1].strip().lower()


def encoding_for_model(model: str) -> str | None:
    """The exact BPE table of ``model``, or ``None`` when only an estimate is possible."""
    bare = _bare(model)
    if _O200K_MODEL.match(bare):
        return O200K
    if _CL100K_MODEL.match(bare):
        return CL100K
    return None


@cache
def _tokenizer(encoding: str) -> Any:
    # The Rust tokenizer's own ``count``: exact, with no size cap. The tiktoken-style
    # ``Encoding`` wrapper refuses texts over 1M characters or 200k tokens, which a long
    # stored conversation can reach. The bindings ship a typed stub in the wheel.
    return _bindings.tokenizer_for_encoding(encoding)


def count_exact(text: str, encoding: str) -> int:
    """Count ``text`` with the named table (``"o200k_base"`` / ``"cl100k_base"``).

    Special-token markers in ``text`` (``<|endoftext|>``) count as plain text, as the API
    counts user content. Lone surrogates count as replacement characters. Blocking: call it
    off the event loop for big texts.
    """
    if not text:
        return 0
    tokenizer = _tokenizer(encoding)
    try:
        return int(tokenizer.count(text))
    except UnicodeEncodeError:
        clean = text.encode("utf-8", "replace").decode("utf-8")
        return int(tokenizer.count(clean))


def message_text(message: ChatMessage) -> str:
    """The text a message costs in a prompt, besides the chat format's overhead.

    Its content, and the name and arguments of each tool call it makes: servers count those
    too.
    """
    if not message.tool_calls:
        return message.content
    return message.content + "".join(call.name + call.arguments for call in message.tool_calls)


def prompt_texts(messages: Sequence[ChatMessage]) -> list[str]:
    """:func:`message_text` of every message of a prompt."""
    return [message_text(m) for m in messages]


class TokenCounter:
    """Counts tokens per model, exactly where the table is known and estimated elsewhere.

    One instance belongs to one backend; it is safe to use from the event loop and from
    worker threads.
    """

    def __init__(self, *, offload_chars: int = OFFLOAD_CHARS) -> None:
        self._offload_chars = offload_chars
        self._factors: dict[str, float] = {}
        self._lock = threading.Lock()

    def tokenizer_name(self, model: str) -> str:
        """``"o200k_base"``, ``"cl100k_base"``, or ``"o200k_base~est"`` for an estimate."""
        return encoding_for_model(model) or O200K + ESTIMATE_SUFFIX

    def is_estimate(self, model: str) -> bool:
        """Whether counts for ``model`` are calibrated estimates rather than exact."""
        return encoding_for_model(model) is None

    def calibration(self, model: str) -> float:
        """The current factor applied to ``o200k_base`` counts for ``model`` (1.0 if exact)."""
        with self._lock:
            return self._factors.get(_bare(model), 1.0)

    def message_overhead(self, model: str) -> int:
        """Tokens the chat format adds per message; see :data:`MESSAGE_OVERHEAD`."""
        return MESSAGE_OVERHEAD

    def count_raw(self, text: str, model: str) -> int:
        """The uncalibrated count: exact table of ``model``, else ``o200k_base``. Blocking."""
        return count_exact(text, encoding_for_model(model) or O200K)

    def count_sync(self, text: str, model: str) -> int:
        """Count ``text`` for ``model`` on the calling thread (exact or calibrated)."""
        raw = self.count_raw(text, model)
        if raw == 0 or not self.is_estimate(model):
            return raw
        return max(1, math.ceil(raw * self.calibration(model)))

    async def count(self, text: str, model: str) -> int:
        """Count ``text`` for ``model``; texts of :data:`OFFLOAD_CHARS` or more in a thread."""
        if len(text) >= self._offload_chars:
            return await asyncio.to_thread(self.count_sync, text, model)
        return self.count_sync(text, model)

    async def count_prompt_raw(self, contents: list[str], model: str) -> int:
        """The uncalibrated content tokens of a whole prompt (no per-message overhead)."""
        if sum(len(c) for c in contents) >= self._offload_chars:
            return await asyncio.to_thread(lambda: sum(self.count_raw(c, model) for c in contents))
        return sum(self.count_raw(c, model) for c in contents)

    def observe(self, model: str, *, raw_content_tokens: int, messages: int, reported: int) -> None:
        """Learn from a server's ``prompt_tokens`` for an estimated model.

        Args:
            model: the model the prompt was sent to.
            raw_content_tokens: our ``o200k_base`` count of the prompt's message contents.
            messages: how many messages the prompt had (their overhead is subtracted).
            reported: the ``prompt_tokens`` the server reported.

        Exact models and prompts below :data:`CALIBRATION_MIN_SAMPLE` content tokens are
        ignored.
        """
        if not self.is_estimate(model) or raw_content_tokens < CALIBRATION_MIN_SAMPLE:
            return
        server_content = reported - messages * MESSAGE_OVERHEAD - REPLY_PRIMING
        if server_content <= 0:
            return
        ratio = min(CALIBRATION_MAX, max(CALIBRATION_MIN, server_content / raw_content_tokens))
        key = _bare(model)
        with self._lock:
            old = self._factors.get(key, 1.0)
            new = old + CALIBRATION_ALPHA * (ratio - old)
            self._factors[key] = min(CALIBRATION_MAX, max(CALIBRATION_MIN, new))
        _log.debug("token calibration for %s: %.3f -> %.3f", key, old, self._factors[key])
