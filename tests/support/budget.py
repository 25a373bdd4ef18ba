"""How many examples a property test draws: its full count in the suite, a tenth under `make mutation`.

Mutation testing runs every test that covers a mutated function once per mutant (1,735 mutants); the cron
oracle's and the fuzzers' hundreds of examples per run made `make mutation` take 19 minutes. Under
``TEST_MUTATION=1`` (set by `make mutation`) each draws a tenth (at least 10): the exact-value tests kill the
mutants, the properties still run. The suite itself always draws the full count.
"""

from __future__ import annotations

import os


def examples(full: int) -> int:
    """``full`` in the suite; a tenth of it (at least 10) under mutation testing."""
    return max(10, full // 10) if os.environ.get("TEST_MUTATION") == "1" else full
