"""LOG_FORMAT: text or one JSON object per line, secrets redacted in both, tracebacks too."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bots.config import BotSettings, configure_logging, load
from core.errors import ConfigError

SECRET = "tg-secret-token-123456"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def log_a_failure() -> None:
    log = logging.getLogger("chinwag.test")
    try:
        raise RuntimeError(f"could not reach https://api.example/bot{SECRET}/getMe")
    except RuntimeError:
        log.exception(
            "polling failed for %s", "telegram", extra={"chat_id": 42, "url": f"x/{SECRET}"}
        )


def test_json_lines_hold_message_traceback_and_extras_without_the_secret(
    capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    configure_logging("INFO", [SECRET], fmt="json")
    log_a_failure()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "ERROR"
    assert record["logger"] == "chinwag.test"
    assert record["message"] == "polling failed for telegram"
    assert record["time"].endswith("Z")
    assert "RuntimeError: could not reach https://api.example/bot***/getMe" in record["exc_info"]
    assert record["chat_id"] == 42
    assert record["url"] == "x/***"
    assert SECRET not in lines[0]


def test_text_format_redacts_the_traceback(
    capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    configure_logging("INFO", [SECRET], fmt="text")
    log_a_failure()
    err = capsys.readouterr().err
    assert " ERROR chinwag.test: polling failed for telegram" in err
    assert "Traceback" in err
    assert "bot***/getMe" in err
    assert SECRET not in err


def test_log_file_gets_everything_and_stderr_only_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    path = configure_logging("DEBUG", [], log_file=tmp_path / "data" / "chinwag.log")
    assert path == tmp_path / "data" / "chinwag.log"
    logging.getLogger("chinwag.test").info("started")
    logging.getLogger("chinwag.test").warning("disk almost full")
    err = capsys.readouterr().err
    assert "started" not in err
    assert "disk almost full" in err
    log = path.read_text()
    assert "INFO chinwag.test: started" in log
    assert "WARNING chinwag.test: disk almost full" in log


def test_unwritable_log_file_falls_back_to_stderr_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert configure_logging("INFO", [], log_file=blocker / "chinwag.log") is None
    logging.getLogger("chinwag.test").info("quiet")
    err = capsys.readouterr().err
    assert "cannot write the log file" in err
    assert "quiet" not in err


def test_an_unknown_log_format_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ConfigError) as raised:
        load(BotSettings, None)
    assert raised.value.variable == "LOG_FORMAT"
    assert "json" in str(raised.value)
