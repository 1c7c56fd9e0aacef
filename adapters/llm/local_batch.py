"""Continuous batching on the local backend's worker thread: many conversations, one context.

Each loaded model gets one llama.cpp context with ``LOCAL_PARALLEL`` sequences
(:class:`Sequences`), each with its own KV cache cells of ``LOCAL_CONTEXT`` tokens. The
:class:`Batcher` runs on the backend's one worker thread and serves every request as a
:class:`Run` in a free :class:`Slot`, the way llama.cpp's own server serves its slots:

- every step builds one ``llama_batch``: the token each generating sequence sampled last,
  then prompt tokens of sequences still reading their prompt, up to ``BATCH_TOKENS`` in all;
  one ``llama_decode`` evaluates it, and each sequence samples its next token from its own
  logits with its own sampler (temperature, reply limit);
- a request joins the running batch at the next step; a long prompt is read in chunks
  between steps, so it never freezes the other streams;
- a slot keeps its sequence's cache when its run ends: the next request whose prompt starts
  with what a free slot holds (the same conversation's next turn) gets that slot and only its
  new tokens are evaluated; otherwise the least recently used free slot is taken;
- a cancelled run (``/stop``, a closed stream) or a failing one ends alone.

Images (``LOCAL_MMPROJ_PATH``) are evaluated by mtmd when a sequence's prompt reaches them;
their positions hold ``IMAGE`` in the cached ids, so no later prompt reuses them.
"""

from __future__ import annotations

import codecs
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from adapters.llm.local_context import Sequences, Slot
from adapters.llm.local_model import END, Job, LoadedModel, ModelSpec, reply_limit
from adapters.llm.local_vision import BATCH_TOKENS, IMAGE
from core.errors import BackendError, ContextTooLong
from core.types import Finish, TextDelta, Usage

_log = logging.getLogger(__name__)

SHARED_PROMPT_TOKENS: Final = 128
"""The most prompt tokens a step reads while other sequences generate (their next token waits
for the step): a long prompt slows their streams down a little instead of freezing them."""


@dataclass(eq=False, slots=True)
class Run:
    """One request being served in a slot: its prompt, how far it is read, its reply so far."""

    job: Job
    prompt: list[int]  # IMAGE where an image's positions are
    images: dict[int, Any]  # index in ``prompt`` -> the image's mtmd chunk
    budget: int  # the most tokens of reply
    sampler: Any  # llama_sampler_p: this request's own chain
    reused: int  # prompt tokens found in the slot's cache, not evaluated again
    fed: int  # prompt ids in the sequence so far
    release: Callable[[], None] = lambda: None  # frees the prompt's image chunks
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    pending: int | None = None  # the token sampled last, evaluated at the next step
    produced: int = 0

    @property
    def reading(self) -> bool:
        """Whether prompt ids remain to be evaluated."""
        return self.fed < len(self.prompt)


