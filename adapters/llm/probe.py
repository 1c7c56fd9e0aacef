"""Ask an LLM backend whether it can serve, without generating anything.

Used by ``chinwag doctor`` and by the checks ``chinwag run`` makes at start:
:func:`list_models` asks an OpenAI-compatible server ``GET /v1/models`` through the openai
client (:func:`list_stt_models` the speech-to-text server); :func:`load_local_model` loads a
GGUF file, and its vision projector, with llama-cpp-python on a thread.
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
from pydantic import SecretStr

from adapters.llm.openai_server import masked_url
from adapters.llm.openai_wire import (
    OPENAI_BASE_URL,
    OPENAI_DEFAULT_MODEL,
    PLACEHOLDER_API_KEY,
    OpenAISettings,
    describe_error,
)
from adapters.llm.stt import STTSettings
from core.errors import BackendError, BackendUnavailable, ConfigError

__all__ = [
    "LocalLoad",
    "ModelListing",
    "has_model",
    "is_loopback_url",
    "list_models",
    "list_stt_models",
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
    return await _list_models(
        settings.base_url or OPENAI_BASE_URL,
        settings.api_key,
        limit=limit,
        variable="OPENAI_API_KEY",
        example=OpenAISettings.EXAMPLES["api_key"],
    )


async def list_stt_models(
    stt: STTSettings, openai_settings: OpenAISettings, *, limit: float
) -> ModelListing:
    """The models the speech-to-text server lists (``STT_BASE_URL``, else api.openai.com).

    The key sent is the transcriber's: ``STT_API_KEY``, else ``OPENAI_API_KEY``.

    Raises:
        ConfigError: naming ``STT_API_KEY`` when the server refused the key.
        BackendUnavailable: the server cannot be reached, or did not answer in time.
        BackendError: the server answered the listing with another error.
    """
    return await _list_models(
        stt.base_url or OPENAI_BASE_URL,
        stt.api_key or openai_settings.api_key,
        limit=limit,
        variable="STT_API_KEY",
        example=STTSettings.EXAMPLES["api_key"],
    )


async def _list_models(
    base_url: str, api_key: SecretStr | None, *, limit: float, variable: str, example: str
) -> ModelListing:
    shown = masked_url(base_url)
    key = api_key.get_secret_value() if api_key else None
    client = openai.AsyncOpenAI(
        api_key=key or PLACEHOLDER_API_KEY, base_url=base_url, timeout=limit, max_retries=0
    )
    try:
        async with asyncio.timeout(limit):
            page = await client.models.list()
        return ModelListing(shown, [model.id for model in page.data])
    except openai.AuthenticationError as exc:
        raise ConfigError(
            variable, f"was refused by {shown} ({describe_error(exc)})", example
        ) from exc
    except openai.PermissionDeniedError as exc:
        raise ConfigError(
            variable, f"may not list models at {shown} ({describe_error(exc)})", example
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


@dataclass(frozen=True, slots=True)
class LocalLoad:
    """How loading a local model (and its vision projector) went.

    Attributes:
        seconds: the model's load time.
        projector_seconds: the projector's load time; ``None`` when none was asked for or it
            did not load.
        projector_problem: why llama.cpp could not load the projector with this model (one
            made for another model, most often); ``None`` when it loaded or none was asked.
    """

    seconds: float
    projector_seconds: float | None = None
    projector_problem: str | None = None


def _load(path: Path, gpu_layers: int, mmproj: Path | None) -> LocalLoad:
    import llama_cpp

    started = time.perf_counter()
    model = llama_cpp.Llama(str(path), n_ctx=256, n_gpu_layers=gpu_layers, verbose=False)
    try:
        took = time.perf_counter() - started
        if mmproj is None:
            return LocalLoad(took)
        from adapters.llm.local_vision import Projector, ProjectorError, new_marker

        started = time.perf_counter()
        try:
            projector = Projector(mmproj, model, marker=new_marker(), use_gpu=gpu_layers != 0)
        except ProjectorError as exc:
            return LocalLoad(took, projector_problem=str(exc))
        projector.close()
        return LocalLoad(took, projector_seconds=time.perf_counter() - started)
    finally:
        model.close()


async def load_local_model(
    path: Path, *, gpu_layers: int = 0, mmproj: Path | None = None
) -> LocalLoad:
    """Load the GGUF model at ``path`` on a thread, and ``mmproj`` with it; free them again.

    Check ``mmproj`` with :func:`adapters.llm.local_gguf.check_projector` and
    :func:`adapters.llm.local_vision.mtmd_available` first: llama.cpp aborts the process on
    some malformed projector files.

    Raises:
        BackendUnavailable: llama-cpp-python is missing, or it cannot load the model file.
    """
    try:
        return await asyncio.to_thread(_load, path, gpu_layers, mmproj)
    except ImportError as exc:
        raise BackendUnavailable("llama-cpp-python is not installed") from exc
    except (ValueError, RuntimeError, OSError) as exc:
        raise BackendUnavailable(f"llama.cpp cannot load {path}: {exc}") from exc
