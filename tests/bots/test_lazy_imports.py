"""Commands that only read settings start without the platform and model libraries.

``chinwag --help`` and ``chinwag db ...`` run in a real process; the test reads which modules
that process ended up with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes, a second or two each

# The libraries only a running adapter or backend needs (openai too: it pulls in httpx).
HEAVY = ("telegram", "discord", "llama_cpp", "openai")

PROBE = """
import json, sys
modules_file, code, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
status = 0
try:
    exec(code)
except SystemExit as exc:
    status = exc.code
with open(modules_file, "w") as f:
    json.dump({"status": status, "modules": sorted(sys.modules)}, f)
"""

RUN_CLI = "from bots.cli import main; sys.exit(main(argv))"


def run_probe(tmp_path: Path, code: str, *argv: str) -> tuple[int, set[str], str]:
    """Run ``code`` in a fresh interpreter; its exit status, loaded modules and stdout."""
    modules_file = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(modules_file), code, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert modules_file.exists(), result.stderr
    report = json.loads(modules_file.read_text())
    return report["status"], set(report["modules"]), result.stdout


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHINWAG_DATA_DIR", str(tmp_path / "data"))


def test_help_loads_no_platform_or_model_library(tmp_path):
    status, modules, out = run_probe(tmp_path, RUN_CLI, "--help")
    assert status == 0
    assert out.startswith("usage: chinwag")
    assert heavy_in(modules) == []


def test_db_upgrade_and_current_load_no_platform_or_model_library(tmp_path):
    status, modules, out = run_probe(tmp_path, RUN_CLI, "db", "upgrade")
    assert status == 0
    assert out.startswith("database at ")
    assert heavy_in(modules) == []
    status, modules, out = run_probe(tmp_path, RUN_CLI, "db", "current")
    assert status == 0
    assert out.strip()
    assert not out.startswith("base")  # the revision upgrade just applied
    assert heavy_in(modules) == []


def test_the_probe_sees_a_platform_library_once_an_adapter_is_used(tmp_path):
    _, modules, _ = run_probe(tmp_path, "from adapters.telegram import TelegramAdapter")
    assert "telegram" in heavy_in(modules)


def test_a_bot_files_import_line_loads_no_vendor_library(tmp_path):
    code = "from bots import Bot, tool, command, Risk, ToolError, ToolResult, CommandRequest"
    status, modules, _ = run_probe(tmp_path, code)
    assert status == 0
    vendor = ("sqlalchemy", "aiosqlite", "asyncpg", "alembic", "httpx", "aiohttp", "mcp")
    assert heavy_in(modules) == []
    assert sorted(m for m in modules if m.split(".")[0] in vendor) == []
    assert "core.tools" in modules  # the probe really imported the bot API
