"""Loopback servers and in-process fakes that tests drive real client libraries against."""
