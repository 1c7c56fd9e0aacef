"""Doctor's model checks: the LLM, the local vision projector and speech to text.

The LLM: an OpenAI-compatible server lists the model, or the local GGUF model loads, and its
vision projector (``LOCAL_MMPROJ_PATH``) with it. Speech to text: the server answers, takes
the key and lists ``STT_MODEL``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Final

from adapters.llm.local_settings import LocalSettings, default_model_path, local_backend_available
from bots.doctor.check import Check
from core.errors import ChinwagError, ConfigError
from core.settings import LLMSettings

_log = logging.getLogger(__name__)

CONTAINER_HINT: Final = (
    "start the server; if it runs on the host: inside a container, localhost is the "
    "container itself, so reach the host's server "
    "(Ollama) at http://host.containers.internal:11434/v1 (podman) or "
    "http://host.docker.internal:11434/v1 (Docker)"
)
STT_CONTAINER_HINT: Final = (
    "start the speech-to-text server; if it runs on the host: inside a container, localhost "
    "is the container itself, so put host.containers.internal (podman) or "
    "host.docker.internal (Docker) in STT_BASE_URL"
)


def in_container() -> bool:
    """Whether chinwag runs inside a container (Docker's or podman's marker file exists)."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def openai_configured(openai: Any) -> bool:
    """Whether an OpenAI-compatible server is configured (a key or a base URL)."""
    return openai.api_key is not None or openai.base_url is not None


def listed(models: list[str], limit: int = 5) -> str:
    """The first few model names, for a message: ``a, b (and 3 more)``."""
    shown = ", ".join(models[:limit])
    more = len(models) - limit
    return f"{shown} (and {more} more)" if more > 0 else shown or "none"


async def check_llm(
    llm: LLMSettings, openai: Any, local: LocalSettings, limit: float
) -> list[Check]:
    """The LLM's line (the server's or the local model's), and the projector's."""
    choice = llm.backend
    unused = []
    if local.mmproj_path is not None:
        unused.append(
            Check(
                "skip",
                PROJECTOR,
                "LOCAL_MMPROJ_PATH is set, but the LLM is the OpenAI-compatible server: "
                "the local backend and its projector are not used",
            )
        )
    if choice == "openai" and not openai_configured(openai):
        fail = Check(
            "FAIL",
            "LLM",
            "LLM_BACKEND=openai but neither OPENAI_API_KEY nor OPENAI_BASE_URL is set",
            "set OPENAI_API_KEY=sk-... or OPENAI_BASE_URL=http://localhost:11434/v1",
        )
        return [fail, *unused]
    if choice == "openai" or (choice is None and openai_configured(openai)):
        return [await _check_openai(openai, limit), *unused]
    return await _check_local(local)


async def _check_openai(openai: Any, limit: float) -> Check:
    from adapters.llm.probe import has_model, is_loopback_url, list_models, wanted_model
    from core.errors import BackendUnavailable

    started = time.perf_counter()
    try:
        listing = await list_models(openai, limit=limit)
    except ConfigError as exc:
        return Check("FAIL", "LLM", str(exc), f"set {exc.variable} to a key the server accepts")
    except BackendUnavailable as exc:
        fix = "start the server, or correct OPENAI_BASE_URL"
        if openai.base_url and is_loopback_url(openai.base_url) and in_container():
            fix = CONTAINER_HINT
        return Check("FAIL", "LLM", str(exc), fix)
    except ChinwagError as exc:
        return Check("FAIL", "LLM", str(exc), "check OPENAI_BASE_URL and the server's log")
    took = time.perf_counter() - started
    model = wanted_model(openai)
    if listing.models is None:
        return Check(
            "warn",
            "LLM",
            f"{listing.url} answers but lists no models (HTTP 404 for /models), so "
            f"{model or 'the model'} cannot be checked",
            "send one message with `chinwag chat` to try it",
        )
    if model is None:
        if not listing.models:
            return Check(
                "FAIL",
                "LLM",
                f"OPENAI_MODEL is unset and {listing.url} lists no models",
                "load or pull a model on the server, or set OPENAI_MODEL",
            )
        return Check(
            "ok",
            "LLM",
            f"{listing.url} answers in {took:.2f}s; OPENAI_MODEL is unset: using "
            f"{listing.models[0]}, the server's first",
        )
    if not has_model(listing.models, model):
        return Check(
            "FAIL",
            "LLM",
            f"{listing.url} has no model {model!r}; it has {listed(listing.models)}",
            "set OPENAI_MODEL to one of those (or load the model on the server: "
            f"`ollama pull {model}`)",
        )
    missing = [m for m in openai.allowed_models if not has_model(listing.models, m)]
    if missing:
        return Check(
            "warn",
            "LLM",
            f"{listing.url} has {model} but not {', '.join(missing)} (OPENAI_ALLOWED_MODELS)",
            "remove them from OPENAI_ALLOWED_MODELS or load them on the server; it has "
            f"{listed(listing.models)}",
        )
    return Check("ok", "LLM", f"{listing.url} answers in {took:.2f}s and has {model}")


