"""Event sources: everything that says "data changed" or "time to look" becomes a journaled event."""
