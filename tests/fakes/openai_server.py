"""A loopback OpenAI-compatible server for driving the real ``openai`` client in tests.

It speaks the real wire format: ``POST /v1/chat/completions`` (streamed as server-sent
``chat.completion.chunk`` events ending in ``data: [DONE]``, with the final usage chunk of
empty ``choices`` when ``stream_options.include_usage`` is set, or one ``chat.completion``
object) and ``GET /v1/models``; errors come back with the real ``{"error": {...}}`` bodies
and status codes. ``POST /v1/embeddings`` answers with deterministic word-hashing vectors
(``tests/fakes/openai_embeddings.py``); 429 and 5xx faults apply to it too.
``POST /v1/audio/transcriptions`` takes the real multipart upload (``file``, ``model``,
``response_format`` ``json``, ``text`` or ``verbose_json``) and answers ``transcript`` (set
per test), with the real 25 MB limit (413), file-format and missing-field errors.

Replies are deterministic functions of the request. Faults are queued per test and consumed
by the next chat requests in order: 429 with ``Retry-After``, 5xx, a hang before the first
chunk, a hang, a dropped connection or a malformed event mid-stream. A prompt over
``context_limit`` tokens gets the real ``context_length_exceeded`` error; a wrong bearer key
gets a 401. A reply longer than the request's ``max_tokens`` (or ``max_completion_tokens``)
is cut there and ends with ``finish_reason`` ``"length"``, as the real API does.

Image content parts are checked as a strict server checks them: only in user messages, only
``data:`` URLs of an image type with valid base64 (a link the server would fetch is refused);
``images_sent`` decodes what each request carried, and an image costs prompt tokens as the
API counts it (:func:`core.media.image_tokens`). Models named in ``text_only_models`` refuse
any request with an image the way a text-only model's server does (``image_refusal``).

Everything received is recorded (bodies, headers, monotonic timestamps), and so is every
client that disconnected before its stream ended.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from core.media import image_tokens
from tests.fakes.openai_embeddings import EMBEDDING_MODELS, embeddings_answer

with warnings.catch_warnings():
    # bpe_openai 0.1.x warns (DeprecationWarning, importlib.resources.open_binary) on import.
    warnings.filterwarnings("ignore", "open_binary is deprecated", DeprecationWarning)
    from bpe_openai import get_encoding

    _ENCODING = get_encoding("o200k_base")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request as the server received it; ``at`` is ``time.monotonic()``."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    at: float


@dataclass(frozen=True, slots=True)
class RecordedImage:
    """One image content part a chat request carried, decoded from its ``data:`` URL.

    Attributes:
        message: the index of its message in the request's ``messages``.
        mime_type: the URL's type, e.g. ``"image/jpeg"``.
        data: the decoded bytes.
        detail: the part's ``detail`` (``"auto"``, ``"low"``, ``"high"``), if given.
    """

    message: int
    mime_type: str
    data: bytes
    detail: str | None

    @property
    def size(self) -> int:
        """The decoded size in bytes."""
        return len(self.data)

    def __repr__(self) -> str:
        return f"RecordedImage(messages[{self.message}], {self.mime_type}, {self.size} bytes)"


@dataclass(frozen=True, slots=True)
class FakeToolCall:
    """A tool call the fake model makes; ``arguments`` is streamed in pieces."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class FakeReply:
    """A reply with text and/or tool calls."""

    text: str = ""
    tool_calls: Sequence[FakeToolCall] = ()
    cached_tokens: int = 0  # reported as usage.prompt_tokens_details.cached_tokens


ReplyFn = Callable[[Mapping[str, Any]], "str | FakeReply"]


@dataclass(slots=True)
class _Fault:
    kind: str
    times: int
    status: int = 500
    retry_after: str | None = None
    retry_after_ms: str | None = None
    code: str | None = None
    seconds: float | None = None
    after_chunks: int = 0
    before_headers: bool = False


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def default_reply(body: Mapping[str, Any]) -> str:
    """``You said: <last user text>. I received <n> messages.``"""
    messages = body.get("messages", [])
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    last = users[-1] if users else ""
    return f"You said: {last}. I received {len(messages)} messages."


