"""What the engine and adapters report shows up under the documented metric names."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families
from telegram.error import RetryAfter

from adapters.observability import PrometheusTelemetry
from adapters.observability.metrics import LLM_FAILURE_WINDOW
from adapters.telegram.settings import TelegramSettings
from adapters.telegram.transport import Transport


def _value(telemetry: PrometheusTelemetry, name: str, **labels: str) -> float:
    body, content_type = telemetry.exposition()
    assert content_type.startswith("text/plain")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_a_telegram_429_is_waited_out_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # as `chinwag` sets it
    telemetry = PrometheusTelemetry()
    transport = Transport(cast(Any, None), TelegramSettings(_env_file=None), telemetry)
    attempts = 0

    async def send() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RetryAfter(timedelta(seconds=0.01))
        return "sent"

    assert await transport.call(42, send) == "sent"
    assert attempts == 2
    assert _value(telemetry, "chinwag_flood_waits_total", platform="telegram") == 1


def test_readiness_forgets_an_llm_failure_after_a_success_or_the_window() -> None:
    now = [1000.0]
    telemetry = PrometheusTelemetry(clock=lambda: now[0])
    assert telemetry.llm_problem() is None
    telemetry.llm_result(False)
    assert telemetry.llm_problem() == "LLM backend not reachable recently"
    telemetry.llm_result(True)
    assert telemetry.llm_problem() is None
    telemetry.llm_result(False)
    now[0] += LLM_FAILURE_WINDOW + 1
    assert telemetry.llm_problem() is None
    assert _value(telemetry, "chinwag_llm_calls_total", result="unreachable") == 2
    assert _value(telemetry, "chinwag_llm_calls_total", result="ok") == 1


def test_two_telemetries_count_apart() -> None:
    first, second = PrometheusTelemetry(), PrometheusTelemetry()
    first.message_received("telegram")
    first.tool_call("lights_on", "pending")
    assert _value(first, "chinwag_messages_received_total", platform="telegram") == 1
    assert _value(second, "chinwag_messages_received_total", platform="telegram") == 0
    assert _value(first, "chinwag_tool_calls_total", tool="lights_on", decision="pending") == 1


def test_prompt_tokens_served_from_a_cache_are_counted_apart() -> None:
    telemetry = PrometheusTelemetry()
    telemetry.llm_tokens(1_000, 20, cached=900)  # a warm second turn
    telemetry.llm_tokens(300, 10)  # a cold one
    assert _value(telemetry, "chinwag_llm_tokens_total", direction="prompt") == 1_300
    assert _value(telemetry, "chinwag_llm_tokens_total", direction="completion") == 30
    assert _value(telemetry, "chinwag_llm_tokens_total", direction="cached") == 900
