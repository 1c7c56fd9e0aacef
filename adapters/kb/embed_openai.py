"""Embeddings from any OpenAI-compatible ``/v1/embeddings`` endpoint (``KB_EMBEDDINGS=openai``).

api.openai.com, or a local server (Ollama, llama.cpp's server, vLLM...) at
``OPENAI_BASE_URL``, with the key of ``OPENAI_API_KEY``; the model is ``KB_EMBEDDING_MODEL``
(default ``text-embedding-3-small``). The vectors' dimension is learned from the server's
first answer (``start()`` asks for one vector). Texts go in batches; the ``openai`` client
retries rate limits and server errors (honouring ``Retry-After``), and whatever still fails
becomes a :class:`~core.errors.KbError` whose line says what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Final

import openai
from pydantic import SecretStr

from core.errors import ConfigError, KbError
from core.lifecycle import Lifecycle

_log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL: Final = "text-embedding-3-small"
# Inputs per request: the real API takes 2048 and 300,000 tokens; 128 chunks of ~800
# characters stay far below both, and one slow request never holds many chunks.
BATCH_SIZE: Final = 128
_PLACEHOLDER_KEY: Final = "sk-no-key-required"  # local servers want some key, any key


def _unit(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (some local servers do not normalise)."""
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else [float(x) for x in vector]


class OpenAIEmbedder:
    """An :class:`~core.knowledge.Embedder` over an OpenAI-compatible embeddings endpoint.

    Args:
        model: the embedding model (``KB_EMBEDDING_MODEL``); default
            ``text-embedding-3-small``.
        base_url: ``OPENAI_BASE_URL``; ``None`` means api.openai.com.
        api_key: ``OPENAI_API_KEY`` (api.openai.com needs it; local servers take any).
        timeout: seconds for one request.
        max_retries: retries of a rate-limited or failed request (the client's backoff).
        batch_size: texts per request.

    Raises:
        ConfigError: no ``OPENAI_API_KEY`` for api.openai.com.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: SecretStr | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        if api_key is None and base_url is None:
            raise ConfigError(
                "OPENAI_API_KEY",
                "is not set; api.openai.com needs a key for KB_EMBEDDINGS=openai (or set "
                "OPENAI_BASE_URL to a local server, or KB_EMBEDDINGS=local)",
                "sk-proj-...",
            )
        if timeout <= 0 or max_retries < 0 or batch_size < 1:
            raise ValueError("timeout and batch_size must be positive, max_retries not negative")
        self._model = model or DEFAULT_EMBEDDING_MODEL
        self._base_url = base_url
        self._secret = api_key.get_secret_value() if api_key is not None else None
        self._timeout = timeout
        self._max_retries = max_retries
        self._batch_size = batch_size
        self._dimension: int | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._state = Lifecycle.NEW
        self._lock = asyncio.Lock()

    @property
    def id(self) -> str:
        """``openai:<model>``."""
        return f"openai:{self._model}"

    @property
    def dimension(self) -> int:
        """The vectors' length, learned from the server's first answer (0 before :meth:`start`)."""
        return self._dimension or 0

    @property
    def _where(self) -> str:
        return self._base_url or "api.openai.com"

    async def start(self) -> None:
        """Open the client and learn the dimension from one vector. Idempotent.

        Raises:
            KbError: the endpoint refused or could not be reached.
            RuntimeError: the embedder was closed.
        """
        async with self._lock:
            if self._state is Lifecycle.CLOSED:
                raise RuntimeError("OpenAIEmbedder is closed; build a new one")
            if self._state is Lifecycle.RUNNING:
                return
            self._client = openai.AsyncOpenAI(
                api_key=self._secret or _PLACEHOLDER_KEY,
                base_url=self._base_url,
                timeout=self._timeout,
                max_retries=self._max_retries,
            )
            try:
                await self._request(["dimension probe"])
            except BaseException:
                client, self._client = self._client, None
                await client.close()
                raise
            self._state = Lifecycle.RUNNING
            _log.info(
                "embeddings from %s at %s: %d dimensions", self.id, self._where, self.dimension
            )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors of ``texts``, in order, in batches of ``batch_size``.

        Raises:
            KbError: the endpoint refused, failed or answered something unusable.
        """
        if not texts:
            return []
        await self.start()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            vectors += await self._request(texts[start : start + self._batch_size])
        return vectors

    async def embed_query(self, text: str) -> list[float]:
        """The unit vector of a question."""
        (vector,) = await self.embed([text])
        return vector

    async def aclose(self) -> None:
        """Close the client. Idempotent."""
        async with self._lock:
            self._state = Lifecycle.CLOSED
            client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _request(self, texts: Sequence[str]) -> list[list[float]]:
        """One ``/embeddings`` call; the one place vendor errors become ``KbError``."""
        client = self._client
        if client is None:
            raise RuntimeError("OpenAIEmbedder is closed; build a new one")
        # The API refuses an empty string; a blank chunk or question embeds as one space.
        inputs = [text if text.strip() else " " for text in texts]
        try:
            async with asyncio.timeout(self._timeout * (self._max_retries + 1) + 5):
                answer = await client.embeddings.create(
                    model=self._model, input=inputs, encoding_format="float"
                )
        except TimeoutError as exc:
            raise KbError(f"the embeddings endpoint at {self._where} timed out") from exc
        except openai.AuthenticationError as exc:
            raise KbError(
                f"the embeddings endpoint at {self._where} refused the key: check OPENAI_API_KEY"
            ) from exc
        except openai.NotFoundError as exc:
            raise KbError(
                f"the embedding model {self._model!r} was not found at {self._where}: set "
                "KB_EMBEDDING_MODEL to one it serves (e.g. text-embedding-3-small)"
            ) from exc
        except openai.APIStatusError as exc:
            raise KbError(
                f"the embeddings endpoint at {self._where} answered {exc.status_code}: "
                f"{_message(exc)}"
            ) from exc
        except openai.APITimeoutError as exc:
            raise KbError(f"the embeddings endpoint at {self._where} timed out") from exc
        except openai.APIConnectionError as exc:
            raise KbError(
                f"could not reach the embeddings endpoint at {self._where}: check OPENAI_BASE_URL"
            ) from exc
        except openai.OpenAIError as exc:
            raise KbError(f"the embeddings endpoint at {self._where} failed: {exc}") from exc
        return self._vectors(answer, len(inputs))

    def _vectors(
        self, answer: openai.types.CreateEmbeddingResponse, count: int
    ) -> list[list[float]]:
        """The answer's vectors in input order, checked and normalised."""
        items = sorted(answer.data, key=lambda item: item.index)
        if len(items) != count or [item.index for item in items] != list(range(count)):
            raise KbError(
                f"the embeddings endpoint at {self._where} returned {len(items)} vectors "
                f"for {count} texts"
            )
        dimension = len(items[0].embedding)
        if self._dimension is None:
            self._dimension = dimension
        if dimension == 0 or any(len(item.embedding) != self._dimension for item in items):
            raise KbError(
                f"the embeddings endpoint at {self._where} changed the vectors' length "
                f"(expected {self._dimension}, got {dimension})"
            )
        return [_unit(item.embedding) for item in items]


def _message(exc: openai.APIStatusError) -> str:
    """The server's own error message, else the status line."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
    return str(exc.message)[:300]
