"""Installing: llama.cpp is compiled only for a local model; version, licence, progress.

The Makefile's choice is tested with ``make -n`` (it prints what it would run, runs nothing)
against a scratch virtualenv directory, so no real build happens.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bots import cli

ROOT = Path(__file__).resolve().parents[1]
WANTS_LOCAL = ROOT / "scripts" / "wants-local.sh"
STEP = ROOT / "scripts" / "step.sh"
LLAMA_BUILD = "scripts/install-llama.sh"
CHINWAG_INSTALL = "installing chinwag and its dependencies"


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in {"LLM_BACKEND", "OPENAI_API_KEY", "OPENAI_BASE_URL"}
        and not k.startswith(("MAKE", "MFLAGS"))
    }
    env.update(extra)
    return env


def wants_local(env_file: Path, *, why: bool = False, **environment: str) -> str:
    args = ["bash", str(WANTS_LOCAL), *(["--why"] if why else []), str(env_file)]
    done = subprocess.run(
        args, env=clean_env(**environment), capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("dotenv", "environment", "expected"),
    [
        ("", {}, "yes"),  # a fresh clone: the bundled model
        ("OPENAI_API_KEY=sk-abc\n", {}, "no"),
        ('export OPENAI_BASE_URL="http://localhost:11434/v1"  # Ollama\n', {}, "no"),
        ("OPENAI_API_KEY=\nOPENAI_BASE_URL= # later\n", {}, "yes"),  # empty counts as unset
        ("# OPENAI_API_KEY=sk-abc\n", {}, "yes"),
        ("openai_api_key=sk-abc\n", {}, "no"),  # names are case-insensitive, as in chinwag
        ("OPENAI_API_KEY=sk-abc\nLLM_BACKEND=local\n", {}, "yes"),  # forced
        ("LLM_BACKEND=openai\n", {}, "no"),
        ("", {"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"}, "no"),
        ("LLM_BACKEND=local\n", {"LLM_BACKEND": "openai"}, "no"),  # the environment wins
        ("OPENAI_API_KEY=sk-abc\n", {"LLM_BACKEND": "local"}, "yes"),
        ("LLM_BACKEND=openai\n", {"LLM_BACKEND": ""}, "no"),  # empty: the file decides
    ],
)
def test_llama_is_wanted_only_without_an_api_backend(tmp_path, dotenv, environment, expected):
    env_file = tmp_path / ".env"
    env_file.write_text(dotenv)
    assert wants_local(env_file, **environment) == expected


def test_the_reason_names_the_setting_and_never_its_value(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_API_KEY=sk-very-secret-key\n")
    why = wants_local(env_file, why=True)
    assert "OPENAI_API_KEY is set" in why
    assert str(env_file) in why
    assert "sk-very-secret-key" not in why


def make_dry_run(venv: Path, env_file: Path, target: str) -> str:
    """What ``make TARGET`` would run for a virtualenv at ``venv`` (nothing is run)."""
    done = subprocess.run(
        [
            "make",
            "-n",
            "--no-print-directory",
            "-C",
            str(ROOT),
            target,
            f"VENV={venv}",
            f"ENV_FILE={env_file}",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_make_builds_llama_only_when_used_and_after_a_switch_to_local(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")  # the virtualenv exists already
    env_file = tmp_path / ".env"

    env_file.write_text("OPENAI_API_KEY=sk-abc\n")
    plan = make_dry_run(venv, env_file, "install")
    assert CHINWAG_INSTALL in plan
    assert LLAMA_BUILD not in plan
    stamp = re.search(r"touch (\S+\.installed-base-\d+)", plan)
    assert stamp is not None
    Path(stamp.group(1)).touch()  # as if that install had run
    assert make_dry_run(venv, env_file, "install") == "make: Nothing to be done for 'install'.\n"

    # Asked for, or needed by the tests: built although an API backend is configured.
    assert LLAMA_BUILD in make_dry_run(venv, env_file, "install-local")
    assert LLAMA_BUILD in make_dry_run(venv, env_file, "install-dev")

    env_file.write_text("# switched to the local model\nLLM_BACKEND=local\n")
    plan = make_dry_run(venv, env_file, "install")
    assert LLAMA_BUILD in plan
    assert CHINWAG_INSTALL not in plan  # the rest is already installed


def test_make_on_a_fresh_clone_builds_llama_for_the_bundled_model(tmp_path):
    plan = make_dry_run(tmp_path / "venv", tmp_path / "missing.env", "run")
    assert plan.index(CHINWAG_INSTALL) < plan.index(LLAMA_BUILD) < plan.index("chinwag run")


def test_the_local_extra_pins_the_llama_version_the_script_builds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    built = re.search(
        r'LLAMA_CPP_VERSION="\$\{LLAMA_CPP_VERSION:-([^}]+)\}"',
        (ROOT / LLAMA_BUILD).read_text(),
    )
    assert built is not None
    assert project["optional-dependencies"]["local"] == [f"llama-cpp-python=={built.group(1)}"]


def test_the_licence_file_is_the_apache_licence_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_version_option_prints_the_project_version():
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = subprocess.run(
        [sys.executable, "-m", "bots.cli", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.fullmatch(rf"chinwag {re.escape(expected)}( \(source tree\))?\n", done.stdout)


def test_version_in_a_source_tree_without_metadata(monkeypatch):
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert cli.package_version() == f"{expected} (source tree)"


def step(tmp_path: Path, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
    log = str(tmp_path / "logs" / "step.log")
    return subprocess.run(
        ["bash", str(STEP), "building the thing", log, "--", "bash", "-c", script],
        env=clean_env(**extra),
        capture_output=True,
        text=True,
    )


def test_a_step_hides_pip_noise_but_shows_real_warnings(tmp_path):
    done = step(
        tmp_path,
        "echo \"WARNING: Location 'file:///opt/pypi/simple' is ignored: it is not a directory\";"
        " echo 'DEPRECATION: legacy editable install'; echo 'WARNING: yanked version'",
    )
    assert done.returncode == 0
    assert done.stdout.startswith("building the thing ...\n")
    assert "yanked version" in done.stdout
    assert "Location" not in done.stdout
    assert "DEPRECATION" not in done.stdout
    assert re.search(r"building the thing: done in \d+s\n$", done.stdout)
    assert "Location" in (tmp_path / "logs" / "step.log").read_text()  # kept in the log


def test_a_failed_step_shows_the_log_tail_and_where_the_log_is(tmp_path):
    done = step(tmp_path, "echo compiling; echo 'fatal error: Python.h: No such file' >&2; exit 3")
    assert done.returncode == 3
    log = tmp_path / "logs" / "step.log"
    assert "building the thing: FAILED after" in done.stdout
    assert str(log) in done.stdout
    assert "fatal error: Python.h: No such file" in done.stdout


@pytest.mark.slow
def test_a_long_step_says_it_is_still_running(tmp_path):
    done = step(tmp_path, "sleep 3", STEP_PROGRESS_SECONDS="1")
    assert done.returncode == 0
    assert "    ... still building the thing (1s)" in done.stdout
