"""`pipeline doctor`: (being written)."""
