"""coders stage."""
