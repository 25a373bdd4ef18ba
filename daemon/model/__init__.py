"""Values: the frozen types everything else passes around (events, decisions, run keys, outcomes).

This layer imports nothing but the standard library's pure modules and pydantic-free dataclasses; the
import-linter contract in ``pyproject.toml`` forbids service clients, drivers, HTTP and ML libraries here.
"""
