"""Speech to text through an OpenAI-compatible ``/v1/audio/transcriptions`` endpoint.

api.openai.com (``whisper-1``, ``gpt-4o-transcribe``...), or a self-hosted server that speaks
the same API (faster-whisper-server / Speaches, LocalAI, whisper.cpp's server, vLLM) at
``STT_BASE_URL``. :class:`OpenAITranscriber` is the :class:`core.media.Transcriber`;
:class:`STTSettings` and :func:`stt_configured` say whether there is one to build.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import ClassVar, Final
from urllib.parse import urlsplit

import openai
from pydantic import SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from adapters.llm.openai_wire import (
    PLACEHOLDER_API_KEY,
    OpenAISettings,
    describe_error,
    http_base_url,
    parse_retry_after,
)
from core.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    MediaError,
    RateLimited,
)
from core.lifecycle import Lifecycle
from core.media import human_size
from core.settings import ChinwagSettings

__all__ = [
    "DEFAULT_STT_MODEL",
    "OPENAI_MAX_BYTES",
    "OpenAITranscriber",
    "STTSettings",
    "stt_configured",
]

_log = logging.getLogger(__name__)

DEFAULT_STT_MODEL: Final = "whisper-1"
OPENAI_MAX_BYTES: Final = 25 * 1024 * 1024
"""api.openai.com refuses larger uploads (413); a larger file is refused before sending."""
_OPENAI_HOST: Final = "api.openai.com"
_USER_MESSAGE: Final = "I couldn't transcribe that voice message just now. Please try again."


class STTSettings(ChinwagSettings):
    """Where voice notes are transcribed (``STT_*``).

    Speech to text is on when ``STT_BASE_URL`` is set (a self-hosted whisper server), or
    when ``OPENAI_API_KEY`` is set with no ``OPENAI_BASE_URL`` (the key is OpenAI's own, so
    api.openai.com transcribes too); see :func:`stt_configured`. ``STT_API_KEY`` unset means
    ``OPENAI_API_KEY``.
    """

    model_config = SettingsConfigDict(env_prefix="STT_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "base_url": "http://localhost:8000/v1",
        "api_key": "sk-proj-...",
        "model": "whisper-1",
    }

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = DEFAULT_STT_MODEL

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_base_url(value, "http://localhost:8000/v1")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must name a model such as whisper-1")
        return value


def _is_openai(base_url: str | None) -> bool:
    return base_url is None or urlsplit(base_url).hostname == _OPENAI_HOST


def stt_configured(stt: STTSettings, openai_settings: OpenAISettings) -> bool:
    """Whether voice notes can be transcribed with these settings.

    Yes when ``STT_BASE_URL`` is set, or when there is a key for api.openai.com and the
    OpenAI settings point there (no ``OPENAI_BASE_URL``, or that URL is api.openai.com's):
    a key for another server (OpenRouter, Groq...) is never sent to OpenAI.
    """
    if stt.base_url is not None:
        return True
    has_key = stt.api_key is not None or openai_settings.api_key is not None
    return has_key and _is_openai(openai_settings.base_url)


class OpenAITranscriber:
    """A :class:`~core.media.Transcriber` over ``/v1/audio/transcriptions``.

    Args:
        model: ``STT_MODEL`` (``whisper-1``, ``gpt-4o-mini-transcribe``, or the name a
            self-hosted server knows, e.g. ``Systran/faster-whisper-small``).
        base_url: ``STT_BASE_URL``; ``None`` means api.openai.com.
        api_key: ``STT_API_KEY``, else ``OPENAI_API_KEY``; a self-hosted server takes none.
        timeout: seconds for one request (a ten-minute recording takes a while).
        max_retries: retries of a rate-limited or failed request (the client's backoff).

    The client is built here and makes no connection until the first transcription.
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_STT_MODEL,
        base_url: str | None = None,
        api_key: SecretStr | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        if timeout <= 0 or max_retries < 0:
            raise ValueError("timeout must be positive, max_retries not negative")
        self._model = model
        self._base_url = base_url
        self._secret = api_key.get_secret_value() if api_key is not None else None
        self._timeout = timeout
        self._where = urlsplit(base_url).netloc if base_url else _OPENAI_HOST
        self._client = openai.AsyncOpenAI(
            api_key=self._secret or PLACEHOLDER_API_KEY,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._state = Lifecycle.RUNNING

    @classmethod
    def from_settings(
        cls, stt: STTSettings, openai_settings: OpenAISettings, *, timeout: float = 120.0
    ) -> OpenAITranscriber:
        """The transcriber these settings describe (check :func:`stt_configured` first)."""
        return cls(
            model=stt.model,
            base_url=stt.base_url,
            api_key=stt.api_key or openai_settings.api_key,
            timeout=timeout,
        )

    @property
    def model(self) -> str:
        """The speech-to-text model asked for."""
        return self._model

    @property
    def where(self) -> str:
        """The server's host (and port) for the log; never a key or a password."""
        return self._where.rsplit("@", 1)[-1]

    async def transcribe(self, path: Path, name: str, mime_type: str | None) -> str:
        """The words spoken in the audio file at ``path`` (stripped; empty when silent).

        ``name`` is sent as the upload's file name: servers tell the format by its
        extension (Telegram's voice notes are ``.oga``, which OpenAI takes).

        Raises:
            MediaError: the file is over the server's size limit (25 MB for OpenAI, checked
                before uploading) or in a format it refuses.
            BackendTimeout: no answer within the timeout.
            RateLimited: the server said 429 after the client's retries.
            BackendUnavailable: unreachable, a 5xx after the retries, or the key refused.
            BackendError: any other refusal.
            RuntimeError: after :meth:`aclose`.
        """
        self._state.require_running("OpenAITranscriber")
        shown = name or path.name
        size = (await asyncio.to_thread(path.stat)).st_size
        if _is_openai(self._base_url) and size > OPENAI_MAX_BYTES:
            raise MediaError(
                f"{shown} is too large to transcribe ({human_size(size)}; the limit is "
                f"{human_size(OPENAI_MAX_BYTES)})."
            )
        data = await asyncio.to_thread(path.read_bytes)
        upload = (name or path.name, data, mime_type or "application/octet-stream")
        try:
            result = await self._client.audio.transcriptions.create(
                file=upload, model=self._model, response_format="json"
            )
        except openai.OpenAIError as exc:
            raise self._translate(exc, shown) from exc
        text = str(getattr(result, "text", "") or "")
        _log.debug("transcribed %s (%d bytes) into %d characters", shown, size, len(text))
        return text.strip()

    async def aclose(self) -> None:
        """Close the client's connections; idempotent."""
        if self._state is Lifecycle.CLOSED:
            return
        self._state = Lifecycle.CLOSED
        await self._client.close()

    def _translate(self, exc: openai.OpenAIError, shown: str) -> BackendError | MediaError:
        """The one place where ``openai`` exceptions of a transcription become ``core.errors``."""
        detail = self._redact(describe_error(exc))
        err: BackendError
        if isinstance(exc, openai.APITimeoutError):
            err = BackendTimeout(self._timeout, f"speech to text: no answer in {self._timeout:g}s")
        elif isinstance(exc, openai.APIConnectionError):
            err = BackendUnavailable(f"speech to text: connection to {self.where} failed: {detail}")
        elif isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 413:
                return MediaError(f"{shown} is too large for the speech-to-text server.")
            if status in (400, 415) and _about_the_file(exc):
                return MediaError(
                    f"The speech-to-text server couldn't read {shown} (an audio format it "
                    "doesn't take, or a damaged file)."
                )
            if status in (401, 403):
                _log.error(
                    "the speech-to-text server at %s refused the API key (HTTP %d); check "
                    "STT_API_KEY (or OPENAI_API_KEY)",
                    self.where,
                    status,
                )
                err = BackendUnavailable(f"speech to text: API key refused by {self.where}")
            elif status == 429:
                retry_after = parse_retry_after(exc.response.headers)
                err = RateLimited(retry_after, f"speech to text rate-limited: {detail}")
            elif status >= 500:
                err = BackendUnavailable(f"speech to text: server error: {detail}")
            else:
                err = BackendError(f"speech to text refused the request: {detail}")
        else:
            err = BackendError(f"speech to text: {detail}")
        err.user_message = _USER_MESSAGE
        return err

    def _redact(self, text: str) -> str:
        if self._secret and len(self._secret) >= 6:
            text = text.replace(self._secret, "[redacted]")
        return text


def _about_the_file(exc: openai.APIStatusError) -> bool:
    """Whether a 400 is the server refusing the audio itself (format, decoding, emptiness)."""
    if getattr(exc, "param", None) == "file":
        return True
    said = str(exc.message).lower()
    return any(
        word in said
        for word in ("file format", "audio file", "could not be decoded", "invalid file")
    )
