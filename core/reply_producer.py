"""Reading the model's answer for one reply: build the request, stream it into the run's queue.

:func:`produce` is the producer task of a :class:`~core.reply.ReplyRun`: it builds the prompt
(with the knowledge base's chunks that fit), streams the backend's events into ``run.queue``
under the global cap on concurrent LLM calls, and always ends the queue with an :class:`End`
(carrying the error, if any), which the run's event stream reads.

When the server says the prompt does not fit, the prompt is built again from the budget of
the model's window as the backend knows it now (it may just have learned the real one from
the refusal); only when the window did not change is the prompt budget halved. A server that
refuses images for the model gets the prompt again without them (the run tells the user).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from core.errors import (
    BackendBusy,
    BackendTimeout,
    BackendUnavailable,
    ContextTooLong,
    ImagesRefused,
)
from core.kb import fit_documents
from core.notices import asks_to_continue
from core.prompt import Prompt
from core.types import CompletionRequest, MessageStatus, TextDelta

if TYPE_CHECKING:
    from core.reply import ReplyRun

_log = logging.getLogger(__name__)

ATTEMPTS = 3  # a prompt refused as too long is built again, smaller, up to twice


class End:
    """The producer's last word on the queue: finished, or failed with ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


DONE = End()


async def _request(run: ReplyRun) -> CompletionRequest:
    budget = run.budget

    def build(system_prompt: str) -> Awaitable[Prompt]:
        return run.replier.prompts.build(
            conversation_id=run.placeholder.conversation_id,
            before_seq=run.placeholder.seq,
            system_prompt=system_prompt,
            model=run.model,
            budget=budget.prompt,
            shared=run.key.user_id is None,
        )

    hits = run.grounding.hits if run.grounding is not None else ()
    prompt, run.documents = await fit_documents(build, run.system_prompt, hits)
    run.prompt_tokens = prompt.tokens
    previous = prompt.previous
    run.resuming = None
    if previous is not None and previous.status is MessageStatus.CUT:
        run.resuming = previous.content if asks_to_continue(run.msg.text) else None
    return CompletionRequest(
        messages=prompt.messages,
        model=run.model,
        temperature=run.replier.llm.temperature,
        max_tokens=budget.max_tokens,
        tools=run.tools,
    )


def _shrink(run: ReplyRun) -> None:
    """A smaller budget after the prompt was refused as too long (see the module doc)."""
    old = run.budget
    fresh = run.replier.budgets(run.model)
    run.budget = fresh if fresh.window != old.window else old.halved()
    _log.info(
        "context too long for %s; prompt budget %d -> %d tokens (window %d)",
        run.model,
        old.prompt,
        run.budget.prompt,
        run.budget.window,
    )


async def produce(run: ReplyRun) -> None:
    """Read the backend into ``run.queue``; always end with an :class:`End`."""
    queue = run.queue
    sent_any = False
    for attempt in range(1, ATTEMPTS + 1):
        try:
            request = await _request(run)
            async with run.replier.slots:
                stream = run.replier.backend.stream(request)
                try:
                    async for event in stream:
                        if isinstance(event, TextDelta) and event.text:
                            sent_any = True
                        queue.put_nowait(event)
                finally:
                    closer = getattr(stream, "aclose", None)
                    if closer is not None:
                        await closer()
            run.replier.telemetry.llm_result(True)
            queue.put_nowait(DONE)
            return
        except (BackendUnavailable, BackendTimeout) as exc:
            # A busy local model is there, just full: reachable.
            run.replier.telemetry.llm_result(isinstance(exc, BackendBusy))
            queue.put_nowait(End(exc))
            return
        except ContextTooLong as exc:
            if attempt < ATTEMPTS and not sent_any:
                _shrink(run)
                continue
            queue.put_nowait(End(exc))
            return
        except ImagesRefused as exc:
            # The server is text-only for this model after all: the backend now says
            # so (supports_images), the next prompt leaves the images out, and the
            # user is told once the text is answered.
            _log.info("%s refused images; answering the text alone", exc.model)
            if attempt < ATTEMPTS and not sent_any:
                run.images_refused = True
                continue
            queue.put_nowait(End(exc))
            return
        except asyncio.CancelledError:
            queue.put_nowait(DONE)
            raise
        except Exception as exc:
            queue.put_nowait(End(exc))
            return


__all__ = ["ATTEMPTS", "DONE", "End", "produce"]
