"""A model's batched llama.cpp context: ``LOCAL_PARALLEL`` sequences and their KV caches.

:class:`Sequences` wraps the low-level API (``llama_batch``, ``llama_decode``, per-sequence
sampler chains, ``llama_memory_seq_rm``); :class:`Slot` is one sequence and what its cache
holds. The scheduling is :mod:`adapters.llm.local_batch`'s. Worker thread only;
``llama_cpp`` is imported inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from adapters.llm.local_vision import BATCH_TOKENS, IMAGE

_TOP_K: Final = 40  # llama-cpp-python's sampling defaults, as Llama.generate used them
_TOP_P: Final = 0.95
_MIN_P: Final = 0.05


@dataclass(eq=False, slots=True)
class Slot:
    """One sequence of the context: what its KV cache holds, and the run using it."""

    seq: int
    cached: list[int] = field(default_factory=list)  # the ids whose KV the sequence holds
    pos: int = 0  # the position of the next id (after an image it may differ from len(cached))
    used: int = 0  # when it was last used (a tick of the batcher), for LRU reuse
    run: Any = None  # the local_batch.Run using the sequence now

    def reusable(self, prompt: list[int]) -> int:
        """How many of ``prompt``'s first ids this slot's cache holds (images never count)."""
        n = 0
        for cached, wanted in zip(self.cached, prompt, strict=False):
            if cached != wanted or wanted == IMAGE:
                break
            n += 1
        return n


class Sequences:
    """A model's batched context: ``parallel`` sequences of ``n_ctx`` tokens each.

    Worker thread only. Raises ``RuntimeError`` when llama.cpp cannot create the context.
    """

    def __init__(self, llama: Any, *, parallel: int, n_ctx: int) -> None:
        import llama_cpp

        self._cpp = llama_cpp
        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)
        params.n_ctx = parallel * n_ctx  # llama.cpp gives each sequence n_ctx (padded to 256)
        params.n_seq_max = parallel
        params.n_batch = BATCH_TOKENS
        params.n_ubatch = BATCH_TOKENS
        params.kv_unified = False  # each sequence its own cells
        # As llama-server: flash attention where the backend has it (on CPU it makes batched
        # decoding of many sequences ~10-15% faster; bench.local).
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if not ctx:
            raise RuntimeError(
                f"llama.cpp could not create a context of {parallel} x {n_ctx} tokens"
            )
        self.ctx: Any = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = n_ctx
        self.slots = [Slot(seq) for seq in range(parallel)]
        self._batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)

    @property
    def busy(self) -> bool:
        """Whether any sequence serves a run now."""
        return any(slot.run is not None for slot in self.slots)

    def forget(self, slot: Slot, keep: int = 0) -> None:
        """Drop ``slot``'s cache from position ``keep`` on (``0``: all of it)."""
        self._cpp.llama_memory_seq_rm(self.memory, slot.seq, keep, -1)
        del slot.cached[keep:]
        slot.pos = keep

    def clear(self) -> None:
        """Start an empty batch."""
        self._batch.n_tokens = 0

    def add(self, token: int, pos: int, seq: int, *, logits: bool) -> int:
        """Append one token to the batch; its index (where its logits will be, if asked)."""
        batch = self._batch
        i = batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
        batch.n_tokens = i + 1
        return int(i)

    @property
    def size(self) -> int:
        """Tokens in the batch now."""
        return int(self._batch.n_tokens)

    def decode(self) -> int:
        """Evaluate the batch; llama.cpp's status (0: done)."""
        return int(self._cpp.llama_decode(self.ctx, self._batch))

    def sampler(self, temperature: float) -> Any:
        """A new sampler chain: greedy at temperature 0, else top-k/top-p/min-p sampling."""
        cpp = self._cpp
        chain = cpp.llama_sampler_chain_init(cpp.llama_sampler_chain_default_params())
        if temperature <= 0:
            cpp.llama_sampler_chain_add(chain, cpp.llama_sampler_init_greedy())
            return chain
        cpp.llama_sampler_chain_add(chain, cpp.llama_sampler_init_top_k(_TOP_K))
        cpp.llama_sampler_chain_add(chain, cpp.llama_sampler_init_top_p(_TOP_P, 1))
        cpp.llama_sampler_chain_add(chain, cpp.llama_sampler_init_min_p(_MIN_P, 1))
        cpp.llama_sampler_chain_add(chain, cpp.llama_sampler_init_temp(temperature))
        cpp.llama_sampler_chain_add(chain, cpp.llama_sampler_init_dist(cpp.LLAMA_DEFAULT_SEED))
        return chain

    def sample(self, sampler: Any, index: int) -> int:
        """The token ``sampler`` picks from the logits at batch ``index`` (-1: the last)."""
        return int(self._cpp.llama_sampler_sample(sampler, self.ctx, index))

    def free_sampler(self, sampler: Any) -> None:
        """Free a chain made by :meth:`sampler`."""
        self._cpp.llama_sampler_free(sampler)

    def close(self) -> None:
        """Free the batch and the context. Idempotent."""
        if self.ctx is not None:
            self._cpp.llama_batch_free(self._batch)
            self._cpp.llama_free(self.ctx)
            self.ctx = None


__all__ = ["Sequences", "Slot"]