def _calls_text(message: Mapping[str, Any]) -> str:
    """The names and arguments of an assistant message's tool calls (they cost tokens too)."""
    parts = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts += [str(function.get("name", "")), str(function.get("arguments", ""))]
    return "".join(parts)


_DATA_URL = re.compile(r"data:(image/(?:jpeg|png|gif|webp));base64,(.*)", re.DOTALL)
_DETAILS = (None, "auto", "low", "high")


def _image_parts(messages: Any) -> Iterator[tuple[int, int, Mapping[str, Any]]]:
    """``(message index, part index, part)`` of every ``image_url`` part of ``messages``."""
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    yield i, j, part


def _decoded(part: Mapping[str, Any]) -> tuple[str, bytes] | None:
    """The MIME type and bytes of an image part's ``data:`` URL; ``None`` if it is not one."""
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else None
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        return None
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        return None
    return (match.group(1), data) if data else None


def _pixel_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR or a JPEG's start-of-frame marker."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):  # baseline, extended, progressive
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return width, height
        at += 2 + length
    return None


def _image_cost(part: Mapping[str, Any]) -> int:
    """What an image part costs as OpenAI counts it: 85 at ``low``, else by its tiles."""
    decoded = _decoded(part)
    size = _pixel_size(decoded[1]) if decoded is not None else None
    image_url = part.get("image_url")
    detail = image_url.get("detail") if isinstance(image_url, dict) else None
    if size is None or detail == "low" or 0 in size:
        return 85
    return image_tokens(*size)


def prompt_tokens(body: Mapping[str, Any], scale: float = 1.0) -> int:
    """Tokens of the request's messages: o200k content and tool calls, 4 per message, 3 more.

    Images add what the API charges for them (not scaled: that is the text tokenizer's).
    """
    messages = body.get("messages", [])
    content = sum(
        len(_ENCODING.encode_ordinary(_text_of(m.get("content")) + _calls_text(m)))
        for m in messages
    )
    images = sum(_image_cost(part) for _, _, part in _image_parts(messages))
    return math.ceil(content * scale) + images + 4 * len(messages) + 3


_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ROLES = {"system", "developer", "user", "assistant", "tool"}


def _invalid_tools(tools: Any) -> str | None:
    """The real API's complaint about the ``tools`` offered, if any."""
    if not isinstance(tools, list):
        return "Invalid type for 'tools': expected an array, but got an object instead."
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not function:
            return f"Missing required parameter: 'tools[{i}].function'."
        name = str(function.get("name", ""))
        if len(name) > 64:
            return (
                f"Invalid 'tools[{i}].function.name': string too long. Expected a string with "
                f"maximum length 64, but got a string with length {len(name)} instead."
            )
        if not _NAME.match(name):
            return (
                f"Invalid 'tools[{i}].function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
            )
    return None


def _invalid_calls(i: int, message: Mapping[str, Any]) -> str | None:
    """The real API's complaint about an assistant message's ``tool_calls``, if any."""
    for j, call in enumerate(message["tool_calls"]):
        where = f"messages[{i}].tool_calls[{j}]"
        if not isinstance(call, dict) or not call.get("id"):
            return f"Missing required parameter: '{where}.id'."
        if call.get("type") != "function":
            return f"Missing required parameter: '{where}.type'."
        function = call.get("function")
        if not isinstance(function, dict) or not function.get("name"):
            return f"Missing required parameter: '{where}.function.name'."
        if not isinstance(function.get("arguments"), str):
            return (
                f"Invalid type for '{where}.function.arguments': expected a string, but got "
                "an object instead."
            )
    return None


def _invalid_tool_order(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """Every call answered by ``tool`` messages right after it, and nothing else answered."""
    waiting: list[str] = []  # ids of the last assistant message's calls not answered yet
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a "
                    f"preceeding message with 'tool_calls'. ('messages[{i}]')"
                )
            waiting.remove(call_id)
            continue
        if waiting:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(waiting)}"
            )
        if role == "assistant" and message.get("tool_calls"):
            waiting = [str(call.get("id")) for call in message["tool_calls"]]
    return None


