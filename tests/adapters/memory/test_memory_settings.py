"""``DATABASE_URL`` handling: the URLs users have become async URLs, or a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.memory.settings import MemorySettings, normalize_database_url, render_url
from core.errors import ConfigError


def settings(**values: Any) -> MemorySettings:
    return MemorySettings(_env_file=None, **values)


def test_unset_means_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "deep" / "data"
    url = settings(chinwag_data_dir=data).async_url()
    assert url == f"sqlite+aiosqlite:///{data / 'chinwag.db'}"
    assert data.is_dir()


def test_the_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://bot:pw@db:5432/chinwag")
    monkeypatch.setenv("DB_AUTO_MIGRATE", "false")
    loaded = MemorySettings(_env_file=None)
    assert loaded.async_url() == "postgresql+asyncpg://bot:pw@db:5432/chinwag"
    assert loaded.db_auto_migrate is False
    monkeypatch.setenv("DATABASE_URL", "")  # empty counts as unset
    monkeypatch.setenv("CHINWAG_DATA_DIR", str(tmp_path / "d"))
    assert MemorySettings(_env_file=None).async_url().endswith("/d/chinwag.db")


def test_default_data_dir_is_the_platform_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("CHINWAG_DATA_DIR")
    assert settings().data_dir() == Path(platformdirs.user_data_dir("chinwag"))
    assert MemorySettings.model_fields["db_auto_migrate"].default is True


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///relative.db", "sqlite+aiosqlite:///relative.db"),
        ("sqlite:////var/lib/chinwag/c.db", "sqlite+aiosqlite:////var/lib/chinwag/c.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("postgres://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        (
            "postgresql://u:p@h:5433/db?sslmode=require",
            "postgresql+asyncpg://u:p@h:5433/db?sslmode=require",
        ),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("  postgresql://u@h/db\n", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_urls_get_their_async_driver(given: str, expected: str) -> None:
    assert settings(database_url=given).async_url() == expected


@pytest.mark.parametrize(
    "given",
    [
        "mysql://root:s3cr3t-pw@db/chinwag",
        "postgresql+psycopg2://root:s3cr3t-pw@db/chinwag",
        "sqlite+pysqlite:///x.db",
        "s3cr3t-pw",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql://root:s3cr3t-pw@db:notaport/chinwag",
    ],
)
def test_unsupported_urls_name_the_variable_and_hide_the_password(given: str) -> None:
    with pytest.raises(ConfigError) as caught:
        normalize_database_url(given)
    error = caught.value
    assert error.variable == "DATABASE_URL"
    assert error.example
    assert "s3cr3t-pw" not in str(error)
    assert error.__cause__ is None or "s3cr3t-pw" not in str(error.__cause__)


def test_render_url_hides_the_password() -> None:
    shown = render_url("postgresql+asyncpg://bot:hunter2@db:5432/chinwag")
    assert "hunter2" not in shown and "bot:***@db" in shown
    assert "hunter2" not in render_url("nonsense hunter2")
