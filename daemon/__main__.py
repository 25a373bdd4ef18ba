"""``python -m daemon`` is ``retrain``."""

from daemon.cli import main

main()
