"""The knowledge base's adapters: document readers, embedders and the SQL knowledge store."""