class Batcher:
    """Serves every request on the worker thread, up to ``LOCAL_PARALLEL`` per model at once.

    :meth:`submit` is called from the event loop; the serving loop runs as one task of the
    backend's single-thread ``executor`` while there is work, and ends when there is none (so
    loading and unloading, queued on the same executor, never run beside it).
    ``acquire(spec, busy)`` gives the loaded model for a spec, or ``None`` while it cannot
    be loaded without unloading a model that serves runs (``busy``).
    """

    def __init__(
        self,
        submit_task: Callable[[Callable[[], None]], object],
        acquire: Callable[[ModelSpec, Callable[[LoadedModel], bool]], LoadedModel | None],
        models: OrderedDict[str, LoadedModel],
    ) -> None:
        self._submit_task = submit_task
        self._acquire = acquire
        self._models = models
        self._lock = threading.Lock()
        self._inbox: deque[Job] = deque()  # from the loop, under _lock
        self._running = False  # a serving loop is queued or running, under _lock
        self._waiting: deque[Job] = deque()  # worker only: not admitted yet, in order
        self._tick = 0

    def submit(self, job: Job) -> None:
        """Hand ``job`` to the worker (any thread); its events come through ``job.emit``."""
        with self._lock:
            self._inbox.append(job)
            if self._running:
                return
            self._running = True
        self._submit_task(self._serve)

    # --- the serving loop (worker thread) ------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._waiting.extend(self._inbox)
                self._inbox.clear()
                active = [m for m in self._models.values() if _sequences(m).busy]
                if not self._waiting and not active:
                    self._running = False
                    return
            try:
                self._admit_waiting()
                for loaded in list(self._models.values()):
                    sequences = _sequences(loaded)
                    if sequences.busy:
                        self._step_safely(loaded, sequences)
            except Exception as exc:  # a bug here must not leave streams waiting forever
                _log.exception("the local serving loop failed")
                self._fail_all(_failure(exc))

    def _fail_all(self, error: BackendError) -> None:
        for loaded in self._models.values():
            sequences = _sequences(loaded)
            for slot in sequences.slots:
                if slot.run is not None:
                    self._end(sequences, slot, error, forget=True)
        while self._waiting:
            _finish(self._waiting.popleft(), error)

    def _admit_waiting(self) -> None:
        """Start waiting jobs in order; the first that cannot start yet holds the rest."""
        while self._waiting:
            job = self._waiting[0]
            if job.cancel.is_set():
                self._waiting.popleft()
                _finish(job, END)
                continue
            try:
                started = self._admit(job)
            except BackendError as exc:
                started = True
                _finish(job, exc)
            except Exception as exc:  # llama.cpp or a chat template failed on this request
                _log.exception("local generation could not start")
                started = True
                _finish(job, _failure(exc))
            if not started:
                return
            self._waiting.popleft()

    def _admit(self, job: Job) -> bool:
        """Give ``job`` a slot and prepare its run; ``False`` when it must wait."""
        loaded = self._acquire(job.spec, lambda m: _sequences(m).busy)
        if loaded is None:
            return False
        sequences = _sequences(loaded)
        free = [slot for slot in sequences.slots if slot.run is None]
        if not free:
            return False
        prompt, images, release = _prompt(loaded, job)
        n_ctx = job.spec.n_ctx
        if len(prompt) >= n_ctx:
            release()
            raise ContextTooLong(
                n_ctx, f"the prompt has {len(prompt)} tokens; the context holds {n_ctx}"
            )
        slot, keep = choose_slot(free, prompt)
        keep = min(keep, len(prompt) - 1)  # the last prompt token is evaluated for its logits
        sequences.forget(slot, keep)
        self._tick += 1
        slot.used = self._tick
        slot.run = Run(
            job=job,
            prompt=prompt,
            images=images,
            budget=reply_limit(job.max_tokens, n_ctx, len(prompt)),
            sampler=sequences.sampler(job.temperature),
            reused=keep,
            fed=keep,
            release=release,
        )
        return True

    def _step_safely(self, loaded: LoadedModel, sequences: Sequences) -> None:
        try:
            self._step(loaded, sequences)
        except Exception as exc:
            _log.exception("local generation failed")
            for slot in sequences.slots:
                if slot.run is not None:
                    self._end(sequences, slot, _failure(exc), forget=True)

    def _step(self, loaded: LoadedModel, sequences: Sequences) -> None:
        """One step: end cancelled runs, read images due, decode one batch, sample."""
        for slot in sequences.slots:
            run = slot.run
            if run is not None and run.job.cancel.is_set():
                self._end(sequences, slot, END)
        for slot in _running(sequences):
            run = slot.run
            assert run is not None
            if run.reading and run.prompt[run.fed] == IMAGE:
                self._read_image(loaded, sequences, slot, run)
        sequences.clear()
        asked: list[tuple[Slot, int]] = []  # (slot, batch index) of each logits to sample
        for slot in _running(sequences):
            run = slot.run
            assert run is not None
            if run.pending is not None:
                asked.append((slot, sequences.add(run.pending, slot.pos, slot.seq, logits=True)))
        decoding = len(asked)
        reading: list[tuple[Slot, list[int]]] = []
        # While others generate, a prompt is read in small chunks so their streams go on.
        limit = SHARED_PROMPT_TOKENS if asked else BATCH_TOKENS
        for slot in sorted(_running(sequences), key=lambda s: s.used):
            room = min(BATCH_TOKENS - sequences.size, limit - sum(len(c) for _, c in reading))
            run = slot.run
            assert run is not None
            if room <= 0:
                break
            if not run.reading or run.prompt[run.fed] == IMAGE:
                continue
            chunk = _text_chunk(run, room)
            last = len(run.prompt) - 1
            for i, token in enumerate(chunk):
                index = sequences.add(token, slot.pos + i, slot.seq, logits=run.fed + i == last)
                if run.fed + i == last:
                    asked.append((slot, index))
            reading.append((slot, chunk))
        if sequences.size == 0:
            return
        # A batch of one prompt alone may be aborted by its /stop (ggml checks between graph
        # nodes); a batch shared with others is short and always completes.
        solo = reading[0][0] if len(reading) == 1 and not decoding else None
        cancel = solo.run.job.cancel if solo is not None and solo.run is not None else None
        if cancel is not None:
            loaded.abort_on(sequences.ctx, cancel)
        try:
            status = sequences.decode()
        finally:
            if cancel is not None:
                loaded.abort_on(sequences.ctx, None)
        if status != 0 and solo is not None and cancel is not None and cancel.is_set():
            self._end(sequences, solo, END)
            sequences.forget(solo, solo.pos)  # what the aborted batch may have left
            return
        if status != 0:
            failed = {slot.seq for slot, _ in asked} | {slot.seq for slot, _ in reading}
            error = BackendError(f"llama_decode failed with status {status}")
            for slot in sequences.slots:
                if slot.run is not None and slot.seq in failed:
                    self._end(sequences, slot, error, forget=True)
            return
        for slot, _ in asked:
            run = slot.run
            assert run is not None
            if run.pending is not None:
                slot.cached.append(run.pending)
                slot.pos += 1
                run.pending = None
        for slot, chunk in reading:
            run = slot.run
            assert run is not None
            slot.cached.extend(chunk)
            slot.pos += len(chunk)
            run.fed += len(chunk)
        for slot, index in asked:
            self._sample(loaded, sequences, slot, index)

    def _read_image(self, loaded: LoadedModel, sequences: Sequences, slot: Slot, run: Run) -> None:
        """Evaluate the image the run's prompt reached (mtmd decodes it into the sequence)."""
        projector = loaded.projector
        assert projector is not None
        chunk = run.images[run.fed]
        n = 0
        while run.fed + n < len(run.prompt) and run.prompt[run.fed + n] == IMAGE:
            n += 1
        loaded.abort_on(sequences.ctx, run.job.cancel)
        try:
            pos = projector.evaluate_image(sequences.ctx, chunk, slot.pos, slot.seq)
        except Exception as exc:
            # Aborted (cancelled while it was read) or failed: this run alone ends.
            outcome = END if run.job.cancel.is_set() else _failure(exc)
            if outcome is not END:
                _log.warning("an image could not be evaluated: %s", exc)
            self._end(sequences, slot, outcome, forget=True)
            return
        finally:
            loaded.abort_on(sequences.ctx, None)
        slot.cached.extend([IMAGE] * n)
        slot.pos = pos
        run.fed += n

    def _sample(self, loaded: LoadedModel, sequences: Sequences, slot: Slot, index: int) -> None:
        run = slot.run
        assert run is not None
        token = sequences.sample(run.sampler, index)
        job = run.job
        if job.cancel.is_set():
            self._end(sequences, slot, END)
            return
        if loaded.stops(token):
            self._end(sequences, slot, "stop")
            return
        run.produced += 1
        text = run.decoder.decode(loaded.piece(token))
        if text:
            job.emit(TextDelta(text))
        if run.produced >= run.budget:
            self._end(sequences, slot, "length")
            return
        run.pending = token

    def _end(
        self,
        sequences: Sequences,
        slot: Slot,
        outcome: str | object | BaseException,
        *,
        forget: bool = False,
    ) -> None:
        """End ``slot``'s run: ``"stop"``/``"length"`` (a reply), ``END`` (cancelled) or an error.

        ``forget`` drops the sequence's cache (after a failed evaluation its state is unknown).
        """
        run = slot.run
        assert run is not None
        slot.run = None
        self._tick += 1
        slot.used = self._tick
        sequences.free_sampler(run.sampler)
        run.release()
        if forget:
            sequences.forget(slot)
        if isinstance(outcome, str):
            tail = run.decoder.decode(b"", final=True)
            if tail:
                run.job.emit(TextDelta(tail))
            run.job.emit(Finish(outcome))
            run.job.emit(
                Usage(
                    prompt_tokens=len(run.prompt),
                    completion_tokens=run.produced,
                    cached_tokens=run.reused,
                )
            )
            outcome = END
        _finish(run.job, outcome)


