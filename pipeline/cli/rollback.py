"""`pipeline rollback`: (being written)."""