async def _check_local(local: LocalSettings) -> list[Check]:
    from adapters.llm.probe import load_local_model
    from core.errors import BackendUnavailable

    reason = local_backend_available()
    try:
        table = local.model_table()
    except ConfigError as exc:
        return [Check("FAIL", "LLM", str(exc), f"correct {exc.variable}")]
    models: list[tuple[str, Path]] = []
    if local.model_path is not None:
        models.append(("LOCAL_MODEL_PATH", local.model_path.expanduser()))
    models.extend(("LOCAL_MODELS", path) for path in table.values())
    if not models:
        bundled = default_model_path()
        if bundled is None:
            fail = Check(
                "FAIL",
                "LLM",
                "no language model is configured (no OpenAI-compatible server, no local model)",
                "set OPENAI_BASE_URL (or OPENAI_API_KEY), or LOCAL_MODEL_PATH to a .gguf file",
            )
            return [fail, *_projector_unloaded(local)]
        models.append(("the bundled model", bundled))
    variable, path = models[0]  # the default model: the projector is made for it
    projector = _check_projector_file(local, path)
    if reason is not None:
        fail = Check(
            "FAIL",
            "LLM",
            f"the local backend cannot run: {reason}",
            "install it, or configure an OpenAI-compatible server (OPENAI_BASE_URL)",
        )
        return [fail, *_projector_unloaded(local, projector)]
    for other, other_path in models:
        if not other_path.is_file():
            fail = Check("FAIL", "LLM", f"{other}: no file at {other_path}", f"correct {other}")
            return [fail, *_projector_unloaded(local, projector)]
    mmproj = local.mmproj_path.expanduser() if local.mmproj_path and not projector else None
    try:
        loaded = await load_local_model(path, gpu_layers=local.gpu_layers, mmproj=mmproj)
    except BackendUnavailable as exc:
        fail = Check("FAIL", "LLM", str(exc), f"point {variable} at a GGUF model file")
        return [fail, *_projector_unloaded(local, projector)]
    checks = [Check("ok", "LLM", f"local model {path.name} loads ({loaded.seconds:.1f}s)")]
    if projector is not None:
        return [*checks, projector]
    if mmproj is None:
        return [*checks, *_projector_unloaded(local)]
    if loaded.projector_problem is not None:
        fix = (
            f"point LOCAL_MMPROJ_PATH at the mmproj file made for {path.name}, or {variable} "
            "at the model this projector was made for"
        )
        return [*checks, Check("FAIL", PROJECTOR, loaded.projector_problem, fix)]
    took = loaded.projector_seconds or 0.0
    return [
        *checks,
        Check(
            "ok",
            PROJECTOR,
            f"LOCAL_MMPROJ_PATH {mmproj.name} loads with {path.name} ({took:.1f}s): the local "
            "model sees photos",
        ),
    ]


PROJECTOR: Final = "projector"
"""The name of the local backend's vision projector check (``LOCAL_MMPROJ_PATH``)."""


