"""The fakes a chinwag container talks to, and one chat through them (scripts/container-test.sh).

``python -m tests.fakes.serve_container_peers --ready FILE`` starts the fake Telegram Bot API
and the fake OpenAI server on every interface (a container reaches the host through its
bridge, not the host's loopback), writes ``FILE`` with their ports, the bot token and the API
key as shell ``KEY=value`` lines once they listen, waits for the bot to poll, sends one user
message, waits for the bot's reply and checks its text. It prints one line with the outcome
and exits 0 when the reply came and is right, 1 when not (or after ``--timeout`` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import sys
from pathlib import Path

from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_server import FakeChat, FakeTelegram, FakeUser

#: The user's message and the fake model's answer to it (a system prompt, then this message).
MESSAGE = "hello from the container test"
EXPECTED_REPLY = f"You said: {MESSAGE}. I received 2 messages."
USER = FakeUser(7001, "Grace", "grace_h")
CHAT = FakeChat(USER.id, "private")


def _write_ready(path: Path, values: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items()))
    os.replace(tmp, path)  # the script never reads half a file


async def _serve(ready: Path, timeout: float) -> str | None:
    """Chat once; ``None`` when the reply is right, else what went wrong."""
    api_key = "sk-container-" + secrets.token_hex(8)
    token = f"{USER.id + 1000}:container-" + secrets.token_hex(12)
    async with (
        FakeTelegram(token=token, host="0.0.0.0") as telegram,
        FakeOpenAIServer(api_key=api_key, host="0.0.0.0") as llm,
    ):
        _write_ready(
            ready,
            {
                "TELEGRAM_PORT": str(telegram.port),
                "OPENAI_PORT": str(llm.port),
                "TELEGRAM_BOT_TOKEN": telegram.token,
                "OPENAI_API_KEY": api_key,
                "CHAT_ID": str(CHAT.id),
                "MESSAGE": MESSAGE,
                "EXPECTED_REPLY": EXPECTED_REPLY,
            },
        )
        print(f"fakes: Telegram on port {telegram.port}, OpenAI on port {llm.port}", flush=True)
        try:
            await telegram.wait_for(lambda: bool(telegram.calls_to("getUpdates")), timeout)
        except TimeoutError:
            return f"the bot never polled the fake Telegram within {timeout:.0f} s"
        print("fakes: the bot polls; sending one message", flush=True)
        telegram.send_text(CHAT, USER, MESSAGE)
        try:
            await telegram.wait_for(
                lambda: any(m.text == EXPECTED_REPLY for m in telegram.bot_messages(CHAT.id)),
                timeout=60,
            )
        except TimeoutError:
            seen = [m.text for m in telegram.bot_messages(CHAT.id)]
            return f"no reply {EXPECTED_REPLY!r} within 60 s; the bot sent {seen!r}"
        if not llm.chat_requests:
            return "the reply did not come from the fake OpenAI server"
        print(f"fakes: the bot replied {EXPECTED_REPLY!r}", flush=True)
    return None


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; the exit status says whether the chat worked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ready", type=Path, required=True, help="file written when listening")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a poll")
    args = parser.parse_args(argv)
    problem = asyncio.run(_serve(args.ready, args.timeout))
    if problem is not None:
        print(f"fakes: FAILED: {problem}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
