"""Batch APIs: requests collected into JSONL jobs, submitted, polled and resumed."""
