"""A GGUF model loaded in llama-cpp-python: rendering prompts, stop tokens, token pieces.

Everything here runs on the local backend's one worker thread (a ``Llama`` is not
thread-safe), except :class:`Vocab`, a vocabulary-only model for counting tokens
(:func:`load_vocab`).
``llama_cpp`` is imported inside the functions that need it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from adapters.llm.local_context import Sequences
from adapters.llm.local_gguf import GGUFInfo, read_gguf_info
from adapters.llm.local_settings import LocalSettings
from adapters.llm.local_vision import Projector
from core.errors import BackendUnavailable
from core.types import ImagePart

_log = logging.getLogger(__name__)

# ChatML, for a GGUF without a chat template (old conversions).
CHATML: Final = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A configured model: its name, file, where it was configured, and its context."""

    name: str
    path: Path
    variable: str  # LOCAL_MODEL_PATH / LOCAL_MODELS / (bundled)
    info: GGUFInfo
    n_ctx: int
    mmproj: Path | None = None  # LOCAL_MMPROJ_PATH: this model sees images


@dataclass(slots=True)
class Vocab:
    """A vocabulary-only llama.cpp model for counting tokens (never waits on generation)."""

    model: Any  # llama_model_p
    vocab: Any  # llama_vocab_p
    overhead: int = 8

    def count(self, text: str, *, special: bool = False) -> int:
        """Tokens of ``text``; ``special`` parses control tokens such as ``<|im_start|>``."""
        import llama_cpp

        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, cap, False, special)
        if n < 0:  # cannot happen (a token covers at least one byte), but the API allows it
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, cap, False, special)
        return max(int(n), 0)

    def close(self) -> None:
        """Free the vocabulary-only model. Idempotent."""
        import llama_cpp

        if self.model is not None:
            llama_cpp.llama_model_free(self.model)
            self.model = None


@dataclass(slots=True, eq=False)
class Job:
    """One generation handed to the worker thread; events flow back through ``emit``."""

    spec: ModelSpec
    messages: list[dict[str, Any]]
    temperature: float
    max_tokens: int | None  # None: at most half the context
    emit: Callable[[object], None]
    tools: list[dict[str, Any]] | None = None  # for the chat template's ``tools``
    images: tuple[ImagePart, ...] = ()  # in prompt order, one marker each in ``messages``
    cancel: threading.Event = field(default_factory=threading.Event)
    done: Callable[[], None] = lambda: None  # called once the worker let go of the job


END: Final = object()
_OWN_CONTEXT: Final = 256  # the smallest context llama.cpp makes (it pads to 256)


