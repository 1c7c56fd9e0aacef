"""What runs on the local backend's one worker thread besides generating: loading models.

:class:`adapters.llm.local.LocalBackend` owns the thread (a ``Llama`` is not thread-safe),
the line of requests and the streams; :mod:`adapters.llm.local_batch` generates. Here are
the loaded models' eviction (:func:`acquire`, :func:`unload_all`) and the hand-off of the
worker's events to the event loop (:func:`worker_events`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

from adapters.llm.local_model import LoadedModel, ModelSpec
from adapters.llm.local_settings import LocalSettings
from core.errors import BackendUnavailable

_log = logging.getLogger(__name__)


def acquire(
    models: OrderedDict[str, LoadedModel],
    spec: ModelSpec,
    settings: LocalSettings,
    marker: str,
    busy: Callable[[LoadedModel], bool] = lambda _: False,
) -> LoadedModel | None:
    """The loaded model for ``spec``, loading it if needed; ``None`` while it must wait.

    ``models`` holds the loaded models, least recently used first; the oldest that are not
    ``busy`` (serving conversations) are unloaded to keep at most ``LOCAL_MAX_LOADED``.
    ``marker`` stands for an image in a prompt.

    Raises:
        BackendUnavailable: llama.cpp could not load the file.
    """
    loaded = models.get(spec.name)
    if loaded is not None:
        models.move_to_end(spec.name)
        return loaded
    while len(models) >= settings.max_loaded:
        idle = next((name for name, model in models.items() if not busy(model)), None)
        if idle is None:
            return None
        _log.info("unloading local model %s (LOCAL_MAX_LOADED=%d)", idle, settings.max_loaded)
        models.pop(idle).close()
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


__all__ = ["acquire", "unload_all", "worker_events"]
