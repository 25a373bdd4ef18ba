"""The daemon at work: its parts, each with one job, wired by the reactor (see README, "Architecture")."""
