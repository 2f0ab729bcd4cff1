"""Scorers: rate explanations against held-out examples, and the metrics they report."""
