"""``deploy/chinwag.service``: systemd accepts it; it restarts, stops gracefully, is locked down."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import CoreSettings

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "chinwag.service"


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value, as systemd reads them (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60, "": 1}
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    return float(number) * units[value[len(number) :]]


def test_the_unit_runs_chinwag_with_the_env_file_and_restarts_on_failure() -> None:
    service = parse(UNIT.read_text())["Service"]
    assert service["ExecStart"][0].endswith("/.venv/bin/chinwag run")
    assert service["EnvironmentFile"] == ["/etc/chinwag/chinwag.env"]
    assert "CHINWAG_DATA_DIR=/var/lib/chinwag" in service["Environment"]
    assert service["StateDirectory"] == ["chinwag"]
    assert service["Restart"] == ["on-failure"]
    assert seconds(service["RestartSec"][0]) > 0
    assert service["RestartPreventExitStatus"] == ["2"]  # a configuration error, not a crash
    assert service["User"][0] not in ("", "root")


def test_stop_waits_longer_than_the_shutdown_grace() -> None:
    service = parse(UNIT.read_text())["Service"]
    grace = CoreSettings.model_fields["shutdown_grace_seconds"].default
    assert seconds(service["TimeoutStopSec"][0]) > grace


def test_the_unit_is_hardened() -> None:
    service = parse(UNIT.read_text())["Service"]
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "RestrictNamespaces",
    ):
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"]
    assert service["SystemCallFilter"] == ["@system-service"]
    assert set(service["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert service["CapabilityBoundingSet"] == [""]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at one that does
    unit = tmp_path / "chinwag.service"
    text = UNIT.read_text()
    program = parse(text)["Service"]["ExecStart"][0].split()[0]
    unit.write_text(text.replace(program, sys.executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
