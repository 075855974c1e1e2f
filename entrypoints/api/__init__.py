"""The HTTP API (FastAPI): app factory, API-key auth, one module per resource."""
