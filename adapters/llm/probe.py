"""Ask an LLM backend whether it can serve, without generating anything.

Used by ``chinwag doctor`` and by the checks ``chinwag run`` makes at start:
:func:`list_models` asks an OpenAI-compatible server ``GET /v1/models`` through the openai
client; :func:`load_local_model` loads a GGUF file with llama-cpp-python on a thread.
Vendor errors become chinwag's: a refused key is a :class:`~core.errors.ConfigError`, a
server that cannot be reached :class:`~core.errors.BackendUnavailable`, another answer
:class:`~core.errors.BackendError`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import openai

from adapters.llm.openai_server import masked_url
from adapters.llm.openai_wire import (
    OPENAI_BASE_URL,
    OPENAI_DEFAULT_MODEL,
    PLACEHOLDER_API_KEY,
    OpenAISettings,
    describe_error,
)
from core.errors import BackendError, BackendUnavailable, ConfigError

__all__ = [
    "ModelListing",
    "has_model",
    "is_loopback_url",
    "list_models",
    "load_local_model",
    "wanted_model",
]


@dataclass(frozen=True, slots=True)
class ModelListing:
    """What an OpenAI-compatible server answered to ``GET /v1/models``.

    Attributes:
        url: the API root, password masked (safe to print).
        models: the model ids listed, in the server's order; ``None`` when the server has no
            listing (HTTP 404: some proxies only forward chat completions).
    """

    url: str
    models: list[str] | None


def wanted_model(settings: OpenAISettings) -> str | None:
    """The model chinwag will ask for: ``OPENAI_MODEL``, else OpenAI's default on api.openai.com.

    ``None`` for another server without ``OPENAI_MODEL`` (the server's first model is used).
    """
    if settings.model:
        return settings.model
    return OPENAI_DEFAULT_MODEL if settings.base_url is None else None


def has_model(listed: list[str], model: str) -> bool:
    """Whether ``model`` is among ``listed``; Ollama lists ``name:latest`` for ``name``."""
    return model in listed or (":" not in model and f"{model}:latest" in listed)


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this host (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


async def list_models(settings: OpenAISettings, *, limit: float) -> ModelListing:
    """The models the server of ``settings`` lists, within ``limit`` seconds.

    Raises:
        ConfigError: the server refused ``OPENAI_API_KEY`` (HTTP 401 or 403).
        BackendUnavailable: the server cannot be reached, or did not answer in time.
        BackendError: the server answered the listing with another error.
    """
    base_url = settings.base_url or OPENAI_BASE_URL
    shown = masked_url(base_url)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    client = openai.AsyncOpenAI(
        api_key=key or PLACEHOLDER_API_KEY, base_url=base_url, timeout=limit, max_retries=0
    )
    try:
        async with asyncio.timeout(limit):
            page = await client.models.list()
        return ModelListing(shown, [model.id for model in page.data])
    except openai.AuthenticationError as exc:
        raise ConfigError(
            "OPENAI_API_KEY",
            f"was refused by {shown} ({describe_error(exc)})",
            OpenAISettings.EXAMPLES["api_key"],
        ) from exc
    except openai.PermissionDeniedError as exc:
        raise ConfigError(
            "OPENAI_API_KEY",
            f"may not list models at {shown} ({describe_error(exc)})",
            OpenAISettings.EXAMPLES["api_key"],
        ) from exc
    except openai.NotFoundError:
        return ModelListing(shown, None)
    except openai.APIStatusError as exc:
        raise BackendError(f"{shown} answered GET /models with {describe_error(exc)}") from exc
    except (openai.APIConnectionError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError | openai.APITimeoutError):
            cause = f"no answer within {limit:g}s"
        else:
            cause = _root_cause(exc)
        raise BackendUnavailable(f"cannot reach {shown} ({cause})") from exc
    finally:
        await client.close()


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's text (``[Errno 111] Connection refused``), not the wrapper's."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _load(path: Path, gpu_layers: int) -> None:
    import llama_cpp

    model = llama_cpp.Llama(str(path), n_ctx=256, n_gpu_layers=gpu_layers, verbose=False)
    model.close()


async def load_local_model(path: Path, *, gpu_layers: int = 0) -> float:
    """Load the GGUF model at ``path`` on a thread and free it again; the seconds it took.

    Raises:
        BackendUnavailable: llama-cpp-python is missing, or it cannot load the file.
    """
    started = time.perf_counter()
    try:
        await asyncio.to_thread(_load, path, gpu_layers)
    except ImportError as exc:
        raise BackendUnavailable("llama-cpp-python is not installed") from exc
    except (ValueError, RuntimeError, OSError) as exc:
        raise BackendUnavailable(f"llama.cpp cannot load {path}: {exc}") from exc
    return time.perf_counter() - started
