"""The local LLM backend: a GGUF model run inside the bot's process with llama-cpp-python.

One worker thread owns every loaded ``llama_cpp.Llama`` (an instance is not thread-safe) and
serves up to ``LOCAL_PARALLEL`` conversations at once, decoded together in one batch with a
KV cache per conversation kept between turns (:mod:`~adapters.llm.local_batch`); further
requests wait first-come first-served in a bounded line (``LOCAL_QUEUE_SIZE``) and learn
their place in it (:class:`~core.types.QueuePosition`). Tokens stream from the worker into
the event loop as they are sampled; closing the stream ends that conversation's sequence at
the next step, the others go on. Token counting uses a separate vocabulary-only model per
file, so it never waits behind a generation.

This module holds the backend: start-up checks, the line and the streams. Beside it:
:mod:`~adapters.llm.local_settings` (``LOCAL_*``, the configured models),
:mod:`~adapters.llm.local_gguf` (reading and checking files), :mod:`~adapters.llm.local_model`
(a loaded model, the vocabulary for counting), :mod:`~adapters.llm.local_context` (its
batched context), :mod:`~adapters.llm.local_batch` (the serving loop on the worker thread),
:mod:`~adapters.llm.local_worker` (loading models, the events' hand-off),
:mod:`~adapters.llm.local_tools`
(tools in prompts and replies) and :mod:`~adapters.llm.local_vision` (images).

``llama_cpp`` is imported lazily: this module imports (and :func:`local_backend_available`
answers) on an installation without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from adapters.llm.local_batch import Batcher
from adapters.llm.local_gguf import (
    GGUFError,
    GGUFInfo,
    available_memory,
    check_projector,
    read_gguf_info,
)
from adapters.llm.local_model import (
    END,
    Job,
    LoadedModel,
    ModelSpec,
    Vocab,
    load_vocab,
    reply_limit,
)
from adapters.llm.local_settings import (
    DEFAULT_CONTEXT_CAP,
    DEFAULT_TEMPERATURE,
    LocalSettings,
    configured_models,
    default_model_path,
    local_backend_available,
)
from adapters.llm.local_tools import (
    ToolPrompt,
    chat_dicts,
    parsed_events,
    prompt_images,
    tool_dicts,
    tool_prompt,
)
from adapters.llm.local_vision import ProjectorError, mtmd_available, new_marker
from adapters.llm.local_worker import acquire, unload_all, worker_events
from adapters.llm.tool_markup import ToolCallParser
from core.errors import (
    BackendBusy,
    BackendError,
    BackendUnavailable,
    ConfigError,
)
from core.lifecycle import Lifecycle
from core.types import (
    BackendEvent,
    CompletionRequest,
    Finish,
    QueuePosition,
    TextDelta,
    Usage,
)

_log = logging.getLogger(__name__)
_SHORT_TEXT: Final = 4096  # count tokens of shorter texts on the loop: it takes microseconds


class LocalBackend:
    """:class:`core.ports.LLMBackend` running GGUF models in-process with llama-cpp-python.

    Built by the composition root from :class:`LocalSettings`; ``default_path`` is the model
    used when neither ``LOCAL_MODEL_PATH`` nor ``LOCAL_MODELS`` is set (the bundled SmolLM2,
    see :func:`default_model_path`).

    Lifecycle: ``start()`` validates every configured file (exists, readable, GGUF magic and
    header) and that the default model fits in memory, then loads it; it raises
    :class:`ConfigError` naming ``LOCAL_MODEL_PATH`` or ``LOCAL_MODELS`` otherwise.
    ``aclose()`` cancels waiting and running generations and frees the models. Both are
    idempotent; other calls raise ``RuntimeError`` before ``start()`` or after ``aclose()``.
    """

    def __init__(self, settings: LocalSettings, *, default_path: Path | None = None) -> None:
        self._settings = settings
        self._table = configured_models(settings, default_path)
        self._specs: dict[str, ModelSpec] = {}
        self._vocabs: dict[str, Vocab] = {}
        self._vocab_locks: dict[str, asyncio.Lock] = {}
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # worker thread only
        self._executor: ThreadPoolExecutor | None = None
        self._state = Lifecycle.NEW  # NEW -> RUNNING -> CLOSED; _start_lock orders starts
        self._start_lock = asyncio.Lock()
        # The line: up to LOCAL_PARALLEL generations run; others wait in ``_waiters`` in
        # arrival order, each handed a place when a generation ends.
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._batcher: Batcher | None = None
        self._jobs: set[Job] = set()
        self._mmproj = settings.mmproj_path.expanduser() if settings.mmproj_path else None
        self._mmproj_size = 0
        self._marker = new_marker()  # where an image goes in a prompt (LOCAL_MMPROJ_PATH)

    # --- configuration ----------------------------------------------------------------

    def _context_for(self, info: GGUFInfo) -> int:
        if self._settings.context is not None:
            return self._settings.context
        return min(info.context_length or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)

    def _inspect(self, name: str) -> ModelSpec:
        """Read and check ``name``'s file; raise ``GGUFError`` with one line if unusable."""
        path, variable = self._table[name]
        info = read_gguf_info(path)
        mmproj = self._mmproj if name == self.default_model else None
        return ModelSpec(name, path, variable, info, self._context_for(info), mmproj)

    def _check_memory(self, spec: ModelSpec) -> None:
        parallel = self._settings.parallel
        need = spec.info.memory_needed(parallel * spec.n_ctx, gpu_layers=self._settings.gpu_layers)
        if spec.mmproj is not None:
            need += self._mmproj_size
        have = available_memory()
        loaded = [s for n, s in self._specs.items() if n in self._loaded and n != spec.name]
        # Models we would unload to make room give their memory back.
        if len(loaded) >= self._settings.max_loaded:
            have = None if have is None else have + loaded[0].info.file_size
        if have is not None and need > have:
            contexts = f"a {spec.n_ctx}-token context"
            if parallel > 1:
                contexts = f"{parallel} conversations of {spec.n_ctx} tokens (LOCAL_PARALLEL)"
            reason = (
                f"it needs about {need / 2**30:.1f} GiB of memory with {contexts} "
                f"but only {have / 2**30:.1f} GiB is available"
            )
            lower = "LOCAL_PARALLEL or LOCAL_CONTEXT" if parallel > 1 else "LOCAL_CONTEXT"
            raise GGUFError(
                f"{spec.path}: {reason} (set {lower} lower or use a smaller quantisation)",
                reason=reason,
            )

    @property
    def busy(self) -> bool:
        """Whether a generation runs or waits now (for health checks and tests)."""
        return self._active > 0 or bool(self._waiters)

    # --- port: metadata -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """``"local"``."""
        return "local"

    @property
    def default_model(self) -> str:
        """The first configured model (``LOCAL_MODEL_PATH``'s stem, or the first pair)."""
        return next(iter(self._table))

    def models(self) -> Sequence[str]:
        """Every configured model name, the default first."""
        return list(self._table)

    def context_window(self, model: str) -> int:
        """Each conversation's context (``LOCAL_CONTEXT`` or the model's own, at most 8192)."""
        spec = self._specs.get(model) or self._specs.get(self.default_model)
        if spec is None:
            return self._settings.context or DEFAULT_CONTEXT_CAP
        return spec.n_ctx

    def tokenizer_name(self, model: str) -> str:
        """``gguf:<file name>``: counts are exact for that file's vocabulary."""
        path, _ = self._table.get(model, self._table[self.default_model])
        return f"gguf:{path.name}"

    def message_overhead(self, model: str) -> int:
        """Tokens the chat template adds per message (measured on the model's template)."""
        vocab = self._vocabs.get(model)
        return vocab.overhead if vocab is not None else 8

    async def count_tokens(self, text: str, model: str) -> int:
        """Exact token count of ``text`` with ``model``'s own vocabulary."""
        self._require_started()
        vocab = await self._vocab(self._known(model))
        if len(text) <= _SHORT_TEXT:
            return vocab.count(text)
        return await asyncio.to_thread(vocab.count, text)

    def _known(self, model: str) -> str:
        return model if model in self._table else self.default_model

    async def _vocab(self, model: str) -> Vocab:
        vocab = self._vocabs.get(model)
        if vocab is not None:
            return vocab
        lock = self._vocab_locks.setdefault(model, asyncio.Lock())
        async with lock:
            vocab = self._vocabs.get(model)
            if vocab is None:
                path, _ = self._table[model]
                vocab = await asyncio.to_thread(load_vocab, path)
                self._vocabs[model] = vocab
        return vocab

    def supports_images(self, model: str) -> bool:
        """Whether ``model`` sees images: the default model, when ``LOCAL_MMPROJ_PATH`` is set.

        The projector belongs to one model (it is made for that model's embeddings); other
        ``LOCAL_MODELS`` are text-only.
        """
        return self._mmproj is not None and self._known(model) == self.default_model

    def supports_tools(self, model: str) -> bool:
        """Whether ``model`` is offered tools: its chat template handles them (``LOCAL_TOOLS``).

        ``auto``: only a model whose GGUF chat template reads ``tools`` (the bundled
        SmolLM2-135M's does not); ``on``: every model; ``off``: none. Its calls, written as
        ``<tool_call>`` or ``<function=...>`` text, are parsed while the reply streams.
        """
        return self._tool_prompt(model) is not ToolPrompt.NONE

    def _tool_prompt(self, model: str) -> ToolPrompt:
        spec = self._specs.get(self._known(model))
        template = spec.info.chat_template if spec is not None else None
        return tool_prompt(self._settings.tools, template)

    async def check_model(self, model: str) -> None:
        """Refuse a ``/model`` switch to a model that cannot run, with a clear message.

        Raises:
            BackendError: unknown name, or a file that is missing, not GGUF, or too large
                for the memory available now.
        """
        self._require_started()
        if model not in self._table:
            err = BackendError(f"unknown local model {model!r}")
            err.user_message = (
                f"There is no model called {model!r}. Available: {', '.join(self._table)}."
            )
            raise err
        try:
            spec = await asyncio.to_thread(self._inspect, model)
            self._check_memory(spec)
        except GGUFError as exc:
            err = BackendError(str(exc))
            err.user_message = f"The model {model!r} cannot be used: {_short(exc)}"
            raise err from exc
        self._specs[model] = spec
        await self._vocab(model)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Check every configured file and load the default model. Idempotent.

        Raises:
            ConfigError: naming ``LOCAL_MODEL_PATH``/``LOCAL_MODELS`` for a file that is
                missing, unreadable, not GGUF or too large for memory, or when
                llama-cpp-python is not installed (naming ``LLM_BACKEND``).
            RuntimeError: after ``aclose()``.
        """
        async with self._start_lock:
            if not self._state.require_startable("LocalBackend"):
                return
            reason = local_backend_available()
            if reason is not None:
                raise ConfigError(
                    "LLM_BACKEND", f"cannot use the local backend: {reason}", "openai"
                )
            if self._mmproj is not None:
                await self._check_projector(self._mmproj)
            for name, (_, variable) in self._table.items():
                try:
                    spec = await asyncio.to_thread(self._inspect, name)
                    if name == self.default_model:
                        self._check_memory(spec)
                except GGUFError as exc:
                    raise ConfigError(variable, str(exc), _example(variable)) from exc
                self._specs[name] = spec
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chinwag-llama")
            self._executor = executor
            self._batcher = Batcher(lambda task: executor.submit(task), self._acquire, self._loaded)
            default = self._specs[self.default_model]
            started = time.perf_counter()
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._acquire, default
                )
                await self._vocab(default.name)
            except BackendError as exc:
                await self._shutdown_executor()
                variable = default.variable
                if isinstance(exc.__cause__, ProjectorError):
                    variable = "LOCAL_MMPROJ_PATH"
                raise ConfigError(variable, str(exc), _example(variable)) from exc
            _log.info(
                "local model %s loaded from %s (%d conversations of %d tokens) in %.1fs",
                default.name,
                default.path,
                self._settings.parallel,
                default.n_ctx,
                time.perf_counter() - started,
            )
            self._state = Lifecycle.RUNNING

    async def _check_projector(self, path: Path) -> None:
        """Refuse a ``LOCAL_MMPROJ_PATH`` this build or file cannot serve, naming it."""
        reason = mtmd_available()
        if reason is not None:
            raise ConfigError("LOCAL_MMPROJ_PATH", f"cannot show images: {reason}", "")
        try:
            self._mmproj_size = await asyncio.to_thread(check_projector, path)
        except GGUFError as exc:
            raise ConfigError("LOCAL_MMPROJ_PATH", str(exc), _example("LOCAL_MMPROJ_PATH")) from exc

    async def aclose(self) -> None:
        """Cancel waiting and running generations, unload every model. Idempotent."""
        if self._state is Lifecycle.CLOSED:
            return
        self._state = Lifecycle.CLOSED
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(BackendUnavailable("the local backend is shutting down"))
        for job in self._jobs:
            job.cancel.set()  # the serving loop ends them at its next step, then stops
        self._batcher = None
        await self._shutdown_executor()
        for vocab in self._vocabs.values():
            vocab.close()
        self._vocabs.clear()

    async def _shutdown_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # Runs after the serving loop (which ends when its runs are cancelled): FIFO executor.
        await asyncio.get_running_loop().run_in_executor(executor, unload_all, self._loaded)
        await asyncio.to_thread(executor.shutdown, wait=True)

    def _require_started(self) -> None:
        self._state.require_running("LocalBackend")

    # --- worker thread (see local_worker) ------------------------------------------------

    def _acquire(
        self, spec: ModelSpec, busy: Callable[[LoadedModel], bool] = lambda _: False
    ) -> LoadedModel | None:
        """The loaded model for ``spec``, loading it (LRU eviction) if needed. Worker only.

        ``None`` while every loaded model is ``busy`` and none may be unloaded for it.
        """
        return acquire(self._loaded, spec, self._settings, self._marker, busy)

    # --- port: generation ---------------------------------------------------------------

    async def stream(self, request: CompletionRequest) -> AsyncIterator[BackendEvent]:
        """Stream a reply: maybe one ``QueuePosition``, text deltas, ``Finish``, ``Usage``.

        Without ``request.max_tokens`` the reply stops at half the model's context (and
        always where the context is full); a reply stopped so ends with ``Finish("length")``.

        ``request.tools`` reach a model that :meth:`supports_tools` (others never see
        them); its calls come out as ``ToolCallDelta`` (ids ``call_<n>``), one per call,
        and ``Finish("tool_calls")``. Markup that does not parse stays text.

        Raises:
            BackendBusy: the line is full (``LOCAL_QUEUE_SIZE`` requests already wait).
            ContextTooLong: the rendered prompt does not fit the model's context.
            BackendUnavailable: unknown model, a model that fails to load, or shutdown.
            BackendError: the generation failed.
        """
        self._require_started()
        spec = self._specs.get(request.model)
        if spec is None:
            if request.model not in self._table:
                raise BackendUnavailable(f"unknown local model {request.model!r}")
            try:
                spec = await asyncio.to_thread(self._inspect, request.model)
            except GGUFError as exc:
                raise BackendUnavailable(str(exc)) from exc
            self._specs[spec.name] = spec
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] | None = None
        owner = False
        left: asyncio.Future[None] | None = None
        job: Job | None = None
        try:
            if self._active < self._settings.parallel and not self._waiters:
                self._active += 1
                owner = True
            else:
                if len(self._waiters) >= self._settings.queue_size:
                    raise BackendBusy(
                        f"{len(self._waiters)} requests already wait for the local model"
                    )
                waiter = loop.create_future()
                self._waiters.append(waiter)
                yield QueuePosition(len(self._waiters))
                await waiter
                owner = True
            batcher = self._batcher
            if batcher is None or self._executor is None:
                raise BackendUnavailable("the local backend is shutting down")
            events, emit = worker_events(loop)
            left = loop.create_future()
            mode = self._tool_prompt(spec.name)
            offered = list(request.tools) if mode is not ToolPrompt.NONE else []
            parser = ToolCallParser({t.name: t.parameters for t in offered}) if offered else None
            marker = self._marker if spec.mmproj is not None else None
            job = Job(
                spec=spec,
                messages=chat_dicts(request.messages, mode, offered, image_marker=marker),
                images=prompt_images(request.messages) if marker is not None else (),
                tools=tool_dicts(offered) if offered and mode is ToolPrompt.TEMPLATE else None,
                temperature=(
                    DEFAULT_TEMPERATURE if request.temperature is None else request.temperature
                ),
                max_tokens=request.max_tokens,
                emit=emit,
                done=_resolver(loop, left),
            )
            self._jobs.add(job)
            batcher.submit(job)
            while True:
                item = await events.get()
                if item is END:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, TextDelta | Finish | Usage)
                if parser is None:
                    yield item
                    continue
                for event in parsed_events(parser, item):
                    yield event
        finally:
            if job is not None:
                job.cancel.set()
                self._jobs.discard(job)
            if left is not None and job is not None and not left.done():
                # Wait for the worker to let go (within a step), so the place this request
                # hands on is a free sequence; a second cancellation still propagates.
                await asyncio.shield(left)
            if waiter is not None and not waiter.done():
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            elif waiter is not None and not waiter.cancelled() and waiter.exception() is None:
                owner = True
            if owner:
                self._hand_over()

    def _hand_over(self) -> None:
        """Pass a finished generation's place to the next waiter in line, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1


def _resolver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> Callable[[], None]:
    """A callable for the worker thread that resolves ``future`` on ``loop`` (once)."""

    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    def call() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(resolve)

    return call


def _short(exc: GGUFError) -> str:
    """The reason for a chat user: without the file's path, which is the operator's business."""
    return exc.reason


def _example(variable: str) -> str:
    key = {"LOCAL_MODELS": "models", "LOCAL_MMPROJ_PATH": "mmproj_path"}.get(variable, "model_path")
    return LocalSettings.EXAMPLES[key]


__all__ = [
    "DEFAULT_CONTEXT_CAP",
    "DEFAULT_TEMPERATURE",
    "LocalBackend",
    "LocalSettings",
    "default_model_path",
    "local_backend_available",
    "reply_limit",
]