def _invalid_parts(i: int, role: Any, content: list[Any]) -> str | None:
    """A strict server's complaint about a message's content parts, if any.

    Stricter than api.openai.com in one way: an image must come as a ``data:`` URL (a
    link would make the server fetch it; chinwag never sends one).
    """
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                return f"Missing required parameter: '{where}.text'."
            continue
        if kind != "image_url":
            return f"Invalid value: '{kind}'. Supported values are: 'text' and 'image_url'."
        if role != "user":
            return (
                f"Invalid 'messages[{i}]'. Image URLs are only allowed for messages with role "
                f"'user', but this message with role '{role}' contains an image URL."
            )
        image_url = part.get("image_url")
        if not isinstance(image_url, dict) or not isinstance(image_url.get("url"), str):
            return f"Missing required parameter: '{where}.image_url.url'."
        if image_url.get("detail") not in _DETAILS:
            return (
                f"Invalid value: '{image_url.get('detail')}'. Supported values are: "
                "'auto', 'low', and 'high'."
            )
        if _decoded(part) is None:
            return (
                f"Invalid '{where}.image_url.url'. Expected a base64-encoded data URL with an "
                "image MIME type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), but got "
                "an invalid value."
            )
    return None


def _invalid(body: Mapping[str, Any]) -> str | None:
    """The real API's complaint about a malformed request body, if any."""
    messages = body["messages"]
    if not messages:
        return "Invalid 'messages': empty array. Expected an array with minimum length 1."
    if "tools" in body and (problem := _invalid_tools(body["tools"])) is not None:
        return problem
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in _ROLES:
            return f"Invalid value: '{role}'. Supported values are: {sorted(_ROLES)}."
        name = message.get("name")
        if name is not None and not _NAME.match(str(name)):
            return (
                f"Invalid 'messages[{i}].name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
            )
        if role == "tool" and not message.get("tool_call_id"):
            return f"Missing required parameter: 'messages[{i}].tool_call_id'."
        if message.get("content") is None and not message.get("tool_calls"):
            return f"Invalid value for 'messages[{i}].content': expected a string, got null."
        content = message.get("content")
        if isinstance(content, list) and (problem := _invalid_parts(i, role, content)):
            return problem
        if message.get("tool_calls"):
            if role != "assistant":
                return f"Unrecognized request argument: 'messages[{i}].tool_calls'."
            if (problem := _invalid_calls(i, message)) is not None:
                return problem
    if (problem := _invalid_tool_order(messages)) is not None:
        return problem
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        return f"Invalid 'temperature': decimal above maximum value. Got {temperature}."
    for key in ("max_tokens", "max_completion_tokens"):
        limit = body.get(key)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return f"Invalid '{key}': integer below minimum value. Expected >= 1."
    return None


def _count_tokens(text: str) -> int:
    return len(_ENCODING.encode_ordinary(text))


def _limited(answer: FakeReply, limit: Any) -> tuple[FakeReply, str]:
    """``answer`` cut to ``limit`` tokens, and its ``finish_reason``."""
    if answer.tool_calls:
        return answer, "tool_calls"
    tokens = _ENCODING.encode_ordinary(answer.text)
    if isinstance(limit, int) and len(tokens) > limit:
        return (
            FakeReply(text=_ENCODING.decode(tokens[:limit]), cached_tokens=answer.cached_tokens),
            "length",
        )
    return answer, "stop"


def _error(status: int, message: str, type_: str, code: str | None, **headers: str) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


TRANSCRIPTION_MAX_BYTES = 26_214_400  # the real API's 25 MB upload limit
TRANSCRIPTION_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")


