"""Images for local models: a vision projector (``LOCAL_MMPROJ_PATH``) run by llama.cpp's mtmd.

llama-cpp-python's multimodal chat handlers (``Llava15ChatHandler``, ``MTMDChatHandler``) are
not used, on purpose: they render a fixed prompt format or need a chat template that reads
list contents, sample through ``create_completion`` (no per-token cancellation, no
stop-on-control-token, no exact usage), and they take images as URLs that they open
themselves (any URL but ``data:`` is fetched with ``urllib``). Here the same library they
wrap (``llama_cpp.mtmd_cpp``) is driven directly: the prompt is rendered with the model's own
chat template, each image's place in it is marked, and the image bytes (already decoded,
downscaled and re-encoded by the media reader) go straight to
``mtmd_helper_bitmap_init_from_buf``. No URL is ever formed, so none can be opened.

Everything here runs on the local backend's worker thread, after the model is loaded.
``llama_cpp.mtmd_cpp`` is imported lazily: it loads ``libmtmd``, which builds made with
``-DLLAVA_BUILD=OFF`` lack (see :func:`mtmd_available`).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from core.errors import BackendError
from core.types import ImagePart

_log = logging.getLogger(__name__)
IMAGE: Final = -1
"""The id held for each of an image's positions in a prompt's ids (never a real token)."""
BATCH_TOKENS: Final = 512
"""The most tokens mtmd evaluates at once (the batched context's batch size)."""
_mtmd_log_callback: Any = None  # the C callback must outlive every context: kept here


class ProjectorError(ValueError):
    """mtmd could not load the projector for this model (the file or the pairing is wrong)."""


class ImageUnreadable(BackendError):
    """llama.cpp could not decode an image of the prompt (corrupt, or an unknown format)."""

    user_message = (
        "I couldn't read that image: it seems damaged or in a format I can't open. "
        "Please send it again as a JPEG or PNG."
    )


def new_marker() -> str:
    """A marker for an image's place in a prompt that no user's text can contain by chance."""
    return f"<__chinwag_image_{secrets.token_hex(8)}__>"


def mtmd_available() -> str | None:
    """``None`` if llama-cpp-python was built with its multimodal library, else why not.

    Looks for ``libmtmd`` next to llama-cpp-python's other libraries without loading it.
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return "llama-cpp-python is not installed"
    for location in spec.submodule_search_locations:
        lib = Path(location) / "lib"
        if any(lib.glob("libmtmd*")) or any(lib.glob("mtmd*.dll")):
            return None
    return (
        "this llama-cpp-python was built without its multimodal library (mtmd); rebuild it "
        "with scripts/install-llama.sh (`make install-local`), which builds it"
    )


def _install_log_callback() -> None:
    """Send mtmd's and clip's log lines to our logger at DEBUG instead of stderr."""
    global _mtmd_log_callback
    if _mtmd_log_callback is not None:
        return
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    def log(_level: int, text: bytes | None, _data: object) -> None:
        if text:
            _log.debug("mtmd: %s", text.decode("utf-8", errors="replace").rstrip())

    _mtmd_log_callback = llama_cpp.llama_log_callback(log)
    mtmd.mtmd_log_set(_mtmd_log_callback, None)
    mtmd.mtmd_helper_log_set(_mtmd_log_callback, None)


class MediaPrompt:
    """A prompt with images, tokenised by mtmd: text ids, and image chunks where ids hold IMAGE.

    Owns mtmd's chunk list (the image chunks point into it): :meth:`close` frees it.
    """

    def __init__(self, mtmd: Any, chunks: Any) -> None:
        self._mtmd = mtmd
        self._chunks = chunks
        self.ids: list[int] = []
        self.images: dict[int, Any] = {}  # index of an image's first id -> its chunk

    def close(self) -> None:
        """Free the chunks. Idempotent."""
        chunks, self._chunks = self._chunks, None
        if chunks:
            self._mtmd.mtmd_input_chunks_free(chunks)


class Projector:
    """A vision projector attached to one loaded ``Llama`` (worker thread only).

    Raises :class:`ProjectorError` (the backend reports a load failure) when mtmd cannot load the
    file for this model: not a projector, or one made for a model of another width.
    """

    def __init__(self, path: Path, llama: Any, *, marker: str, use_gpu: bool) -> None:
        import llama_cpp.mtmd_cpp as mtmd

        _install_log_callback()
        self._mtmd = mtmd
        self.marker = marker
        self._marker_bytes = marker.encode("utf-8")  # the context keeps a pointer to it
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.n_threads = llama.n_threads
        params.media_marker = self._marker_bytes
        ctx = mtmd.mtmd_init_from_file(str(path).encode(), llama.model, params)
        if not ctx:
            raise ProjectorError(
                f"llama.cpp could not load the projector {path} for this model (is it the "
                "mmproj file made for this very model?)"
            )
        if not mtmd.mtmd_support_vision(ctx):
            mtmd.mtmd_free(ctx)
            raise ProjectorError(f"{path} is a projector without a vision encoder")
        self._ctx: Any = ctx

    def tokenize(self, prompt: str, images: Sequence[ImagePart]) -> MediaPrompt:
        """Split ``prompt`` (one marker per image, in order) into ids and image chunks.

        The caller evaluates the text ids itself and each image with :meth:`evaluate_image`
        when its sequence reaches it, then closes the result.

        Raises:
            ImageUnreadable: an image cannot be decoded.
            BackendError: mtmd refused the prompt, or it ends with an image.
        """
        mtmd = self._mtmd
        bitmaps: list[Any] = []
        try:
            for number, image in enumerate(images, start=1):
                buf = (ctypes.c_uint8 * len(image.data)).from_buffer_copy(image.data)
                bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(
                    self._ctx, buf, len(image.data), False
                )
                if not bitmap:
                    raise ImageUnreadable(
                        f"llama.cpp could not decode image {number} of {len(images)} "
                        f"({image.mime_type}, {len(image.data)} bytes)"
                    )
                bitmaps.append(bitmap)
            return self._tokenize(prompt, bitmaps)
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _tokenize(self, prompt: str, bitmaps: list[Any]) -> MediaPrompt:
        mtmd = self._mtmd
        text = mtmd.mtmd_input_text()
        data = prompt.encode("utf-8")
        text.text = data
        text.text_len = len(data)
        text.add_special = False  # as for text prompts: the chat template writes BOS itself
        text.parse_special = True
        chunks = mtmd.mtmd_input_chunks_init()
        if not chunks:
            raise BackendError("mtmd could not allocate the prompt's chunks")
        media = MediaPrompt(mtmd, chunks)
        try:
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), array, len(bitmaps))
            if status != 0:
                raise BackendError(f"mtmd could not tokenize the prompt (status {status})")
            count = mtmd.mtmd_input_chunks_size(chunks)
            for index in range(count):
                chunk = mtmd.mtmd_input_chunks_get(chunks, index)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    media.ids.extend(int(pointer[i]) for i in range(n.value))
                    continue
                media.images[len(media.ids)] = chunk
                media.ids.extend([IMAGE] * int(mtmd.mtmd_input_chunk_get_n_tokens(chunk)))
            if not media.ids or media.ids[-1] == IMAGE:
                raise BackendError("the prompt ends with an image: nothing to sample after it")
        except BaseException:
            media.close()
            raise
        return media

    def evaluate_image(self, ctx: Any, chunk: Any, pos: int, seq: int) -> int:
        """Evaluate an image ``chunk`` of a :class:`MediaPrompt` into sequence ``seq`` of ``ctx``.

        Returns the position after it (models with 2-D positions use fewer than its ids).

        Raises:
            RuntimeError: mtmd failed, or the evaluation was aborted (cancelled).
        """
        import llama_cpp

        new_past = llama_cpp.llama_pos(0)
        status = self._mtmd.mtmd_helper_eval_chunk_single(
            self._ctx,
            ctx,
            chunk,
            llama_cpp.llama_pos(pos),
            llama_cpp.llama_seq_id(seq),
            BATCH_TOKENS,
            False,
            ctypes.byref(new_past),
        )
        if status != 0:
            raise RuntimeError(f"mtmd could not evaluate an image (status {status})")
        return int(new_past.value)

    def close(self) -> None:
        """Free the projector's context. Idempotent."""
        ctx, self._ctx = self._ctx, None
        if ctx:
            self._mtmd.mtmd_free(ctx)


__all__ = [
    "BATCH_TOKENS",
    "IMAGE",
    "ImageUnreadable",
    "MediaPrompt",
    "Projector",
    "ProjectorError",
    "mtmd_available",
    "new_marker",
]
