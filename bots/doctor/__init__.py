"""``chinwag doctor``: check a setup end to end, one line per check; and ``run``'s start checks.

Checks, in order: the configuration (every settings group loads; variables that look like
chinwag's but are not, with a "did you mean"), the database (reachable, migrations current),
the LLM (an OpenAI-compatible server answers ``/v1/models`` and lists the model; or the local
GGUF model loads, and its vision projector with it), speech to text (the server answers
``/v1/models``, takes the key and lists ``STT_MODEL`` when it lists models), Telegram
(``getMe``, webhook state), Discord (the bot user, the Message Content intent) and Redis
(``REDIS_URL`` answers, its version; no line when unset), the network
checks side by side. Each line starts with ``ok``, ``warn``,
``FAIL`` or ``skip`` (not configured); anything not ok says what to do. The exit status is 0
only when every line is ``ok`` or ``skip``: a warning fails doctor too, because what it warns
about (a misspelled variable above all) is a setting chinwag silently ignores.

:func:`startup_checks` is the cheap part ``chinwag run`` does first: unknown variables are
logged as warnings, and the model is looked up at the server (a refused key or a model the
server does not have stops the start as a configuration error; a server that does not answer
is only logged, since it may come up after chinwag).

Where each part lives:

- :mod:`bots.doctor.check`: :class:`Check`, one line of the report.
- :mod:`bots.doctor.configuration`: the settings classes, unknown variables ("did you mean"),
  loading every settings group.
- :mod:`bots.doctor.database`: the database check.
- :mod:`bots.doctor.llm`: the LLM (server or local model), the vision projector, speech to text.
- :mod:`bots.doctor.platforms`: Telegram and Discord.
- :mod:`bots.doctor.shared_state`: Redis (``REDIS_URL``).
- :mod:`bots.doctor.report`: running the checks, printing the report, the CLI registration.
- :mod:`bots.doctor.startup`: :func:`startup_checks` for ``chinwag run``.
"""

from bots.doctor.check import Check
from bots.doctor.configuration import (
    ALIASES,
    NOT_SETTINGS,
    SETTINGS_MODULES,
    known_variables,
    settings_classes,
    unknown_variables,
)
from bots.doctor.report import add_doctor_parser, diagnose, doctor_command, run_doctor
from bots.doctor.startup import startup_checks

__all__ = [
    "ALIASES",
    "NOT_SETTINGS",
    "SETTINGS_MODULES",
    "Check",
    "add_doctor_parser",
    "diagnose",
    "doctor_command",
    "known_variables",
    "run_doctor",
    "settings_classes",
    "startup_checks",
    "unknown_variables",
]
