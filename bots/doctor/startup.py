"""The cheap checks ``chinwag run`` makes before it starts anything: :func:`startup_checks`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from bots.config import load
from bots.doctor.configuration import unknown_variables, variable_sources
from bots.doctor.llm import listed, openai_configured
from core.errors import ChinwagError, ConfigError
from core.settings import LLMSettings

_log = logging.getLogger(__name__)

START_TIMEOUT: Final = 3.0
"""Seconds ``chinwag run`` gives the LLM server to list its models before it starts anyway."""


async def startup_checks(env_file: Path | None, llm: LLMSettings) -> None:
    """The cheap checks ``chinwag run`` makes before it starts anything.

    Unknown variables are logged as warnings. For an OpenAI-compatible backend the model is
    looked up at ``/v1/models`` (:data:`START_TIMEOUT` seconds at most).

    Raises:
        ConfigError: the server refused ``OPENAI_API_KEY``, or does not have ``OPENAI_MODEL``.
            A server that does not answer is logged, not raised: it may start after chinwag
            (compose, systemd), and the backend retries each request.
    """
    for name, source, suggestion in unknown_variables(variable_sources(env_file)):
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        _log.warning("%s (in %s) is not a chinwag setting%s", name, source, hint)
    from adapters.llm.openai_wire import OpenAISettings

    openai = load(OpenAISettings, env_file)
    if llm.backend == "local" or not openai_configured(openai):
        return
    from adapters.llm.probe import has_model, list_models, wanted_model

    try:
        listing = await list_models(openai, limit=START_TIMEOUT)
    except ConfigError:
        raise
    except ChinwagError as exc:
        _log.warning("LLM server check: %s; starting anyway", exc)
        return
    model = wanted_model(openai)
    if model is not None and listing.models and not has_model(listing.models, model):
        raise ConfigError(
            "OPENAI_MODEL",
            f"{listing.url} has no model {model!r}; it has {listed(listing.models)}",
            listing.models[0],
        )