class LoadedModel:
    """A loaded model: the ``Llama`` and how to render prompts for it (worker thread only)."""

    def __init__(self, spec: ModelSpec, settings: LocalSettings, *, marker: str = "") -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        kwargs: dict[str, Any] = {
            # The Llama's own context only lends its parameters: generation runs in the
            # batched context below, which holds every sequence's KV cache.
            "n_ctx": _OWN_CONTEXT,
            "n_gpu_layers": settings.gpu_layers,
            "verbose": False,
        }
        if settings.threads is not None:
            kwargs["n_threads"] = settings.threads
        self.llama = llama_cpp.Llama(str(spec.path), **kwargs)
        self.vocab = self.llama._model.vocab  # private, for the eog/control checks per token
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._get_attr = llama_cpp.llama_vocab_get_attr
        self._control = int(llama_cpp.LLAMA_TOKEN_ATTR_CONTROL)
        self._stop_cache: dict[int, bool] = {}
        self._pieces: dict[int, bytes] = {}
        meta = self.llama.metadata
        template = meta.get("tokenizer.chat_template") or CHATML

        def piece(token_id: str | None) -> str:
            if token_id is None:
                return ""
            return self.llama.detokenize([int(token_id)], special=True).decode(
                "utf-8", errors="replace"
            )

        # Abort an image's evaluation when its request is cancelled. Installed only while
        # an image is evaluated: ggml calls it per graph node, too often for every token.
        self.cancel: threading.Event | None = None
        self._set_abort = llama_cpp.llama_set_abort_callback
        self._abort = llama_cpp.ggml_abort_callback(self._should_abort)
        self._no_abort = llama_cpp.ggml_abort_callback()  # a NULL function pointer
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=piece(meta.get("tokenizer.ggml.eos_token_id")),
            bos_token=piece(meta.get("tokenizer.ggml.bos_token_id")),
            add_generation_prompt=True,
        )
        self.projector: Projector | None = None
        self.sequences: Sequences | None = None
        try:
            if spec.mmproj is not None:
                self.projector = Projector(
                    spec.mmproj, self.llama, marker=marker, use_gpu=settings.gpu_layers != 0
                )
            self.sequences = Sequences(self.llama, parallel=settings.parallel, n_ctx=spec.n_ctx)
        except BaseException:
            self.close()
            raise

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Render the chat template (with ``tools``) and tokenise it (special tokens parsed)."""
        prompt = self.prompt(messages, tools)
        return list(self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    def prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The chat template rendered (with ``tools``), ready for the model's reply."""
        try:
            prompt = self.formatter(messages=messages, tools=tools).prompt  # type: ignore[arg-type]
        except Exception:
            # Some templates refuse a system role: fold it into the first user message.
            if not messages or messages[0]["role"] != "system":
                raise
            system, rest = messages[0]["content"], list(messages[1:])
            if rest and rest[0]["role"] == "user":
                rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
            else:
                rest.insert(0, {"role": "user", "content": system})
            prompt = self.formatter(messages=rest, tools=tools).prompt  # type: ignore[arg-type]
        return prompt

    def _should_abort(self, _data: object) -> bool:
        cancel = self.cancel
        return cancel is not None and cancel.is_set()

    def abort_on(self, ctx: Any, cancel: threading.Event | None) -> None:
        """Let ``cancel`` abort the next evaluation in ``ctx`` (``None``: nothing aborts it)."""
        self.cancel = cancel
        self._set_abort(ctx, self._abort if cancel is not None else self._no_abort, None)

    def stops(self, token: int) -> bool:
        """End of generation: an end-of-generation or any control token (never shown)."""
        stop = self._stop_cache.get(token)
        if stop is None:
            stop = bool(self._is_eog(self.vocab, token)) or bool(
                self._get_attr(self.vocab, token) & self._control
            )
            self._stop_cache[token] = stop
        return stop

    def piece(self, token: int) -> bytes:
        """The bytes of ``token`` (cached: the hot path of streaming)."""
        data = self._pieces.get(token)
        if data is None:
            data = self._pieces[token] = self.llama.detokenize([token])
        return data

    def close(self) -> None:
        """Free the batched context, the projector, the model and its context."""
        if self.sequences is not None:
            self.sequences.close()
        if self.projector is not None:
            self.projector.close()
        self.llama.close()


def reply_limit(max_tokens: int | None, n_ctx: int, prompt_tokens: int) -> int:
    """The longest reply: ``max_tokens`` (else half the context), within the room left."""
    return min(max_tokens or n_ctx // 2, n_ctx - prompt_tokens)


def load_vocab(path: Path) -> Vocab:
    """A vocabulary-only model of ``path`` with its measured per-message overhead."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise BackendUnavailable(f"llama.cpp could not read the vocabulary of {path}")
    vocab = Vocab(model, llama_cpp.llama_model_get_vocab(model))
    vocab.overhead = _measure_overhead(path, vocab)
    return vocab


def _measure_overhead(path: Path, vocab: Vocab) -> int:
    """Tokens a chat message costs beyond its content, from the file's own template."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    try:
        info = read_gguf_info(path)
        formatter = Jinja2ChatFormatter(
            template=info.chat_template or CHATML, eos_token="", bos_token=""
        )
        msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}]
        two = formatter(messages=msgs).prompt  # type: ignore[arg-type]
        one = formatter(messages=msgs[:1]).prompt  # type: ignore[arg-type]
        added = vocab.count(two, special=True) - vocab.count(one, special=True)
        return max(added - vocab.count("x"), 1)
    except Exception:
        _log.debug("could not measure the chat template overhead of %s", path, exc_info=True)
        return 8


__all__ = [
    "CHATML",
    "END",
    "Job",
    "LoadedModel",
    "ModelSpec",
    "Vocab",
    "load_vocab",
    "reply_limit",
]