def _sequences(loaded: LoadedModel) -> Sequences:
    sequences = loaded.sequences
    assert isinstance(sequences, Sequences)
    return sequences


def _running(sequences: Sequences) -> Iterator[Slot]:
    return (slot for slot in sequences.slots if slot.run is not None)


def choose_slot(free: list[Slot], prompt: list[int]) -> tuple[Slot, int]:
    """The free slot for ``prompt`` and how much of its cache the prompt reuses.

    The slot whose cache holds most of the prompt when it keeps at least half of that cache
    (this conversation's last turn, cut where the history was re-rendered differently), or
    when it saves evaluating at least half of the prompt over the least recently used slot
    (the same prompt again: a retried reply); otherwise the least recently used, so other
    conversations' caches last as long as they can.
    """
    reuse = {slot.seq: slot.reusable(prompt) for slot in free}  # each cache compared once
    best = max(free, key=lambda slot: reuse[slot.seq])
    oldest = min(free, key=lambda slot: slot.used)
    keep, kept_by_oldest = reuse[best.seq], reuse[oldest.seq]
    if keep > 0 and (keep * 2 >= len(best.cached) or (keep - kept_by_oldest) * 2 >= len(prompt)):
        return best, keep
    return oldest, kept_by_oldest


def _text_chunk(run: Run, room: int) -> list[int]:
    """The run's next prompt ids to evaluate: up to ``room``, stopping before an image."""
    chunk: list[int] = []
    for token in run.prompt[run.fed : run.fed + room]:
        if token == IMAGE:
            break
        chunk.append(token)
    return chunk


def _prompt(loaded: LoadedModel, job: Job) -> tuple[list[int], dict[int, Any], Callable[[], None]]:
    """The job's prompt ids, its images' chunks by index, and what frees them."""
    if not job.images:
        return loaded.render(job.messages, job.tools), {}, lambda: None
    projector = loaded.projector
    if projector is None:
        raise BackendError("this model has no projector")
    media = projector.tokenize(loaded.prompt(job.messages, job.tools), job.images)
    return media.ids, media.images, media.close


def _finish(job: Job, outcome: object) -> None:
    """Send the job's last event (``END`` or an error) and tell the loop it left the worker."""
    job.emit(outcome)
    job.done()


def _failure(exc: Exception) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    error = BackendError(f"local generation failed: {exc}")
    error.__cause__ = exc
    return error


__all__ = ["Batcher", "Run", "choose_slot"]
