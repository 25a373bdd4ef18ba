"""Pure logic: matching, debounce, deciding, the promotion gate and drift statistics.

Every function here is purely computational, with no side effects: it takes state, rules and ``now`` and
returns a value. It never reads the clock, the disk or the network (the import-linter contract in
``pyproject.toml`` enforces the imports half of that promise).
"""