def _check_projector_file(local: LocalSettings, model: Path) -> Check | None:
    """The FAIL line of a ``LOCAL_MMPROJ_PATH`` that cannot serve, else ``None``.

    It cannot when this build lacks mtmd or the file is not a vision projector; ``None`` when
    it is unset or passes (loading it with the model comes next).
    """
    if local.mmproj_path is None:
        return None
    from adapters.llm.local_gguf import GGUFError, check_projector
    from adapters.llm.local_vision import mtmd_available

    reason = mtmd_available()
    if reason is not None:
        cause = reason.split(";", 1)[0]
        return Check(
            "FAIL",
            PROJECTOR,
            f"LOCAL_MMPROJ_PATH is set, but photos cannot be shown to the model: {cause}",
            "rebuild llama-cpp-python with its multimodal library (`make install-local`), "
            "or unset LOCAL_MMPROJ_PATH",
        )
    try:
        check_projector(local.mmproj_path.expanduser())
    except GGUFError as exc:
        _log.debug("projector check failed", exc_info=True)
        return Check(
            "FAIL",
            PROJECTOR,
            f"LOCAL_MMPROJ_PATH: {exc}",
            f"point LOCAL_MMPROJ_PATH at the mmproj GGUF made for {model.name}",
        )
    return None


def _projector_unloaded(local: LocalSettings, failed: Check | None = None) -> list[Check]:
    """The projector's line when the model was not loaded (or has no projector)."""
    if failed is not None:
        return [failed]
    if local.mmproj_path is None:
        return [
            Check(
                "skip",
                PROJECTOR,
                "not configured (LOCAL_MMPROJ_PATH is unset): the local model does not see photos",
            )
        ]
    return [
        Check(
            "skip",
            PROJECTOR,
            f"LOCAL_MMPROJ_PATH {local.mmproj_path.name} is a vision projector; not loaded: fix "
            "the LLM line first",
        )
    ]


# --- speech to text -----------------------------------------------------------------------


async def check_stt(stt: Any, openai: Any, limit: float) -> Check:
    """The speech-to-text line."""
    from adapters.llm.probe import has_model, is_loopback_url, list_stt_models
    from adapters.llm.stt import stt_configured
    from core.errors import BackendUnavailable

    what = "speech to text"
    if not stt_configured(stt, openai):
        return Check(
            "skip",
            what,
            "not configured: voice notes get a sentence saying so; set STT_BASE_URL to a "
            "whisper server (or OPENAI_API_KEY, for OpenAI's) to transcribe them",
        )
    started = time.perf_counter()
    try:
        listing = await list_stt_models(stt, openai, limit=limit)
    except ConfigError as exc:
        fix = "set STT_API_KEY to a key the speech-to-text server accepts"
        if stt.api_key is None and openai.api_key is not None:
            fix += " (STT_API_KEY is unset, so OPENAI_API_KEY was sent)"
        return Check("FAIL", what, str(exc), fix)
    except BackendUnavailable as exc:
        fix = "start the speech-to-text server, or correct STT_BASE_URL"
        if stt.base_url and is_loopback_url(stt.base_url) and in_container():
            fix = STT_CONTAINER_HINT
        return Check("FAIL", what, str(exc), fix)
    except ChinwagError as exc:
        return Check("FAIL", what, str(exc), "check STT_BASE_URL and the server's log")
    took = time.perf_counter() - started
    if not listing.models:
        return Check(
            "ok",
            what,
            f"{listing.url} reachable in {took:.2f}s; model list not offered, so STT_MODEL "
            f"{stt.model} is tried with the first voice note",
        )
    if not has_model(listing.models, stt.model):
        return Check(
            "FAIL",
            what,
            f"{listing.url} has no model {stt.model!r} (STT_MODEL); it has "
            f"{listed(listing.models)}",
            "set STT_MODEL to its speech-to-text model (or install that model on the server)",
        )
    return Check("ok", what, f"{listing.url} answers in {took:.2f}s and has {stt.model}")
