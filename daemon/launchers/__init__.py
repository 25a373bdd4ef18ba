"""Launchers: where runs execute. ``base`` is the contract; ``local`` runs ``kfp.local`` in child processes."""
