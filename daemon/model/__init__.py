"""Values: the frozen types everything else passes around (rules, events, decisions, runs, outcomes).

Pure: the standard library's computational modules and pydantic (for the user-edited rule schema) only.
The import-linter contract in ``pyproject.toml`` forbids service clients, drivers, HTTP and ML libraries.
"""
