"""What runs on the local backend's one worker thread: loading models and generating.

:class:`adapters.llm.local.LocalBackend` owns the thread (a ``Llama`` is not thread-safe),
the line of requests and the streams; here are the loaded models' eviction
(:func:`acquire`, :func:`unload_all`), the generation loop (:func:`generate`, the one
boundary where llama.cpp's errors become ``core.errors``) and the hand-off of its events to
the event loop (:func:`worker_events`).
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

from adapters.llm.local_model import END, Job, LoadedModel, ModelSpec, reply_limit
from adapters.llm.local_settings import LocalSettings
from core.errors import BackendError, BackendUnavailable, ContextTooLong
from core.types import Finish, TextDelta, Usage

_log = logging.getLogger(__name__)


def acquire(
    models: OrderedDict[str, LoadedModel],
    spec: ModelSpec,
    settings: LocalSettings,
    marker: str,
) -> LoadedModel:
    """The loaded model for ``spec``, loading it if needed.

    ``models`` holds the loaded models, least recently used first; the oldest are unloaded
    to keep at most ``LOCAL_MAX_LOADED``. ``marker`` stands for an image in a prompt.

    Raises:
        BackendUnavailable: llama.cpp could not load the file.
    """
    loaded = models.get(spec.name)
    if loaded is not None:
        models.move_to_end(spec.name)
        return loaded
    while len(models) >= settings.max_loaded:
        old_name, old = models.popitem(last=False)
        _log.info("unloading local model %s (LOCAL_MAX_LOADED=%d)", old_name, len(models) + 1)
        old.close()
    try:
        loaded = LoadedModel(spec, settings, marker=marker)
    except (ValueError, RuntimeError, OSError) as exc:
        raise BackendUnavailable(f"llama.cpp could not load {spec.path}: {exc}") from exc
    models[spec.name] = loaded
    return loaded


def unload_all(models: OrderedDict[str, LoadedModel]) -> None:
    """Free every model in ``models``."""
    while models:
        _, loaded = models.popitem()
        loaded.close()


def generate(job: Job, load: Callable[[ModelSpec], LoadedModel]) -> None:
    """Run ``job``, emitting its events then ``END`` (or an error); never raises.

    ``load`` gives the loaded model for the job's spec (:func:`acquire`). Each token
    sampled is emitted as it comes; ``job.cancel`` stops the generation after the token
    being computed.
    """
    try:
        loaded = load(job.spec)
        n_ctx = job.spec.n_ctx
        if job.images:
            loaded.abort_on(job.cancel)
            try:
                tokens = loaded.evaluate_with_images(job.messages, job.tools, job.images)
            except RuntimeError:
                if not job.cancel.is_set():
                    raise
                job.emit(END)  # cancelled while the images were evaluated
                return
            finally:
                loaded.abort_on(None)
        else:
            tokens = loaded.render(job.messages, job.tools)
        if len(tokens) >= n_ctx:
            raise ContextTooLong(
                n_ctx, f"the prompt has {len(tokens)} tokens; the context holds {n_ctx}"
            )
        budget = reply_limit(job.max_tokens, n_ctx, len(tokens))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        llama = loaded.llama
        produced = 0
        reason = "stop"
        generator = llama.generate(tokens, temp=job.temperature, repeat_penalty=1.0)
        loaded.abort_on(job.cancel)
        try:
            for token in generator:
                if produced == 0:
                    loaded.abort_on(None)
                if job.cancel.is_set() or loaded.stops(token):
                    break
                produced += 1
                text = decoder.decode(loaded.piece(token))
                if text:
                    job.emit(TextDelta(text))
                if produced >= budget and not job.cancel.is_set():
                    reason = "length"
                    break
                if job.cancel.is_set():
                    break
        except RuntimeError:
            if not job.cancel.is_set():
                raise
            # llama_decode was aborted: llama.cpp dropped the half-evaluated batch.
        finally:
            loaded.abort_on(None)
            generator.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            job.emit(TextDelta(tail))
        job.emit(Finish(reason))
        job.emit(Usage(prompt_tokens=len(tokens), completion_tokens=produced))
        job.emit(END)
    except BackendError as exc:
        job.emit(exc)
    except Exception as exc:  # the one boundary where llama.cpp errors become ours
        _log.exception("local generation failed")
        error = BackendError(f"local generation failed: {exc}")
        error.__cause__ = exc
        job.emit(error)


def worker_events(
    loop: asyncio.AbstractEventLoop,
) -> tuple[asyncio.Queue[object], Callable[[object], None]]:
    """A queue on ``loop`` and the ``emit`` that the worker thread feeds it with.

    ``emit`` is called per token: while the loop has not yet taken what was emitted, new
    items join them without another wake-up of the loop.
    """
    events: asyncio.Queue[object] = asyncio.Queue()
    pending: deque[object] = deque()
    wake = threading.Lock()  # one wake-up of the loop in flight at a time
    scheduled = [False]

    def flush() -> None:
        with wake:
            scheduled[0] = False
            items = list(pending)
            pending.clear()
        for item in items:
            events.put_nowait(item)

    def emit(item: object) -> None:
        with wake:
            pending.append(item)
            if scheduled[0]:
                return
            scheduled[0] = True
        loop.call_soon_threadsafe(flush)

    return events, emit


__all__ = ["acquire", "generate", "unload_all", "worker_events"]
