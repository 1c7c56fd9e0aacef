"""LLM backends: ``openai`` (any OpenAI-compatible server) and ``local`` (in-process model).

Import the backend module you need (``adapters.llm.openai``); this package imports no
vendor library itself, so choosing one backend never loads the other's dependencies.
"""
