"""One line of ``chinwag doctor``'s report: :class:`Check`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Check:
    """One line of doctor's report.

    Attributes:
        status: ``ok``, ``warn``, ``FAIL`` or ``skip`` (not configured, nothing to check).
        what: what was checked (``configuration``, ``database``, ``LLM``, ``Telegram``...).
        detail: what doctor found.
        fix: what to do, for anything not ok.
    """

    status: str
    what: str
    detail: str
    fix: str | None = None

    @property
    def passed(self) -> bool:
        """Whether this line lets doctor exit 0."""
        return self.status in ("ok", "skip")

    def line(self) -> str:
        """The line as printed: ``FAIL database: ... -> do this``."""
        text = f"{self.status:<4} {self.what}: {self.detail}"
        return f"{text} -> {self.fix}" if self.fix else text
