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
from typing import Any

from core.errors import BackendError, ContextTooLong
from core.types import ImagePart

_log = logging.getLogger(__name__)
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

    def evaluate(self, llama: Any, prompt: str, images: Sequence[ImagePart], n_ctx: int) -> int:
        """Evaluate ``prompt`` (one marker per image, in order) into ``llama``'s context.

        Returns the prompt's length in positions; ``llama`` is then ready to sample the reply
        (``Llama.generate`` with ``llama.input_ids`` finds the whole prompt cached). Image
        positions are marked with token id -1, so a later text-only prompt never reuses them.

        Raises:
            ImageUnreadable: an image cannot be decoded.
            ContextTooLong: text and images do not fit the context.
            BackendError: mtmd refused the prompt or failed to evaluate it.
            RuntimeError: an evaluation was aborted (the request was cancelled).
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
            return self._evaluate(llama, prompt, bitmaps, n_ctx)
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _evaluate(self, llama: Any, prompt: str, bitmaps: list[Any], n_ctx: int) -> int:
        import llama_cpp

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
        try:
            array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), array, len(bitmaps))
            if status != 0:
                raise BackendError(f"mtmd could not tokenize the prompt (status {status})")
            total = mtmd.mtmd_helper_get_n_tokens(chunks)
            if total >= n_ctx:
                raise ContextTooLong(
                    n_ctx,
                    f"the prompt has {total} tokens with its images; the context holds {n_ctx}",
                )
            count = mtmd.mtmd_input_chunks_size(chunks)
            last = mtmd.mtmd_input_chunks_get(chunks, count - 1) if count else None
            if last is None or mtmd.mtmd_input_chunk_get_type(last) != (
                mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT
            ):
                raise BackendError("the prompt ends with an image: nothing to sample after it")
            llama.reset()
            for index in range(count):
                chunk = mtmd.mtmd_input_chunks_get(chunks, index)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    llama.eval([pointer[i] for i in range(n.value)])
                    continue
                start = llama.n_tokens
                new_past = llama_cpp.llama_pos(0)
                status = mtmd.mtmd_helper_eval_chunk_single(
                    self._ctx,
                    llama._ctx.ctx,  # private: the context mtmd decodes the image into
                    chunk,
                    llama_cpp.llama_pos(start),
                    llama_cpp.llama_seq_id(0),
                    llama.n_batch,
                    False,
                    ctypes.byref(new_past),
                )
                if status != 0:
                    raise RuntimeError(f"mtmd could not evaluate an image (status {status})")
                llama._input_ids[start : new_past.value] = -1  # private: the cached ids
                llama.n_tokens = new_past.value
            return int(llama.n_tokens)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)

    def close(self) -> None:
        """Free the projector's context. Idempotent."""
        ctx, self._ctx = self._ctx, None
        if ctx:
            self._mtmd.mtmd_free(ctx)


__all__ = ["ImageUnreadable", "Projector", "ProjectorError", "mtmd_available", "new_marker"]