def _invalid_transcription(form: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """The real API's complaint about a transcription upload, and the field it names."""
    if "file_bytes" not in form:
        return "you must provide a file parameter", "file"
    if not form.get("model"):
        return "you must provide a model parameter", "model"
    extension = str(form.get("file_name", "")).rsplit(".", 1)[-1].lower()
    if extension not in TRANSCRIPTION_FORMATS:
        return f"Invalid file format. Supported formats: {list(TRANSCRIPTION_FORMATS)}", "file"
    if form.get("response_format", "json") not in ("json", "text", "verbose_json"):
        # The real API also takes srt and vtt; nothing here asks for them.
        return f"Invalid value: '{form['response_format']}'.", "response_format"
    if not form["file_bytes"]:
        return "Audio file is too short. Minimum audio length is 0.1 seconds.", "file"
    return None


def _images_refused(style: str, model: str) -> web.Response:
    """A text-only model's server refusing a request with an image, as ``style`` does."""
    if style == "vllm":  # vLLM's own error object, not wrapped in "error"
        body: dict[str, Any] = {
            "object": "error",
            "message": f"{model} is not a multimodal model None",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        return web.json_response(body, status=400)
    if style == "llama_server":
        message = (
            "image input is not supported - hint: if this is unexpected, you may need to "
            "provide the mmproj"
        )
        body = {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
        return web.json_response(body, status=400)
    if style == "ollama":  # a 500, which a client must not retry
        return _error(500, "this model is missing data required for image input", "api_error", None)
    return _error(
        400,
        "Invalid content type. image_url is only supported by certain models.",
        "invalid_request_error",
        None,
    )


class FakeOpenAIServer:
    """The server; use ``async with FakeOpenAIServer() as server`` and ``server.base_url``.

    Args:
        reply: the reply to a request body (default :func:`default_reply`).
        api_key: when set, requests must carry ``Authorization: Bearer <api_key>``.
        models: the models served; a chat request for another gets the real 404.
        context_limit: prompts over this many tokens get ``context_length_exceeded``.
        chunk_delay: seconds between streamed chunks.
        prompt_token_scale: multiplies the content tokens reported in usage, to play a
            server whose tokenizer differs from o200k (Llama, Mistral...).
        reject_stream_options: answer 400 to any request carrying ``stream_options``, as
            some older servers do.
        overflow_style: how a prompt over ``context_limit`` is refused, as each server does:
            ``"openai"`` (400 ``context_length_exceeded``, also vLLM's sentence),
            ``"llama_server"`` (llama.cpp's 400 ``exceed_context_size_error`` with ``n_ctx``),
            ``"empty_stream"`` (llama-cpp-python's server: a streamed request gets an empty
            200 stream, a plain one the 400), ``"lmstudio"`` (an error event in the stream).
        published: extra fields per model in ``/v1/models`` (``{"m": {"max_model_len": 4096}}``).
        props: llama.cpp's ``/props`` document (404 when ``None``).
        ollama_show: Ollama's ``/api/show`` answer per model (404 when ``None``).
        embedding_models: the models ``/v1/embeddings`` serves, with their dimension.
        text_only_models: models that refuse a request carrying an image.
        image_refusal: how they refuse it: ``"openai"`` (400 "image_url is only supported by
            certain models"), ``"vllm"`` (400 "... is not a multimodal model"),
            ``"llama_server"`` (400 "image input is not supported - hint: ... mmproj") or
            ``"ollama"`` (500 "this model is missing data required for image input").
        host: the address to listen on (``0.0.0.0`` to be reached from a container too).
    """

    def __init__(
        self,
        *,
        reply: ReplyFn | None = None,
        api_key: str | None = None,
        models: Sequence[str] = ("gpt-4o-mini", "gpt-4o"),
        context_limit: int | None = None,
        chunk_delay: float = 0.0,
        prompt_token_scale: float = 1.0,
        reject_stream_options: bool = False,
        overflow_style: str = "openai",
        published: Mapping[str, Mapping[str, Any]] | None = None,
        props: Mapping[str, Any] | None = None,
        ollama_show: Mapping[str, Mapping[str, Any]] | None = None,
        embedding_models: Mapping[str, int] = EMBEDDING_MODELS,
        text_only_models: Collection[str] = (),
        image_refusal: str = "openai",
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.text_only_models = set(text_only_models)
        self.image_refusal = image_refusal
        self.embedding_models = dict(embedding_models)
        self.overflow_style = overflow_style
        self.published = dict(published or {})
        self.props = props
        self.ollama_show = ollama_show
        self.reply = reply or default_reply
        self.api_key = api_key
        self.models = list(models)
        self.context_limit = context_limit
        self.chunk_delay = chunk_delay
        self.prompt_token_scale = prompt_token_scale
        self.reject_stream_options = reject_stream_options
        self.requests: list[RecordedRequest] = []
        # What /v1/audio/transcriptions answers; its requests record the form fields, and the
        # file as ``file_name``, ``file_type`` and ``file_bytes``.
        self.transcript = "This is what was said."
        self.disconnects = 0
        self.streams_completed = 0
        self.disconnected = asyncio.Event()
        self._faults: list[_Fault] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # --- lifecycle ---

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/props", self._props)
        app.router.add_post("/api/show", self._show)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def aclose(self) -> None:
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeOpenAIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embedding_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    @property
    def transcription_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/audio/transcriptions")]

    @property
    def tools_offered(self) -> list[list[str]]:
        """The names of the tools each chat request offered the model, in order."""
        return [
            [t["function"]["name"] for t in (r.body.get("tools") or ())]
            for r in self.chat_requests
            if isinstance(r.body, dict)
        ]

    @property
    def images_sent(self) -> list[list[RecordedImage]]:
        """The images each chat request carried; a link or bad base64 has no type and no bytes."""
        sent: list[list[RecordedImage]] = []
        for r in self.chat_requests:
            images: list[RecordedImage] = []
            messages = r.body.get("messages") if isinstance(r.body, dict) else None
            for i, _, part in _image_parts(messages):
                decoded = _decoded(part)
                mime, data = decoded if decoded is not None else ("", b"")
                image_url = part.get("image_url")
                detail = image_url.get("detail") if isinstance(image_url, dict) else None
                images.append(RecordedImage(i, mime, data, detail))
            sent.append(images)
        return sent

    def empty_stream(self, *, times: int = 1) -> None:
        """Answer a streamed request with an empty 200 stream (a plain request is answered).

        llama-cpp-python's server does so when it fails before the first token.
        """
        self._faults.append(_Fault("empty", times))

    # --- faults, consumed by the next chat requests in order ---

    def fail_rate_limited(
        self,
        times: int = 1,
        *,
        retry_after: str | None = "1",
        retry_after_ms: str | None = None,
        code: str = "rate_limit_exceeded",
    ) -> None:
        self._faults.append(
            _Fault(
                "429", times, 429, retry_after=retry_after, retry_after_ms=retry_after_ms, code=code
            )
        )

    def fail_server_error(self, times: int = 1, *, status: int = 500) -> None:
        self._faults.append(_Fault("5xx", times, status))

    def hang_before_first_chunk(
        self, seconds: float | None = None, *, times: int = 1, before_headers: bool = False
    ) -> None:
        """Hang (forever by default) after the 200 headers, or before them."""
        self._faults.append(_Fault("hang", times, seconds=seconds, before_headers=before_headers))

    def hang_mid_stream(
        self, after_chunks: int = 1, seconds: float | None = None, *, times: int = 1
    ) -> None:
        self._faults.append(_Fault("hang", times, seconds=seconds, after_chunks=after_chunks))

    def drop_mid_stream(self, after_chunks: int = 1, *, times: int = 1) -> None:
        """Abort the TCP connection after ``after_chunks`` content chunks."""
        self._faults.append(_Fault("drop", times, after_chunks=after_chunks))

    def send_garbage_mid_stream(self, after_chunks: int = 1, *, times: int = 1) -> None:
        """Send an event whose data is not JSON after ``after_chunks`` content chunks."""
        self._faults.append(_Fault("garbage", times, after_chunks=after_chunks))

    def _next_fault(self) -> _Fault | None:
        while self._faults:
            fault = self._faults[0]
            if fault.times > 0:
                fault.times -= 1
                return fault
            self._faults.pop(0)
        return None

    # --- handlers ---

    async def _record(self, request: web.Request) -> Any:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.headers), body, time.monotonic()
            )
        )
        return body

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if sent == self.api_key:
            return None
        masked = f"{sent[:3]}***{sent[-4:]}" if len(sent) > 8 else "***"
        return _error(
            401,
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (refused := self._auth_error(request)) is not None:
            return refused
        data = [
            {
                "id": m,
                "object": "model",
                "created": 1700000000,
                "owned_by": "system",
                **self.published.get(m, {}),
            }
            for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _props(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.props is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response(dict(self.props))

    async def _show(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        model = str(body.get("model")) if isinstance(body, dict) else ""
        if self.ollama_show is None or model not in self.ollama_show:
            return web.json_response({"error": f"model '{model}' not found"}, status=404)
        return web.json_response(dict(self.ollama_show[model]))

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if (refused := self._auth_error(request)) is not None:
            return refused
        fault = self._next_fault()
        if fault is not None and fault.kind == "429":
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            return _error(
                429,
                "Rate limit reached on requests per min (RPM).",
                "requests",
                fault.code,
                **headers,
            )
        if fault is not None and fault.kind == "5xx":
            return _error(fault.status, "The server had an error.", "server_error", None)
        status, answer = embeddings_answer(body, self.embedding_models, _count_tokens)
        return web.json_response(answer, status=status)

    async def _transcriptions(self, request: web.Request) -> web.Response:
        size = request.content_length or 0
        if size > TRANSCRIPTION_MAX_BYTES:
            # The real API reads the whole upload before refusing it.
            while await request.content.read(1 << 20):
                pass
            self._record_form(request, {"refused_bytes": size})
            return _error(
                413,
                f"Maximum content size limit ({TRANSCRIPTION_MAX_BYTES}) exceeded "
                f"({size} bytes read)",
                "server_error",
                None,
            )
        form: dict[str, Any] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.filename is not None:
                form["file_name"] = part.filename
                form["file_type"] = part.headers.get("Content-Type")
                form["file_bytes"] = await part.read()
            else:
                form[part.name] = await part.text()
        self._record_form(request, form)
        if (refused := self._auth_error(request)) is not None:
            return refused
        if (problem := _invalid_transcription(form)) is not None:
            error = {"message": problem[0], "type": "invalid_request_error", "param": problem[1]}
            return web.json_response({"error": {**error, "code": None}}, status=400)
        fault = self._next_fault()
        if fault is not None and fault.kind == "429":
            headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
            return _error(429, "Rate limit reached for requests", "requests", fault.code, **headers)
        if fault is not None and fault.kind == "5xx":
            return _error(fault.status, "The server had an error.", "server_error", None)
        response_format = form.get("response_format", "json")
        if response_format == "text":
            return web.Response(text=self.transcript + "\n", content_type="text/plain")
        if response_format == "verbose_json":
            answer = {"task": "transcribe", "language": "english", "duration": 1.0}
            return web.json_response({**answer, "text": self.transcript, "segments": []})
        return web.json_response({"text": self.transcript})

    def _record_form(self, request: web.Request, form: dict[str, Any]) -> None:
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.headers), form, time.monotonic()
            )
        )

    async def _overflow(
        self, request: web.Request, body: Mapping[str, Any], used: int, limit: int
    ) -> web.StreamResponse:
        """Refuse a prompt of ``used`` tokens over ``limit`` the way ``overflow_style`` says."""
        style = self.overflow_style
        if style == "llama_server":
            return web.json_response(
                {
                    "error": {
                        "code": 400,
                        "message": "the request exceeds the available context size, "
                        "try increasing it",
                        "type": "exceed_context_size_error",
                        "n_prompt_tokens": used,
                        "n_ctx": limit,
                    }
                },
                status=400,
            )
        if style in ("empty_stream", "lmstudio") and body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            if style == "lmstudio":
                message = (
                    f"Trying to keep the first {used} tokens when context the overflows. "
                    f"However, the model is loaded with context length of only {limit} "
                    "tokens, which is not enough. Try to load the model with a larger "
                    "context length, or provide a shorter input"
                )
                await response.write(f"data: {json.dumps({'error': message})}\n\n".encode())
            await response.write_eof()
            return response
        return _error(
            400,
            f"This model's maximum context length is {limit} tokens. However, "
            f"your messages resulted in {used} tokens. "
            "Please reduce the length of the messages.",
            "invalid_request_error",
            "context_length_exceeded",
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if (refused := self._auth_error(request)) is not None:
            return refused
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property", "invalid_request_error", None)
        if (problem := _invalid(body)) is not None:
            return _error(400, problem, "invalid_request_error", None)
        model = body.get("model")
        if model not in self.models:
            return _error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        if model in self.text_only_models and any(_image_parts(body["messages"])):
            return _images_refused(self.image_refusal, str(model))
        if self.reject_stream_options and "stream_options" in body:
            return _error(
                400,
                "Unrecognized request argument supplied: stream_options",
                "invalid_request_error",
                None,
            )
        used = prompt_tokens(body, self.prompt_token_scale)
        if self.context_limit is not None and used > self.context_limit:
            return await self._overflow(request, body, used, self.context_limit)
        fault = self._next_fault()
        if fault is not None and fault.kind == "429":
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = fault.retry_after
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = fault.retry_after_ms
            return _error(
                429,
                f"Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3.",
                "requests",
                fault.code,
                **headers,
            )
        if fault is not None and fault.kind == "5xx":
            return _error(
                fault.status,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            )
        if fault is not None and fault.kind == "empty" and body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write_eof()
            return response
        if fault is not None and fault.kind == "hang" and fault.before_headers:
            await self._idle(request, fault.seconds)
            fault = None
        answer = self.reply(body)
        if isinstance(answer, str):
            answer = FakeReply(text=answer)
        answer, finish = _limited(
            answer, body.get("max_completion_tokens") or body.get("max_tokens")
        )
        completion_tokens = len(_ENCODING.encode_ordinary(answer.text)) + sum(
            len(_ENCODING.encode_ordinary(c.arguments)) + 5 for c in answer.tool_calls
        )
        usage: dict[str, Any] = {
            "prompt_tokens": used,
            "completion_tokens": completion_tokens,
            "total_tokens": used + completion_tokens,
        }
        if answer.cached_tokens:  # as OpenAI reports its prompt caching
            usage["prompt_tokens_details"] = {"cached_tokens": min(answer.cached_tokens, used)}
        if not body.get("stream"):
            return web.json_response(self._completion(model, answer, usage, finish))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(
            request, model, answer, usage if include_usage else None, fault, finish
        )

    def _completion(
        self, model: str, answer: FakeReply, usage: dict[str, Any], finish: str
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.text or None,
            "refusal": None,
        }
        if answer.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in answer.tool_calls
            ]
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
        }

    async def _stream(
        self,
        request: web.Request,
        model: str,
        answer: FakeReply,
        usage: dict[str, Any] | None,
        fault: _Fault | None,
        finish: str,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        created = int(time.time())
        with_usage = usage is not None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if with_usage:
                out["usage"] = None
            return out

        events: list[dict[str, Any]] = [
            chunk({"role": "assistant", "content": "", "refusal": None})
        ]
        events += [chunk({"content": piece}) for piece in re.findall(r"\s*\S+", answer.text)]
        for index, call in enumerate(answer.tool_calls):
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for start in range(0, len(call.arguments), 8):
                piece = call.arguments[start : start + 8]
                events.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        events.append(chunk({}, finish))
        if usage is not None:
            final = chunk({})
            final["choices"] = []
            final["usage"] = usage
            events.append(final)

        for sent, event in enumerate(events):
            if fault is not None and sent == fault.after_chunks + 1:  # +1: the role chunk
                if fault.kind == "drop":
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if fault.kind == "garbage":
                    await self._write(request, response, "data: {not json\n\n")
                    return response
                if fault.kind == "hang":
                    if not await self._idle(request, fault.seconds):
                        return response
                    fault = None
            if sent and self.chunk_delay and not await self._idle(request, self.chunk_delay):
                return response
            if not await self._write(request, response, f"data: {json.dumps(event)}\n\n"):
                return response
        if await self._write(request, response, "data: [DONE]\n\n"):
            self.streams_completed += 1
            await response.write_eof()
        return response

    def _gone(self, request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    def _saw_disconnect(self) -> None:
        self.disconnects += 1
        self.disconnected.set()

    async def _write(self, request: web.Request, response: web.StreamResponse, data: str) -> bool:
        if self._gone(request):
            self._saw_disconnect()
            return False
        try:
            await response.write(data.encode())
        except ConnectionError:
            self._saw_disconnect()
            return False
        return True

    async def _idle(self, request: web.Request, seconds: float | None) -> bool:
        """Wait ``seconds`` (forever if ``None``); ``False`` if the client went away first."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            if self._closing.is_set():
                return False
            if self._gone(request):
                self._saw_disconnect()
                return False
            await asyncio.sleep(0.005)
        return True
