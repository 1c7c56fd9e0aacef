"""An example bot to copy: two tools and a command.

Copy this file, change it, and run it with ``chinwag --bot ./mybot.py chat``.

* A tool is a typed function with a Google-style docstring: the model sees its name, the
  docstring's first paragraph and the ``Args:`` lines; the type hints become its JSON schema.
* ``@tool`` makes a ``read`` tool (no side effect: it runs at once). ``@tool(risk="act")``
  makes one that does something: the person is asked to confirm every call first, and only
  ``TOOL_USERS`` and admins may use it. ``risk="dangerous"`` is for admins only.
* Raise :class:`ToolError` with a short message when a call can't be done: the model is told,
  and the chat goes on.
* ``@command`` adds a ``/name`` command; whatever text the handler returns is sent back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bots import Bot, CommandRequest, ToolError, ToolResult, command, tool

# Where the example keeps its notes (a real bot would use a file or a database).
NOTES: list[str] = []


@tool
def utc_time() -> str:
    """The current date and time in UTC, as ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@tool(risk="act")
def add_note(text: str) -> ToolResult:
    """Add a note to the shared notice board.

    Args:
        text: the note, one short line.
    """
    if not text.strip():
        raise ToolError("a note can't be empty")
    NOTES.append(text.strip())
    # The summary is the factual line the bot itself shows after the action ran.
    return ToolResult(f"note {len(NOTES)} added", summary=f"note {len(NOTES)} added")


@command("notes", "show the notice board")
def show_notes(request: CommandRequest) -> str:
    """Answer ``/notes`` with every note, numbered."""
    if not NOTES:
        return "The notice board is empty."
    return "\n".join(f"{i}. {note}" for i, note in enumerate(NOTES, 1))


bot = Bot(
    name="example",
    persona=(
        "You are a friendly assistant with a shared notice board. Use your tools to tell "
        "the time and to add notes; never claim you added a note unless the tool did."
    ),
    tools=[utc_time, add_note],
    commands=[show_notes],
)
