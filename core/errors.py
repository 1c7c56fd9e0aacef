"""The one exception tree of chinwag.

Every error the project raises on purpose derives from :class:`ChinwagError`::

    ChinwagError
    ├── ConfigError              a setting is missing or malformed (names the variable)
    ├── BackendError             the LLM backend failed
    │   ├── BackendUnavailable   cannot reach the server / model not loaded / queue full
    │   ├── BackendTimeout       no first or next chunk within the timeout
    │   ├── RateLimited          the server said 429 (``retry_after`` seconds, if given)
    │   ├── ContextTooLong       the prompt does not fit the model's context
    │   └── ImagesRefused        the server refused images: the model is text-only there
    ├── AdapterError             a chat platform failed
    ├── MediaError               a photo, voice note or file can't be used (says why)
    │   └── FileTooLong          a text file is over ``MAX_FILE_CHARS`` (``limit``)
    └── StoreError               the memory store failed
        ├── DuplicateMessage     a platform message id is already stored (a redelivery)
        └── StoreUnavailable     the database stayed unreachable for the outage grace period

Vendor exceptions are translated into these at exactly one boundary per implementation
(``raise ... from exc``). ``user_message`` is the short, safe text a chat user may see; the
operator's log gets the traceback.
"""

from __future__ import annotations


class ChinwagError(Exception):
    """Root of every error chinwag raises on purpose."""

    user_message: str = "Something went wrong on my side. Please try again."


class ConfigError(ChinwagError):
    """A setting is missing or malformed.

    Attributes:
        variable: the environment variable to set, e.g. ``"DATABASE_URL"``.
        example: an example of a valid value.
    """

    def __init__(self, variable: str, problem: str, example: str | None = None) -> None:
        self.variable = variable
        self.problem = problem
        self.example = example
        text = f"{variable}: {problem}"
        if example:
            text += f" (example: {variable}={example})"
        super().__init__(text)


class BackendError(ChinwagError):
    """The LLM backend failed; ``user_message`` says so briefly."""

    user_message = "The language model failed to answer. Please try again."


class BackendUnavailable(BackendError):
    """The backend cannot be reached or cannot take the request now."""

    user_message = "The language model is unavailable right now. Please try again shortly."


class BackendBusy(BackendUnavailable):
    """A local backend's queue is full."""

    user_message = "I'm busy with other conversations right now. Please try again in a minute."


class BackendTimeout(BackendError):
    """No first or next chunk arrived within the configured timeout.

    Attributes:
        timeout: the limit in seconds that was exceeded.
    """

    user_message = "The language model took too long to answer. Please try again."

    def __init__(self, timeout: float, message: str | None = None) -> None:
        self.timeout = timeout
        super().__init__(message or f"no response within {timeout:g}s")


class RateLimited(BackendError):
    """The backend refused the request for now.

    Attributes:
        retry_after: seconds until a retry may succeed, when the server said.
    """

    user_message = "The language model is rate-limited right now. Please try again in a moment."

    def __init__(self, retry_after: float | None = None, message: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message or f"rate limited (retry after {retry_after}s)")


class ContextTooLong(BackendError):
    """The prompt does not fit the model's context window.

    Attributes:
        limit: the model's context size in tokens, when known.
    """

    user_message = "This conversation is too long for the model. Try /reset to start afresh."

    def __init__(self, limit: int | None = None, message: str | None = None) -> None:
        self.limit = limit
        super().__init__(message or "context too long")


class ImagesRefused(BackendError):
    """The server refused a request because it carried images: the model is text-only there.

    Raised before anything was streamed. The backend remembers it, so that
    ``supports_images(model)`` is false from then on; the caller may send the same request
    again without its images (the caption alone) and tell the user the model can't see them.

    Attributes:
        model: the model that refused the images.
    """

    user_message = "This model can't see images. Please send your question as text."

    def __init__(self, model: str, message: str | None = None) -> None:
        self.model = model
        super().__init__(message or f"{model} does not accept images")


class AdapterError(ChinwagError):
    """A chat platform failed (network, refused request, missing permission)."""


class StoreError(ChinwagError):
    """The memory store failed to read or write."""

    user_message = "I couldn't reach my memory just now. Please try again."


class DuplicateMessage(StoreError):
    """A platform message id given to ``append_messages`` is already stored.

    Attributes:
        existing: the stored message that id belongs to.
    """

    def __init__(self, existing: object) -> None:
        self.existing = existing
        super().__init__("this platform message is already stored")


class StoreUnavailable(StoreError):
    """The database stayed unreachable for the whole outage grace period.

    The store retried the call while its connections were lost; nothing of the call is
    stored. Raised by a call after ``DB_OUTAGE_GRACE_SECONDS`` (or when the store closes
    during the outage).

    Attributes:
        waited: seconds the call spent retrying before giving up.
    """

    user_message = (
        "I couldn't reach my memory, so I did not keep your message. "
        "Please send it again in a minute."
    )

    def __init__(self, waited: float, message: str | None = None) -> None:
        self.waited = waited
        super().__init__(message or f"the database stayed unreachable for {waited:.0f}s")


class KbError(ChinwagError):
    """The knowledge base refused or failed (a model mix-up, an unreadable file, the embedder).

    ``str(exc)`` says what went wrong in one line a person can act on.
    """

    user_message = "I couldn't use the knowledge base for this. Please try again."


class MediaError(ChinwagError):
    """A photo, voice note or file a user sent can't be used: corrupt, too big, unreadable.

    ``user_message`` says which file and why, in one sentence a person can act on (the
    limit, the format); nothing of the message is answered or stored then.
    """

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class FileTooLong(MediaError):
    """A text file has more characters than may go into a turn (``MAX_FILE_CHARS``).

    The engine may add a hint (``/kb add``) where the knowledge base can take it instead.

    Attributes:
        name: the file's name.
        limit: the most characters read into a turn.
    """

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(f"{name} is too long: I read at most {limit:,} characters of a file.")
        self.name = name
        self.limit = limit
