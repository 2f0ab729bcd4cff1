"""subject stage."""
