"""Read what the local backend needs from a GGUF file's header, without llama-cpp-python.

Used before a model is loaded: to refuse a file that is missing, unreadable or not GGUF with
one clear line, to learn the model's own context length, and to estimate the memory the model
and its KV cache will need (compared with ``MemAvailable`` from ``/proc/meminfo``).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

GGUF_MAGIC: Final = b"GGUF"
_MAX_HEADER_KV: Final = 1_000_000  # a sane bound: a corrupt count must not make us loop
_MAX_STRING: Final = 64 * 1024 * 1024

# GGUF metadata value types -> struct format (scalars).
_SCALARS: Final[dict[int, str]] = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING: Final = 8
_ARRAY: Final = 9


class GGUFError(Exception):
    """The file cannot be used as a GGUF model.

    ``str()`` is one line for the operator (with the path); ``reason`` says what is wrong
    without the path, for a chat user.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """What the local backend needs to know about a model before loading it.

    Attributes:
        path: the file.
        file_size: bytes on disk (the weights, roughly).
        architecture: ``general.architecture`` (``"llama"``...).
        name: ``general.name`` when present.
        context_length: the context the model was trained for, when the file says.
        n_layer: transformer blocks.
        n_embd: embedding width.
        n_head_kv: key/value heads (the largest, for per-layer arrays).
        head_dim_k: key head size.
        head_dim_v: value head size.
        chat_template: ``tokenizer.chat_template``, when present.
    """

    path: Path
    file_size: int
    architecture: str
    name: str | None
    context_length: int | None
    n_layer: int
    n_embd: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    chat_template: str | None

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Bytes of an f16 KV cache holding ``n_ctx`` tokens."""
        per_token = self.n_layer * self.n_head_kv * (self.head_dim_k + self.head_dim_v) * 2
        return per_token * n_ctx

    def memory_needed(self, n_ctx: int, *, gpu_layers: int = 0) -> int:
        """Estimated host memory to run the model with ``n_ctx`` tokens of context.

        Weights (the file, less the share offloaded to a GPU), the KV cache, and compute
        buffers (scratch proportional to the context and width, plus a fixed margin).
        """
        weights = self.file_size
        kv = self.kv_cache_bytes(n_ctx)
        if gpu_layers:
            offloaded = self.n_layer if gpu_layers < 0 else min(gpu_layers, self.n_layer)
            share = offloaded / max(self.n_layer, 1)
            weights = int(weights * (1 - share))
            kv = int(kv * (1 - share))
        compute = 4 * n_ctx * self.n_embd * 4 + 64 * 1024 * 1024
        return weights + kv + compute


def _read(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GGUFError("the file ends inside its GGUF header (truncated download?)")
    return data


def _unpack(f: IO[bytes], fmt: str) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: IO[bytes]) -> str:
    n = _unpack(f, "<Q")
    if n > _MAX_STRING:
        raise GGUFError("the GGUF header is corrupt (a string is larger than 64 MiB)")
    return _read(f, n).decode("utf-8", errors="replace")


def _value(f: IO[bytes], vtype: int, *, keep: bool) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        item_type = _unpack(f, "<I")
        count = _unpack(f, "<Q")
        if item_type in _SCALARS and not keep:
            # Skip numeric arrays (token scores, types) without decoding them.
            f.seek(struct.calcsize(_SCALARS[item_type]) * count, os.SEEK_CUR)
            return None
        items = [_value(f, item_type, keep=keep) for _ in range(count)]
        return items if keep else None
    raise GGUFError(f"the GGUF header is corrupt (unknown value type {vtype})")


_WANTED_ARRAYS: Final = ("attention.head_count_kv", "attention.head_count")


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read ``path``'s GGUF header.

    Raises:
        GGUFError: missing, unreadable, not GGUF (wrong magic), or a corrupt header.
    """
    try:
        size = path.stat().st_size
        f = path.open("rb")
    except FileNotFoundError as exc:
        raise GGUFError(f"{path} does not exist", reason="its file does not exist") from exc
    except IsADirectoryError as exc:
        raise GGUFError(
            f"{path} is a directory, not a GGUF file", reason="its path is a directory"
        ) from exc
    except OSError as exc:
        raise GGUFError(
            f"{path} cannot be read ({exc.strerror or exc})", reason="its file cannot be read"
        ) from exc
    with f:
        try:
            meta = _read_meta(f)
        except GGUFError as exc:
            raise GGUFError(f"{path}: {exc}", reason=exc.reason) from exc
        except OSError as exc:
            raise GGUFError(
                f"{path} cannot be read ({exc.strerror or exc})", reason="its file cannot be read"
            ) from exc
    arch = str(meta.get("general.architecture") or "")
    if not arch:
        raise GGUFError(
            f"{path}: the GGUF header names no general.architecture", reason="not a usable model"
        )

    def num(key: str, default: int | None = None) -> int | None:
        value = meta.get(f"{arch}.{key}")
        if isinstance(value, list):
            value = max((v for v in value if isinstance(v, int | float)), default=None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return default

    n_layer = num("block_count")
    n_embd = num("embedding_length")
    if not n_layer or not n_embd:
        raise GGUFError(
            f"{path}: the GGUF header lacks {arch}.block_count/embedding_length",
            reason="not a usable model",
        )
    n_head = num("attention.head_count", 1) or 1
    n_head_kv = num("attention.head_count_kv", n_head) or n_head
    head_k = num("attention.key_length", n_embd // n_head) or n_embd // n_head
    head_v = num("attention.value_length", head_k) or head_k
    template = meta.get("tokenizer.chat_template")
    name = meta.get("general.name")
    return GGUFInfo(
        path=path,
        file_size=size,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        context_length=num("context_length"),
        n_layer=n_layer,
        n_embd=n_embd,
        n_head_kv=n_head_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        chat_template=template if isinstance(template, str) else None,
    )


def check_projector(path: Path) -> int:
    """Check that ``path`` is a vision projector (``mmproj``) GGUF; return its size in bytes.

    llama.cpp aborts the process on some malformed projector files, so this header check
    runs before it sees one.

    Raises:
        GGUFError: missing, unreadable, not GGUF, or not a projector with a vision encoder.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            meta = _read_meta(f)
    except FileNotFoundError as exc:
        raise GGUFError(f"{path} does not exist", reason="its file does not exist") from exc
    except IsADirectoryError as exc:
        raise GGUFError(f"{path} is a directory, not a GGUF file", reason="a directory") from exc
    except GGUFError as exc:
        raise GGUFError(f"{path}: {exc}", reason=exc.reason) from exc
    except OSError as exc:
        raise GGUFError(
            f"{path} cannot be read ({exc.strerror or exc})", reason="its file cannot be read"
        ) from exc
    if meta.get("general.architecture") != "clip":
        raise GGUFError(
            f"{path} is not a vision projector (general.architecture is "
            f"{meta.get('general.architecture')!r}, not 'clip'; the mmproj file is)",
            reason="not a vision projector",
        )
    if meta.get("clip.has_vision_encoder") is not True:
        raise GGUFError(
            f"{path} is a projector without a vision encoder (audio only?)",
            reason="a projector without a vision encoder",
        )
    return size


def _read_meta(f: IO[bytes]) -> dict[str, Any]:
    magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError("not a GGUF file (wrong magic bytes; a .bin, .safetensors or HTML page?)")
    version = _unpack(f, "<I")
    if version < 2 or version > 3:
        raise GGUFError(f"unsupported GGUF version {version} (expected 2 or 3)")
    _unpack(f, "<Q")  # tensor count
    n_kv = _unpack(f, "<Q")
    if n_kv > _MAX_HEADER_KV:
        raise GGUFError("the GGUF header is corrupt (too many metadata entries)")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = _string(f)
        vtype = _unpack(f, "<I")
        keep = vtype != _ARRAY or key.endswith(_WANTED_ARRAYS)
        meta[key] = _value(f, vtype, keep=keep)
    return meta


def available_memory() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes, or ``None`` where there is none."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
