"""The daemon's HTTP endpoints (FastAPI, served by uvicorn): the MinIO webhook today."""
