"""`pipeline render`: (being written)."""
