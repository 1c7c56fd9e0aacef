"""The composition root: CLI, settings loading, wiring, the event loop."""
