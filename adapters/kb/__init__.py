"""The knowledge base's adapters: document readers, ingestion, embedders and the SQL store.

Import the module you need (``adapters.kb.ingest``); this package imports nothing itself, so
reading a text file never loads pypdf or an embedding model.
"""
