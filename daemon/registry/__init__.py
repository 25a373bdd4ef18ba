"""The MLflow side: reading metrics and champions (and, later, moving the champion alias)."""
