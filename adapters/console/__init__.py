"""The terminal chat adapter."""

from adapters.console.adapter import ConsoleAdapter

__all__ = ["ConsoleAdapter"]
